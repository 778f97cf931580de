"""Photometry decode cost: columnar batch messages vs one Avro record per observation.

Run by hand: ``python bench/bench_codec.py``. Both paths decode the same observations in this
process; the baseline is the record-per-message design the Foundation issue warns about.
"""

from __future__ import annotations

import io
import time
from typing import Any

import fastavro
import numpy as np

from consumer.edge.photometry import Observations, PhotometryBatch, PhotometryDecoder, encode_batch

RECORD_SCHEMA = fastavro.parse_schema(
    {
        "type": "record",
        "name": "Observation",
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
)


def observations(n: int) -> Observations:
    rng = np.random.default_rng(0)
    return Observations.from_columns(
        star_id=rng.integers(0, 10**9, n),
        field=np.full(n, 2),
        chip=np.zeros(n),
        ra=np.full(n, 268.0),
        dec=np.full(n, -29.0),
        x=rng.uniform(0, 9000, n),
        y=rng.uniform(0, 9000, n),
        hjd=2_460_000 + rng.uniform(0, 200, n),
        band=np.zeros(n),
        flux=rng.normal(0, 100, n),
        flux_err=rng.uniform(1, 10, n),
        sky=rng.uniform(100, 1000, n),
        fwhm=rng.uniform(1, 3, n),
        airmass=rng.uniform(1, 2, n),
        psf_quality=rng.uniform(0, 100, n),
    )


def best_of(repeats: int, fn: Any) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    n_total = 200_000
    obs = observations(n_total)
    decoder = PhotometryDecoder()
    print(f"{'design':44s} {'us/obs':>8s} {'obs/s/core':>12s}")
    baseline_records = []
    for i in range(20_000):
        buffer = io.BytesIO()
        record = {
            "star_id": int(obs.star_id[i]),
            "site": 0,
            "hjd": float(obs.hjd[i]),
            "flux": float(obs.flux[i]),
            "flux_err": float(obs.flux_err[i]),
            "sky": float(obs.sky[i]),
            "fwhm": float(obs.fwhm[i]),
            "airmass": float(obs.airmass[i]),
            "psf_quality": float(obs.psf_quality[i]),
        }
        fastavro.schemaless_writer(buffer, RECORD_SCHEMA, record)
        baseline_records.append(buffer.getvalue())

    def decode_records() -> None:
        for payload in baseline_records:
            fastavro.schemaless_reader(io.BytesIO(payload), RECORD_SCHEMA, None)

    per_record = best_of(3, decode_records) / len(baseline_records)
    label = "one 9-field Avro record per message"
    print(f"{label:44s} {per_record * 1e6:8.2f} {1 / per_record:12,.0f}")
    for batch_size in (100, 1000, 2000, 10000):
        messages = [
            encode_batch(PhotometryBatch("CTIO", obs.take(slice(s, s + batch_size))))
            for s in range(0, n_total, batch_size)
        ]

        def decode_batches(messages: list[bytes] = messages) -> None:
            for message in messages:
                decoder.decode(message)

        per_obs = best_of(5, decode_batches) / n_total
        label = f"columnar batch of {batch_size} (15 columns)"
        print(f"{label:44s} {per_obs * 1e6:8.3f} {1 / per_obs:12,.0f}  x{per_record / per_obs:.0f}")


if __name__ == "__main__":
    main()
