"""The flow's t0 on the events the daemon alerts on: the LensNet simulator's, not its own.

The flow is trained and evaluated on :mod:`model.binary.simulate`'s static binary events; the
alerts it runs on come from :mod:`model.simulate`'s seasons (point-lens and planetary events,
other priors). This checks the parameter an observer schedules by, t0, there: for every event
of an event-rich season (:func:`model.evaluation.event_model.event_rich`), the posterior of the
light curve up to ``lead`` days before the true peak, and whether its 16th-84th percentile
interval holds the true t0.

Usage: ``python -m model.binary.on_lensnet_events --seed 2001 --stars 120 --leads 5 0``
(validation calendar; a few CPU minutes).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from model.binary.inputs import LightCurveInputError
from model.binary.posterior import posterior
from model.evaluation.event_model import event_rich
from model.simulate import simulate_star


def t0_rows(
    seed: int, n_stars: int, leads: Sequence[float], samples: int = 1000
) -> list[tuple[str, float, float, float, float, float]]:
    """(subclass, lead, true t0, median, p16, p84) per event and lead (days)."""
    config = event_rich(seed, n_stars)
    rows = []
    for index in tqdm(range(n_stars), desc="events", mininterval=5.0):
        star, label = simulate_star(config, index)
        if label.label != "YES":
            continue
        t0 = float(label.params["t0"])
        for lead in leads:
            try:
                post = posterior(star, samples, as_of=t0 - lead, seed=index)
            except LightCurveInputError:
                continue
            s = post.summaries["t0"]
            rows.append((label.subclass, float(lead), t0, s.median, s.p16, s.p84))
    return rows


def table(rows: Sequence[tuple[str, float, float, float, float, float]]) -> str:
    """Markdown: per subclass and lead, events, t0 inside the 68 % interval, median errors."""
    lines = [
        "| subclass | lead (d) | events | true t0 in the 68 % interval | median \\|error\\| (d) "
        "| median half-width (d) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for subclass in sorted({r[0] for r in rows}):
        for lead in sorted({r[1] for r in rows}, reverse=True):
            a = np.array([r[2:] for r in rows if r[0] == subclass and r[1] == lead])
            if len(a) == 0:
                continue
            inside = np.mean((a[:, 0] >= a[:, 2]) & (a[:, 0] <= a[:, 3]))
            error = np.median(np.abs(a[:, 1] - a[:, 0]))
            width = np.median(a[:, 3] - a[:, 2]) / 2.0
            lines.append(
                f"| {subclass} | {lead:g} | {len(a)} | {inside:.0%} | {error:.2f} | {width:.2f} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2001)
    parser.add_argument("--stars", type=int, default=120)
    parser.add_argument("--leads", type=float, nargs="+", default=[5.0, 0.0])
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = t0_rows(args.seed, args.stars, args.leads, args.samples)
    print(table(rows))
    if not rows:
        print("no events")
    elif not all(math.isfinite(r[3]) for r in rows):
        print("warning: non-finite medians")


if __name__ == "__main__":
    main()
