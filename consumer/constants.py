"""Domain constants shared by every stage: sites, bands, and where the shipped files live."""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

#: KMTNet sites in the order every per-site array, branch and topic uses.
SITES: Final = ("CTIO", "SAAO", "SSO")
Site = Literal["CTIO", "SAAO", "SSO"]

#: Photometric bands; KMTNet observes mostly in I with occasional V frames.
BANDS: Final = ("I", "V")

#: Fields observed at high cadence (KMTNet BLG01-03 and their overlaps BLG41-43): the default
#: of ``TriggerSettings.high_cadence_fields``, and what offline evaluation assumes.
HIGH_CADENCE_FIELDS: Final = (1, 2, 3, 41, 42, 43)

#: HJD offset used by KMTNet archive files written as HJD - 2450000.
HJD_OFFSET: Final = 2_450_000.0


def schema_dir() -> Path:
    """Folder holding the Avro ``.avsc`` files.

    Inside an installed wheel the schemas travel as ``consumer/_schemas``; in a source checkout
    (editable install, tests) they are the top-level ``schemas/`` folder.
    """
    packaged = Path(__file__).resolve().parent / "_schemas"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "schemas"
