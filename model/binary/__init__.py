"""Amortised binary-lens posterior (issue 16, item 2): simulator, inputs, flow, training,
evaluation and the ``posterior`` API. Offline; not wired into the daemon."""
