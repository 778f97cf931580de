"""Per-partition state and its ownership.

The star store (:mod:`~consumer.state.store`: recent photometry and per-star annotations of one
partition, checkpointed with the offsets it covers), its compiled kernels, which partitions
this process owns and how they are restored, rewound and checkpointed
(:mod:`~consumer.state.partitions`), and which stars already alerted
(:mod:`~consumer.state.alerted`).
"""
