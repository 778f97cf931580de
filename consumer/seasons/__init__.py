"""Archived seasons on disk and replaying them into the photometry topics.

:mod:`~consumer.seasons.archive` reads and writes KMTNet's per-star, per-site light-curve files
(and the simulator's season folders); :mod:`~consumer.seasons.replay` sends a season through
the per-site topics in observation order, resumably.
"""
