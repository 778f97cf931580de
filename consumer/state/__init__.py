"""Per-partition state and its ownership.

The star store of one partition (:mod:`~consumer.state.store`) is three parts: the observation
records (:mod:`~consumer.state.arena`, quantised by :mod:`~consumer.state.encoding`, moved by
:mod:`~consumer.state.kernels`), the per-star table with its typed annotations
(:mod:`~consumer.state.stars`) and the checkpoint file (:mod:`~consumer.state.checkpoint`).
Around it: which partitions this process owns and how they are opened, restored, rewound and
checkpointed (:mod:`~consumer.state.partitions`), and which stars already alerted
(:mod:`~consumer.state.alerted`).
"""
