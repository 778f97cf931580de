"""The evaluation report: markdown tables and PNG plots of :func:`model.evaluation.run.evaluate`.

Every number is the mean over the evaluated models (training seeds) with its standard
deviation and the number of seeds; the targets of the Generalise issue are checked in the first
table so that a miss is visible at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.evaluation.cadence import LEADS, MAG_BINS, SEASON_BINS, SNR_BINS

#: (description, metric path in the report's metrics, comparison, target).
TARGETS: tuple[tuple[str, tuple[str, ...], str, float], ...] = (
    (
        "events with t0 >= 20 d after the start alerted before the peak @ 0.45",
        ("test_cadence", "summary", "0.45", "event_recall_before_peak_t0_ge_20"),
        ">=",
        0.95,
    ),
    (
        "same @ 0.955",
        ("test_cadence", "summary", "0.955", "event_recall_before_peak_t0_ge_20"),
        ">=",
        0.85,
    ),
    (
        "events with t0 10-40 d after the start alerted before the peak @ 0.45",
        ("test_cadence", "summary", "0.45", "event_recall_before_peak_early"),
        ">=",
        0.80,
    ),
    (
        "same @ 0.45, among events the trigger fires on before the peak (LensNet's share)",
        ("test_cadence", "summary", "0.45", "triggered_before_peak_recall"),
        ">=",
        0.95,
    ),
    (
        "same @ 0.955, among events the trigger fires on before the peak",
        ("test_cadence", "summary", "0.955", "triggered_before_peak_recall"),
        ">=",
        0.85,
    ),
    (
        "events with t0 10-40 d after the start, among those triggered before the peak, @ 0.45",
        ("test_cadence", "summary", "0.45", "triggered_before_peak_recall_early"),
        ">=",
        0.80,
    ),
    (
        "non-event stars alerting at least once in the season @ 0.955",
        ("test_cadence", "summary", "0.955", "alerted_per_class", "NO"),
        "<=",
        0.01,
    ),
    (
        "non-event stars alerting at least once @ 0.45",
        ("test_cadence", "summary", "0.45", "alerted_per_class", "NO"),
        "<=",
        0.05,
    ),
    (
        "binary accuracy (paper metric), full columns",
        ("test_full", "summary", "binary_balanced", "mean_accuracy"),
        ">=",
        0.95,
    ),
    (
        "binary accuracy, magnitude-only inputs",
        ("test_magnitude_only", "summary", "binary_balanced", "mean_accuracy"),
        ">=",
        0.95,
    ),
    (
        "3-class accuracy, full columns",
        ("test_full", "summary", "three_class", "mean_accuracy"),
        ">=",
        0.88,
    ),
    (
        "3-class accuracy, magnitude-only inputs",
        ("test_magnitude_only", "summary", "three_class", "mean_accuracy"),
        ">=",
        0.88,
    ),
    (
        "triggered events scoring >= 0.45 at every call from the first trigger to peak + 20 d",
        ("test_cadence", "summary", "events_stay_events"),
        ">=",
        0.90,
    ),
    (
        "site scores <= 0.1 on constant stars",
        ("test_cadence", "summary", "constant_site_scores_le_0.1"),
        ">=",
        0.99,
    ),
)


def lookup(metrics: dict[str, Any], path: Sequence[str]) -> Any:
    value: Any = metrics
    for key in path:
        value = value[key]
    return value


def fmt(entry: dict[str, Any] | float, percent: bool = True) -> str:
    """``mean ± sd`` of a summarised entry (or a plain number)."""
    if isinstance(entry, dict):
        mean, sd = entry["mean"], entry["sd"]
    else:
        mean, sd = float(entry), math.nan
    if not math.isfinite(mean):
        return "n/a"
    if percent:
        return f"{100 * mean:.1f} %" + (f" ± {100 * sd:.1f}" if math.isfinite(sd) else "")
    return f"{mean:.3f}" + (f" ± {sd:.3f}" if math.isfinite(sd) else "")


def targets_table(metrics: dict[str, Any]) -> list[str]:
    lines = ["| criterion | target | measured (mean ± sd) | met |", "|---|---|---|---|"]
    for text, path, op, target in TARGETS:
        entry = lookup(metrics, path)
        mean = entry["mean"]
        met = mean >= target if op == ">=" else mean <= target
        lines.append(
            f"| {text} | {op} {100 * target:g} % | {fmt(entry)} | "
            f"{'yes' if met else f'**no** (by {100 * abs(mean - target):.1f} points)'} |"
        )
    return lines


def cadence_tables(cadence: dict[str, Any], subclasses: bool = True) -> list[str]:
    summary = cadence["summary"]
    lines = [
        "| class / subclass | stars | alerted at least once @ 0.45 | @ 0.955 |",
        "|---|---:|---|---|",
    ]
    for name in ("YES", "MAYBE", "NO"):
        lines.append(
            f"| **{name}** | | {fmt(summary['0.45']['alerted_per_class'][name])} | "
            f"{fmt(summary['0.955']['alerted_per_class'][name])} |"
        )
    for name, n in cadence["n_per_subclass"].items() if subclasses else ():
        lines.append(
            f"| {name} | {n} | {fmt(summary['0.45']['alerted_per_subclass'][name])} | "
            f"{fmt(summary['0.955']['alerted_per_subclass'][name])} |"
        )
    lines += [
        "",
        "Event recall (alerted by t0 - lead), events peaking >= 20 d after their first "
        f"observation ({cadence['n_events_t0_ge_20']} events):",
        "",
        "| lead (days before peak) | @ 0.45 | @ 0.955 |",
        "|---|---|---|",
    ]
    for lead in LEADS:
        key = f"{lead:g}"
        lines.append(
            f"| {key} | {fmt(summary['0.45']['event_recall_by_lead'][key])} | "
            f"{fmt(summary['0.955']['event_recall_by_lead'][key])} |"
        )
    lines += [
        "",
        "Alerted before the peak, by the peak's time after the star's first observation (days). "
        "The trigger column is the AlertFinder alone (a LensNet call before the peak), the last "
        "column LensNet's recall among the events it was given before the peak:",
        "",
        "| t0 - start | events | trigger before the peak | alerted @ 0.45 | @ 0.955 "
        "| @ 0.45 given the trigger |",
        "|---|---:|---|---|---|---|",
    ]
    for a, b in SEASON_BINS:
        key = f"{a:g}-{b:g}"
        lines.append(
            f"| {key} | {cadence['n_events_by_season_time'][key]} | "
            f"{fmt(cadence['trigger_before_peak_by_season_time'][key])} | "
            f"{fmt(summary['0.45']['event_recall_before_peak_by_season_time'][key])} | "
            f"{fmt(summary['0.955']['event_recall_before_peak_by_season_time'][key])} | "
            f"{fmt(summary['0.45']['triggered_before_peak_recall_by_season_time'][key])} |"
        )
    lines += [
        "",
        "Alerted before the peak, by baseline I magnitude (all peaks in the season):",
        "",
        "| I | trigger before the peak | alerted @ 0.45 | @ 0.955 |",
        "|---|---|---|---|",
    ]
    for a, b in MAG_BINS:
        key = f"{a:g}-{b:g}"
        lines.append(
            f"| {key} | {fmt(cadence['trigger_before_peak_by_mag'][key])} | "
            f"{fmt(summary['0.45']['event_recall_before_peak_by_mag'][key])} | "
            f"{fmt(summary['0.955']['event_recall_before_peak_by_mag'][key])} |"
        )
    if "trigger_before_peak_by_snr" in cadence:
        lines += [
            "",
            "Alerted before the peak, by the event's peak S/N: its largest noiseless excess at "
            "the star's observation times in typical errors of one point (peaks >= 20 d into "
            "the season; the simulator lowers u0 until the true peak reaches 8, so the lowest "
            "bin holds events barely above the noise even at their peak):",
            "",
            "| peak S/N | events | trigger before the peak | alerted @ 0.45 | @ 0.955 |",
            "|---|---:|---|---|---|",
        ]
        for a, b in SNR_BINS:
            key = f"{a:g}-{b:g}"
            lines.append(
                f"| {key} | {cadence['n_events_by_snr'][key]} | "
                f"{fmt(cadence['trigger_before_peak_by_snr'][key])} | "
                f"{fmt(summary['0.45']['event_recall_before_peak_by_snr'][key])} | "
                f"{fmt(summary['0.955']['event_recall_before_peak_by_snr'][key])} |"
            )
    lines += [
        "",
        f"The trigger itself fires before the peak for "
        f"{fmt(cadence['trigger_before_peak_t0_ge_20'])} of the events peaking >= 20 d into the "
        f"season; among those, LensNet alerts before the peak for "
        f"{fmt(summary['0.45']['triggered_before_peak_recall'])} @ 0.45 and "
        f"{fmt(summary['0.955']['triggered_before_peak_recall'])} @ 0.955. "
        f"Triggered events scoring >= 0.45 at every call to peak + 20 d: "
        f"{fmt(summary['events_stay_events'])} (share of such calls "
        f"{fmt(summary['event_calls_at_least_045'])}).",
    ]
    return lines


def instance_table(name: str, entry: dict[str, Any]) -> list[str]:
    summary = entry["summary"]
    return [
        f"| {name} | {entry['n_instances']} | {fmt(summary['binary_balanced']['mean_accuracy'])} "
        f"| {fmt(summary['binary_high_purity']['mean_accuracy'])} | "
        f"{fmt(summary['three_class']['mean_accuracy'])} | "
        f"{fmt(summary['binary_balanced']['purity_yes_maybe'])} |"
    ]


def plots(metrics: dict[str, Any], out_dir: Path) -> list[str]:
    """Write the PNGs; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = metrics["test_cadence"]["summary"]
    names: list[str] = []

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for threshold, colour in (("0.45", "tab:green"), ("0.955", "tab:blue")):
        recall = test[threshold]["event_recall_by_lead"]
        means = [recall[f"{lead:g}"]["mean"] for lead in LEADS]
        sds = [recall[f"{lead:g}"]["sd"] for lead in LEADS]
        ax.errorbar(
            [-lead for lead in LEADS],
            means,
            yerr=np.nan_to_num(sds),
            marker="o",
            color=colour,
            capsize=3,
            label=f"alert threshold {threshold}",
        )
    ax.set(
        xlabel="days relative to the peak (t0)",
        ylabel="events alerted by then",
        ylim=(0, 1.02),
        title="Event recall by lead time (test seasons)",
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out_dir / "recall_vs_lead.png", dpi=110)
    plt.close(fig)
    names.append("recall_vs_lead.png")

    subclasses = list(metrics["test_cadence"]["n_per_subclass"])
    fig, ax = plt.subplots(figsize=(11, 4.2))
    positions = np.arange(len(subclasses))
    for offset, threshold, colour in ((-0.2, "0.45", "tab:orange"), (0.2, "0.955", "tab:red")):
        values = [test[threshold]["alerted_per_subclass"][s]["mean"] for s in subclasses]
        errors = [
            np.nan_to_num(test[threshold]["alerted_per_subclass"][s]["sd"]) for s in subclasses
        ]
        ax.bar(
            positions + offset,
            values,
            width=0.4,
            yerr=errors,
            color=colour,
            label=f"@ {threshold}",
            capsize=2,
        )
    ax.axhline(0.03, color="black", linestyle="--", linewidth=0.8, label="3 % (NO target @ 0.955)")
    ax.set_xticks(positions, subclasses, rotation=60, ha="right")
    ax.set(ylabel="stars alerted at least once", title="Daemon alerts per subclass (test seasons)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "alerted_per_subclass.png", dpi=110)
    plt.close(fig)
    names.append("alerted_per_subclass.png")

    lead = np.asarray(test["0.45"]["lead_days"])
    lead_high = np.asarray(test["0.955"]["lead_days"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    bins = [2.0 * i for i in range(31)]
    ax.hist(
        np.clip(lead, 0, 60),
        bins=bins,
        alpha=0.6,
        label=f"@ 0.45 (median {np.median(lead) if len(lead) else float('nan'):.1f} d)",
    )
    ax.hist(
        np.clip(lead_high, 0, 60),
        bins=bins,
        alpha=0.6,
        label=f"@ 0.955 (median {np.median(lead_high) if len(lead_high) else float('nan'):.1f} d)",
    )
    ax.set(
        xlabel="days from the alert to the peak (clipped at 60)",
        ylabel="events (all seeds)",
        title="Lead time of alerts before the peak",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "lead_time.png", dpi=110)
    plt.close(fig)
    names.append("lead_time.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, key, bins_, title in (
        (
            axes[0],
            "event_recall_before_peak_by_season_time",
            SEASON_BINS,
            "peak's days after the first observation",
        ),
        (axes[1], "event_recall_before_peak_by_mag", MAG_BINS, "baseline I magnitude"),
    ):
        labels = [f"{a:g}-{b:g}" for a, b in bins_]
        trigger_key = "trigger_before_peak_by_" + key.split("_by_")[1]
        trigger = [metrics["test_cadence"][trigger_key][label] for label in labels]
        ax.plot(labels, trigger, "--", color="grey", marker=".", label="trigger fires (ceiling)")
        for threshold, colour in (("0.45", "tab:green"), ("0.955", "tab:blue")):
            values = [test[threshold][key][label]["mean"] for label in labels]
            ax.plot(labels, values, marker="o", color=colour, label=f"alerted @ {threshold}")
        ax.set(xlabel=title, ylim=(0, 1.02))
        ax.legend(loc="lower right")
    axes[0].set_ylabel("events alerted before the peak")
    fig.suptitle("Event recall before the peak (test seasons)")
    fig.tight_layout()
    fig.savefig(out_dir / "recall_by_season_and_mag.png", dpi=110)
    plt.close(fig)
    names.append("recall_by_season_and_mag.png")
    return names
