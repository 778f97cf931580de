"""The light-curve classes of LensNet (YES, MAYBE, NO) and their subclasses, by name.

YES are real microlensing events (:mod:`model.simulation.events`), MAYBE image-level artefacts
that pass a light-curve review but not an image review (:mod:`model.simulation.artefacts`), NO
ordinary AlertFinder false positives (:mod:`model.simulation.variables`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np

from consumer.exceptions import ConfigError
from model.simulation import artefacts, events, variables
from model.simulation.behaviour import Behaviour, SeasonWindow

Draw = Callable[[np.random.Generator, SeasonWindow], Behaviour]

#: subclass -> (class, draw function)
SUBCLASSES: Final[dict[str, tuple[str, Draw]]] = {
    "pspl": ("YES", events.draw_pspl),
    "binary": ("YES", events.draw_binary),
    "planetary": ("YES", events.draw_planetary),
    "bleed_trail": ("MAYBE", artefacts.draw_bleed_trail),
    "diffraction_spike": ("MAYBE", artefacts.draw_diffraction_spike),
    "ghost": ("MAYBE", artefacts.draw_ghost),
    "mira": ("NO", variables.draw_mira),
    "semiregular": ("NO", variables.draw_semiregular),
    "osarg": ("NO", variables.draw_osarg),
    "rr_lyrae": ("NO", variables.draw_rr_lyrae),
    "cepheid": ("NO", variables.draw_cepheid),
    "eclipsing_binary": ("NO", variables.draw_eclipsing_binary),
    "contact_binary": ("NO", variables.draw_contact_binary),
    "ellipsoidal": ("NO", variables.draw_ellipsoidal),
    "dwarf_nova": ("NO", variables.draw_dwarf_nova),
    "flare": ("NO", variables.draw_flare),
    "irregular_variable": ("NO", variables.draw_irregular_variable),
    "slow_trend": ("NO", variables.draw_slow_trend),
    "constant": ("NO", variables.draw_constant),
    "noise_run": ("NO", variables.draw_noise_run),
    "airmass_trend": ("NO", variables.draw_airmass_trend),
    "sky_trend": ("NO", variables.draw_sky_trend),
    "single_site_drift": ("NO", variables.draw_single_site_drift),
}


def draw_behaviour(
    rng: np.random.Generator, label: str, subclass: str, window: SeasonWindow
) -> Behaviour:
    """Draw one star's behaviour of ``subclass`` (which must belong to ``label``)."""
    entry = SUBCLASSES.get(subclass)
    if entry is None or entry[0] != label:
        raise ConfigError(f"subclass {subclass!r} is not a known subclass of {label}")
    return entry[1](rng, window)
