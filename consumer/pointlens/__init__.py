"""The event model's science: the point-lens fit of an alerted star and its anomaly test.

:mod:`~consumer.pointlens.fit` fits ``(t0, u0, tE)`` and a source and blend flux per dataset,
with errors, and derives the predicted peak; :mod:`~consumer.pointlens.anomaly` finds a run of
points that the point lens cannot explain; :mod:`~consumer.pointlens.kernels` holds the compiled
kernels behind the fit. Pure numpy and numba: no Kafka, no logging, no state.
"""
