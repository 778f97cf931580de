"""What the per-record baselines of ``bench/bench_ingest.py`` share: record schema, rising test.

The naive consumer (in ``bench_ingest.py``) and the Quix Streams app (``quix_ingest.py``, run
with Quix Streams' own virtual environment) read one Avro record per observation and run the
same numpy rising test, defined here. This module imports only numpy and the standard library so
that both interpreters can load it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: One observation per Kafka message, the design the Foundation issue warns about (9 fields).
RECORD_SCHEMA: Final[dict[str, Any]] = {
    "type": "record",
    "name": "Observation",
    "namespace": "bench.ingest",
    "fields": [
        {"name": "star_id", "type": "long"},
        {"name": "site", "type": "int"},
        {"name": "hjd", "type": "double"},
        {"name": "flux", "type": "double"},
        {"name": "flux_err", "type": "double"},
        {"name": "sky", "type": "float"},
        {"name": "fwhm", "type": "float"},
        {"name": "airmass", "type": "float"},
        {"name": "psf_quality", "type": "float"},
    ],
}

#: Columns a per-record baseline buffers for each observation (the star store keeps the same,
#: quantised, plus the field tag).
BUFFERED: Final = ("hjd", "flux", "flux_err", "sky", "fwhm", "airmass", "psf_quality")

#: Points kept per star and site, as ``consumer.state.store.StoreConfig.capacity_per_site``.
CAPACITY_PER_SITE: Final = 1500

#: The rising test of ``HIGH_CADENCE``: k = n = 5 points, 3 sigma.
LAST_N: Final = 5
N_SIGMA: Final = 3.0


def rising(sites: Iterable[tuple[FloatArray, FloatArray, FloatArray]]) -> bool:
    """Whether the last ``LAST_N`` points of all sites merged in time are all high.

    A point is high when ``flux - median(flux of its site) >= N_SIGMA * flux_err``; each site's
    median is over every point it holds. Fewer than ``LAST_N`` points never pass. This is the
    all-sites combination of AlertFinder's rising test (``consumer.alertfinder.api``, steps 1-2),
    which also tries every other combination of sites.

    Parameters
    ----------
    sites : per site ``(t, flux, flux_err)``, each (N_site,) in time order; empty sites allowed.
    """
    times: list[FloatArray] = []
    high: list[npt.NDArray[np.bool_]] = []
    for t, flux, flux_err in sites:
        if len(flux) == 0:
            continue
        median = np.median(flux)
        times.append(t[-LAST_N:])
        high.append(flux[-LAST_N:] - median >= N_SIGMA * flux_err[-LAST_N:])
    if sum(len(t) for t in times) < LAST_N:
        return False
    latest = np.argsort(np.concatenate(times), kind="stable")[-LAST_N:]
    return bool(np.concatenate(high)[latest].all())
