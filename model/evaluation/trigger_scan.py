"""The AlertFinder alone over whole simulated seasons, for several rules: which stars each rule
would hand to LensNet, and when. For choosing the trigger a model is trained on before any
training run (run it on validation seasons; the test seasons play no part).

Every star goes through the daemon's schedule (:func:`model.timeline.timelines`: the trigger
at every closed window with new data, a call when it fires, rescored after ``rescore_days``)
once per rule, from one simulation of the star. Per rule:

- events whose trigger fires before their peak, for peaks >= 20 d after the star's first
  observation and for peaks 10-40 d in (the Generalise issue's two event sets; LensNet can only
  alert where the trigger fired), by peak S/N too;
- stars of every other class the trigger fires on at least once in the season (what LensNet
  must reject), per subclass;
- LensNet calls a season per star (the scoring load).

``lensnet trigger-scan`` writes ``trigger-scan.md``, ``trigger-scan.json`` and a plot.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from consumer.alertfinder.api import TriggerInputError, TriggerRule
from model.dataset import SeasonSet
from model.simulate import SimulationConfig, simulate_star
from model.timeline import Cadence, timelines

F64 = npt.NDArray[np.float64]

#: Stars per worker task.
TASK_STARS: Final = 100
#: Peak S/N bins (as in :mod:`model.evaluation.cadence`).
SNR_BINS: Final = ((0.0, 10.0), (10.0, 20.0), (20.0, 50.0), (50.0, math.inf))


#: What ``lensnet trigger-scan`` compares by default: the shipped rules (Kim et al. 2018), then
#: looser ones, the last three on averaged points (the last with the baseline from each
#: dataset's oldest half), as ``name=high;low`` with each rule
#: ``k/n@n_sigma:dchi2_min[~average][^part]``.
DEFAULT_RULES: Final = (
    "shipped=5/5@3:250;10/10@3:400",
    "4of5=4/5@3:250;8/10@3:400",
    "dchi2-100=5/5@3:100;10/10@3:150",
    "loose=4/5@2.5:150;6/10@2.5:200",
    "looser=3/5@2.5:100;5/10@2.5:150",
    "loosest=3/5@2:50;4/10@2:75",
    "avg-4of5=4/5@3:75~6;8/10@3:100~4",
    "loose-avg=4/5@2.5:100~4;6/10@2.5:100~3",
    "loose-avg-half=4/5@2.5:100~4^2;6/10@2.5:100~3^2",
)


def parse_rules(texts: Sequence[str], base: Cadence) -> dict[str, Cadence]:
    """``name=high;low`` texts (rules ``k/n@n_sigma:dchi2_min[~average][^part]``) as cadences
    built on ``base``; ValueError (a :class:`~consumer.alertfinder.api.TriggerInputError`)
    naming the text that is not one."""
    out: dict[str, Cadence] = {}
    for text in texts:
        name, _, rules = text.partition("=")
        high, _, low = rules.partition(";")
        if not name.strip() or not low:
            raise TriggerInputError(f"{text!r}: expected name=high;low, e.g. {DEFAULT_RULES[0]}")
        out[name.strip()] = base.with_rules(TriggerRule.parse(high), TriggerRule.parse(low))
    return out


@dataclass(frozen=True, eq=False)
class ScanStars:
    """Per star (N,) its truth and, per rule (R, N), the first trigger and the number of calls.

    ``t_peak``: ``t0`` for events, the label's peak otherwise (NaN without one); ``first`` and
    ``last``: first and last I-band observation (HJD); ``first_trigger``: NaN where the rule
    never fires."""

    label: npt.NDArray[np.str_]
    subclass: npt.NDArray[np.str_]
    t_peak: F64
    first: F64
    last: F64
    peak_snr: F64
    first_trigger: F64
    calls: npt.NDArray[np.int64]


def _task(args: tuple[SimulationConfig, list[int], list[Cadence]]) -> dict[str, list[Any]]:
    """Worker: simulate the stars once, schedule them under every rule."""
    config, indices, cadences = args
    simulated = [simulate_star(config, index) for index in indices]
    stars = [star for star, _ in simulated]
    out: dict[str, list[Any]] = {
        "label": [],
        "subclass": [],
        "t_peak": [],
        "first": [],
        "last": [],
        "peak_snr": [],
    }
    for star, label in simulated:
        hjd = np.concatenate([d.hjd[d.band == 0] for d in star.datasets] + [np.zeros(0)])
        out["label"].append(label.label)
        out["subclass"].append(label.subclass)
        out["t_peak"].append(float(label.params["t0"] if label.label == "YES" else label.t_peak))
        out["first"].append(float(hjd.min()) if len(hjd) else math.nan)
        out["last"].append(float(hjd.max()) if len(hjd) else math.nan)
        out["peak_snr"].append(float(label.params.get("peak_snr", math.nan)))
    out["first_trigger"] = []
    out["calls"] = []
    for cadence in cadences:
        lines = timelines(stars, cadence)
        out["first_trigger"].append([line.first_trigger for line in lines])
        out["calls"].append([len(line.scored) for line in lines])
    return out


def _tasks(
    seasons: SeasonSet, cadences: list[Cadence]
) -> Iterator[tuple[SimulationConfig, list[int], list[Cadence]]]:
    for config in seasons.configs():
        for start in range(0, config.n_stars, TASK_STARS):
            yield config, list(range(start, min(start + TASK_STARS, config.n_stars))), cadences


def scan_stars(
    seasons: SeasonSet,
    cadences: Sequence[Cadence],
    *,
    workers: int = 1,
    progress: bool = False,
) -> ScanStars:
    """Every star of ``seasons`` scheduled under each of ``cadences`` (``workers`` processes)."""
    tasks = list(_tasks(seasons, list(cadences)))
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    results = pool.imap(_task, tasks) if pool is not None else map(_task, tasks)
    parts: list[dict[str, list[Any]]] = []
    try:
        for part in tqdm(
            results,
            total=len(tasks),
            desc=f"trigger scan ({seasons.name})",
            disable=None if progress else True,
        ):
            parts.append(part)
    finally:
        if pool is not None:
            pool.close()
            pool.join()

    def joined(key: str) -> list[Any]:
        return [value for part in parts for value in part[key]]

    def per_rule(key: str) -> list[list[Any]]:
        return [[value for part in parts for value in part[key][r]] for r in range(len(cadences))]

    return ScanStars(
        label=np.array(joined("label")),
        subclass=np.array(joined("subclass")),
        t_peak=np.array(joined("t_peak"), dtype=np.float64),
        first=np.array(joined("first"), dtype=np.float64),
        last=np.array(joined("last"), dtype=np.float64),
        peak_snr=np.array(joined("peak_snr"), dtype=np.float64),
        first_trigger=np.array(per_rule("first_trigger"), dtype=np.float64).reshape(
            len(cadences), -1
        ),
        calls=np.array(per_rule("calls"), dtype=np.int64).reshape(len(cadences), -1),
    )


def _share(mask: npt.NDArray[np.bool_]) -> float:
    return float(mask.mean()) if len(mask) else math.nan


def scan_metrics(stars: ScanStars, names: Sequence[str]) -> dict[str, Any]:
    """Per rule (by name): the shares described in the module docstring, as fractions."""
    since_start = stars.t_peak - stars.first
    events = (stars.label == "YES") & (stars.t_peak >= stars.first) & (stars.t_peak <= stars.last)
    late = events & (since_start >= 20)
    early = events & (since_start >= 10) & (since_start < 40)
    others = stars.label != "YES"
    rules: dict[str, Any] = {}
    for r, name in enumerate(names):
        fired = np.isfinite(stars.first_trigger[r])
        before = fired & (stars.first_trigger[r] <= stars.t_peak)
        rules[name] = {
            "trigger_before_peak_t0_ge_20": _share(before[late]),
            "trigger_before_peak_early": _share(before[early]),
            "trigger_before_peak_by_snr": {
                f"{a:g}-{b:g}": _share(before[late & (stars.peak_snr >= a) & (stars.peak_snr < b)])
                for a, b in SNR_BINS
            },
            "triggered_per_class": {
                name_: _share(fired[stars.label == name_]) for name_ in ("YES", "MAYBE", "NO")
            },
            "triggered_per_subclass": {
                sub: _share(fired[stars.subclass == sub])
                for sub in sorted(set(stars.subclass[others].tolist()))
            },
            "calls_per_star": float(stars.calls[r].mean()) if len(stars.label) else math.nan,
            "calls_per_non_event_star": float(stars.calls[r][others].mean())
            if others.any()
            else math.nan,
        }
    return {
        "n_stars": len(stars.label),
        "n_events_t0_ge_20": int(late.sum()),
        "n_events_early": int(early.sum()),
        "rules": rules,
    }


def markdown(result: Mapping[str, Any], seasons: SeasonSet) -> str:
    """The scan's report."""
    rules = result["rules"]
    described = result["described"]
    lines = [
        "# Trigger scan",
        "",
        f"Written by `lensnet trigger-scan` on seasons {list(seasons.seeds)} "
        f"({seasons.n_stars} stars each, {result['n_stars']} in all): the AlertFinder alone, "
        "through the daemon's schedule, once per rule (k/n@n_sigma:dchi2_min[~average][^part], "
        "high cadence then low cadence). LensNet can alert only on the stars and at the times the "
        "trigger hands it; a model serves the rule it was trained on "
        "(`lensnet train --high-cadence-rule`).",
        "",
        f"| rule | high; low | events t0 >= 20 d triggered before the peak "
        f"({result['n_events_t0_ge_20']}) | events t0 10-40 d ({result['n_events_early']}) "
        "| NO stars triggered | MAYBE triggered | calls a star |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, entry in rules.items():
        per_class = entry["triggered_per_class"]
        lines.append(
            f"| {name} | {described[name]} | {_pct(entry['trigger_before_peak_t0_ge_20'])} | "
            f"{_pct(entry['trigger_before_peak_early'])} | {_pct(per_class['NO'])} | "
            f"{_pct(per_class['MAYBE'])} | {entry['calls_per_star']:.2f} |"
        )
    bins = [f"{a:g}-{b:g}" for a, b in SNR_BINS]
    lines += _table(
        "Events (t0 >= 20 d) triggered before the peak, by peak S/N:",
        ["rule", *bins],
        [
            [name, *(_pct(e["trigger_before_peak_by_snr"][b]) for b in bins)]
            for name, e in rules.items()
        ],
    )
    subclasses = sorted({s for entry in rules.values() for s in entry["triggered_per_subclass"]})
    lines += _table(
        "Stars other than events triggered at least once in the season, by subclass:",
        ["subclass", *rules],
        [
            [sub, *(_pct(e["triggered_per_subclass"].get(sub, math.nan)) for e in rules.values())]
            for sub in subclasses
        ],
    )
    lines += ["", "![trigger-scan.png](trigger-scan.png)", ""]
    return "\n".join(lines)


def _table(caption: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A captioned markdown table, first column left-aligned, the others right."""
    return [
        "",
        caption,
        "",
        "| " + " | ".join(columns) + " |",
        "|---|" + "---:|" * (len(columns) - 1),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.1f} %"


def plot(result: Mapping[str, Any], path: Path) -> None:
    """Event recall before the peak against the share of non-event stars triggered, a point
    per rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.8))
    for name, entry in result["rules"].items():
        x = 100 * entry["triggered_per_class"]["NO"]
        for key, marker in (
            ("trigger_before_peak_t0_ge_20", "o"),
            ("trigger_before_peak_early", "s"),
        ):
            axis.scatter(x, 100 * entry[key], marker=marker, color="C0" if marker == "o" else "C1")
        axis.annotate(name, (x, 100 * entry["trigger_before_peak_t0_ge_20"]), fontsize=8)
    axis.scatter([], [], marker="o", color="C0", label="events, peak >= 20 d into the season")
    axis.scatter([], [], marker="s", color="C1", label="events, peak 10-40 d in")
    axis.set_xlabel("non-event stars triggered at least once (%)")
    axis.set_ylabel("events triggered before the peak (%)")
    axis.set_title("The AlertFinder alone, per rule")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_scan(
    seasons: SeasonSet,
    cadences: Mapping[str, Cadence],
    out_dir: Path,
    *,
    workers: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Scan, then write ``trigger-scan.md``, ``.json`` and ``.png`` into ``out_dir``."""
    names = list(cadences)
    stars = scan_stars(seasons, [cadences[n] for n in names], workers=workers, progress=progress)
    result = scan_metrics(stars, names)
    result["described"] = {
        name: f"{cadence.high_cadence}; {cadence.low_cadence}" for name, cadence in cadences.items()
    }
    result["seasons"] = [list(seasons.seeds), seasons.n_stars]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "trigger-scan.json").write_text(json.dumps(result, indent=1))
    plot(result, out_dir / "trigger-scan.png")
    (out_dir / "trigger-scan.md").write_text(markdown(result, seasons))
    return result
