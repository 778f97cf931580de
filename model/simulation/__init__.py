"""Internals of the season simulator; the public entry points live in :mod:`model.simulate`.

``config`` (what to simulate), ``sites`` (observatories, fields, cadence tiers), ``schedule``
(frames and observing conditions per site and field), ``photometry`` (measuring a star in a
frame), ``noise``, and the signals: ``events`` and ``lens`` (microlensing), ``artefacts``
(image-level look-alikes), ``variables`` (ordinary false positives), ``behaviour`` and
``classes`` (drawing a star's class and signal).
"""
