"""LensNet alert broker: KMTNet photometry streams in, microlensing alerts out.

The package holds the daemon and one small module per pipeline stage; the numeric model lives
in the sibling package :mod:`model`.
"""

__version__ = "0.1.0"
