"""Figures and plots of the event model's evaluation (:mod:`model.evaluation.event_model`).

``python -m model.evaluation.event_report RUN.json [RUN.json ...] --out DIR`` writes
``DIR/metrics.json`` and the plots; the report itself (``report.md``) is written by hand from
them, as LensNet's is.

Definitions:

- *Alerted before the peak*: the alert (first LensNet call at or above 0.45) before the true
  ``t0``. Peak error = fitted ``t0`` minus the true one; *within 1 sigma* when the truth lies
  inside the published interval ``[t0_lower, t0_upper]``. Reported at the alert, and at every
  later window before the peak, by lead time (true ``t0`` minus the newest point fitted).
- *Planetary deviation*: observations where the binary-lens signal differs from the point lens
  of the same ``(t0, u0, tE, fs)`` by at least 3 actual errors (also reported with 5);
  *detectable after the alert* with at least 3 such observations at or after the alert and
  before the model stopped following the star. *Flagged during the deviation*: an anomaly
  found at a window whose newest observation lies between the first such observation after
  the alert and one day after the last one.
- *False anomaly*: a point-lens event flagged at any window while it was followed.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

LEAD_BINS: Final = ((0.0, 1.0), (1.0, 3.0), (3.0, 7.0), (7.0, 15.0), (15.0, 30.0), (30.0, 1e9))
AFTER_DEVIATION_DAYS: Final = 1.0


def _windows(event: dict[str, Any], columns: Sequence[str]) -> dict[str, F64]:
    table = np.asarray(event["windows"], dtype=np.float64).reshape(-1, len(columns))
    return {name: table[:, i] for i, name in enumerate(columns)}


def _fraction(mask: npt.NDArray[np.bool_]) -> float:
    return float(np.mean(mask)) if len(mask) else math.nan


def peak_metrics(events: Sequence[dict[str, Any]], columns: Sequence[str]) -> dict[str, Any]:
    """Peak time and magnitude at the alert and by lead time, for events alerted before t0."""
    at_alert: list[tuple[str, float, float, float, float, float]] = []
    by_window: list[tuple[float, float, float]] = []
    for event in events:
        if not event["alert"] < event["t0"] or not event["windows"]:
            continue
        w = _windows(event, columns)
        lead = event["t0"] - w["as_of"]
        error = w["t0"] - event["t0"]
        # The 1-sigma interval is asymmetric: "sigma" is the side the truth lies on.
        sigma_side = np.where(error > 0, w["t0"] - w["t0_lower"], w["t0_upper"] - w["t0"])
        at_alert.append(
            (
                event["subclass"],
                float(lead[0]),
                float(error[0]),
                float(sigma_side[0]),
                float(w["peak_mag"][0] - event["peak_mag_true"]),
                float(w["peak_mag_err"][0]),
            )
        )
        before = lead > 0
        by_window += list(zip(lead[before], error[before], sigma_side[before], strict=True))
    out: dict[str, Any] = {}
    for name, subclasses in (("all", ("pspl", "binary", "planetary")), ("pspl", ("pspl",))):
        rows = np.array([r[1:] for r in at_alert if r[0] in subclasses], dtype=np.float64)
        rows = rows.reshape(-1, 5)
        lead, error, sigma, mag_error, mag_sigma = rows.T
        finite = np.isfinite(sigma)
        out[name] = {
            "events": len(rows),
            "peak_within_1sigma": _fraction(np.abs(error) <= np.where(finite, sigma, np.inf)),
            "peak_within_2sigma": _fraction(np.abs(error) <= 2 * np.where(finite, sigma, np.inf)),
            "sigma_not_finite": _fraction(~finite),
            "median_abs_error_days": float(np.median(np.abs(error))) if len(rows) else math.nan,
            "median_sigma_days": float(np.nanmedian(sigma)) if len(rows) else math.nan,
            "median_lead_days": float(np.median(lead)) if len(rows) else math.nan,
            "peak_mag_within_1sigma": _fraction(
                np.abs(mag_error) <= np.where(np.isfinite(mag_sigma), mag_sigma, np.inf)
            ),
            "median_abs_peak_mag_error": float(np.nanmedian(np.abs(mag_error)))
            if len(rows)
            else math.nan,
        }
    rows = np.array(by_window, dtype=np.float64).reshape(-1, 3)
    lead, error, sigma = rows.T
    bins = []
    for low, high in LEAD_BINS:
        keep = (lead >= low) & (lead < high)
        bins.append(
            {
                "lead_days": [low, high],
                "windows": int(keep.sum()),
                "within_1sigma": _fraction(
                    np.abs(error[keep]) <= np.where(np.isfinite(sigma[keep]), sigma[keep], np.inf)
                ),
                "median_abs_error_days": float(np.median(np.abs(error[keep])))
                if keep.any()
                else math.nan,
                "median_sigma_days": float(np.nanmedian(sigma[keep])) if keep.any() else math.nan,
            }
        )
    out["by_lead_time"] = bins
    out["_at_alert"] = at_alert
    out["_by_window"] = rows
    return out


def anomaly_metrics(
    events: Sequence[dict[str, Any]],
    columns: Sequence[str],
    flag: str = "anomaly_start",
    deviation_sigma: float = 3.0,
    against_fit: bool = False,
) -> dict[str, Any]:
    """Planetary deviations flagged in time, and false flags on point-lens events.
    ``against_fit``: the deviation is measured against the best-fitting point lens of the
    data through it (``fit_deviation_times``), not the point lens of the true parameters."""
    planetary = {"alerted": 0, "detectable": 0, "flagged_during": 0, "flagged_ever": 0}
    no_deviation_flagged = [0, 0]
    pspl = {"alerted": 0, "flagged": 0, "windows": 0}
    binary = {"alerted": 0, "flagged": 0}
    delays: list[float] = []
    for event in events:
        if not math.isfinite(event["alert"]) or not event["windows"]:
            continue
        w = _windows(event, columns)
        flagged = np.isfinite(w[flag])
        if event["subclass"] == "pspl":
            pspl["alerted"] += 1
            pspl["windows"] += len(flagged)
            pspl["flagged"] += int(flagged.any())
            continue
        if event["subclass"] == "binary":
            binary["alerted"] += 1
            binary["flagged"] += int(flagged.any())
            continue
        planetary["alerted"] += 1
        planetary["flagged_ever"] += int(flagged.any())
        if against_fit:
            times = np.asarray(event.get("fit_deviation_times", []), dtype=np.float64)
            sizes = np.full(len(times), np.inf)
        else:
            times = np.asarray(event.get("deviation_times", []), dtype=np.float64)
            sizes = np.asarray(event.get("deviation_sigma", np.full(len(times), np.inf)))
        times = times[sizes >= deviation_sigma]
        followed_until = float(w["as_of"][-1])
        after = times[(times >= event["alert"]) & (times <= followed_until)]
        if len(after) < 3:
            no_deviation_flagged[0] += 1
            no_deviation_flagged[1] += int(flagged.any())
            continue
        planetary["detectable"] += 1
        during = (
            flagged & (w["as_of"] >= after[0]) & (w["as_of"] <= after[-1] + AFTER_DEVIATION_DAYS)
        )
        if during.any():
            planetary["flagged_during"] += 1
            delays.append(float(w["as_of"][np.flatnonzero(during)[0]] - after[0]))
    return {
        "planetary": planetary
        | {
            "recall_during_deviation": planetary["flagged_during"] / planetary["detectable"]
            if planetary["detectable"]
            else math.nan,
            "median_delay_days": float(np.median(delays)) if delays else math.nan,
            "without_detectable_deviation": no_deviation_flagged[0],
            "without_detectable_deviation_flagged": no_deviation_flagged[1],
        },
        "pspl": pspl
        | {"false_flag_rate": pspl["flagged"] / pspl["alerted"] if pspl["alerted"] else math.nan},
        "binary": binary,
    }


def plots(peak: dict[str, Any], out: Path) -> list[Path]:
    """Peak-time error against lead time, and coverage by lead time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    lead, error, sigma = peak["_by_window"].T
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    ax.scatter(lead, np.abs(error), s=2, alpha=0.15, label="|t0 fit - t0 true| (every window)")
    centres, medians, sigmas = [], [], []
    for low, high in LEAD_BINS[:-1]:
        keep = (lead >= low) & (lead < high)
        if keep.sum() > 5:
            centres.append(np.sqrt(max(low, 0.3) * high))
            medians.append(np.median(np.abs(error[keep])))
            sigmas.append(np.nanmedian(sigma[keep]))
    ax.plot(centres, medians, "o-", color="C3", label="median |error|")
    ax.plot(centres, sigmas, "s--", color="C2", label="median fitted sigma(t0)")
    ax.set(xscale="log", yscale="log", xlabel="lead time: true peak - newest point (days)",
           ylabel="days", title="Predicted peak time before the peak")  # fmt: skip
    ax.legend(fontsize=8)
    ax = axes[1]
    bins = peak["by_lead_time"]
    labels = [f"{b['lead_days'][0]:g}-{b['lead_days'][1]:g}" if b["lead_days"][1] < 1e8
              else f">{b['lead_days'][0]:g}" for b in bins]  # fmt: skip
    ax.bar(labels, [b["within_1sigma"] for b in bins], color="C0")
    ax.axhline(0.68, color="k", ls="--", lw=1, label="68 %")
    for i, b in enumerate(bins):
        ax.text(i, 0.02, str(b["windows"]), ha="center", fontsize=8, color="w")
    ax.set(ylim=(0, 1), xlabel="lead time (days)", ylabel="fraction within 1 sigma",
           title="Peak time within its 1 sigma, every window before the peak")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    path = out / "peak_time_vs_lead.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    rows = np.array([r[1:] for r in peak["_at_alert"]], dtype=np.float64).reshape(-1, 5)
    fig, ax = plt.subplots(figsize=(6, 4))
    z = rows[:, 1] / rows[:, 2]
    z = z[np.isfinite(z)]
    grid = np.linspace(-5, 5, 201)
    ax.hist(np.clip(z, -5, 5), bins=40, range=(-5, 5), density=True, alpha=0.7,
            label=f"(t0 fit - t0 true) / sigma at the alert, {len(z)} events")  # fmt: skip
    ax.plot(grid, np.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi), "k-", label="N(0, 1)")
    ax.set(xlabel="normalised peak-time error (clipped at ±5)", ylabel="density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "peak_time_pulls.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--flag",
        default="anomaly_start",
        help="the column of the anomaly rule to report in full (default: the run's default "
        "rule; e.g. anomaly_2.5s_3_3_3d_1.5 for a run made before that rule became the default)",
    )
    args = parser.parse_args(argv)
    events: list[dict[str, Any]] = []
    columns: list[str] = []
    for path in args.runs:
        run = json.loads(path.read_text())
        columns = run["columns"]
        events += run["events"]
    args.out.mkdir(parents=True, exist_ok=True)
    peak = peak_metrics(events, columns)
    anomaly = anomaly_metrics(events, columns, args.flag)
    anomaly_5sigma = anomaly_metrics(events, columns, args.flag, deviation_sigma=5.0)
    anomaly_fit = anomaly_metrics(events, columns, args.flag, against_fit=True)
    alternatives = {
        name: anomaly_metrics(events, columns, name)
        for name in columns
        if name.startswith("anomaly_") and name[8].isdigit()
    }
    plots(peak, args.out)
    metrics = {
        "runs": [str(p) for p in args.runs],
        "events": len(events),
        "alerted": sum(1 for e in events if math.isfinite(e["alert"])),
        "peak": {k: v for k, v in peak.items() if not k.startswith("_")},
        "anomaly_flag": args.flag,
        "anomaly": anomaly,
        "anomaly_deviation_5sigma": anomaly_5sigma,
        "anomaly_deviation_against_fit": anomaly_fit,
        "anomaly_rules": {
            name: {
                "recall": m["planetary"]["recall_during_deviation"],
                "delay": m["planetary"]["median_delay_days"],
                "pspl_false": m["pspl"]["false_flag_rate"],
            }
            for name, m in alternatives.items()
        },
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
