"""The ``lensnet`` command: builds the settings once and hands them to the subcommand.

Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage, 3 Kafka unreachable or
refusing, 130 interrupted. Errors print one line to stderr naming what is wrong.
"""

from __future__ import annotations

import enum
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from consumer import __version__
from consumer.cli_opinions import novelty_app, second_opinion_app
from consumer.exceptions import ConfigError, LensNetError
from consumer.logs import configure_logging
from consumer.settings import Settings, env_name, load_settings

DEFAULT_SECRETS_DIR = Path("/var/run/secrets/lensnet")
#: Built training/test arrays (simulated stars, crops) are cached here between runs.
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "lensnet"
_CACHE_OPTION = typer.Option(
    envvar="LENSNET_CACHE_DIR", help="Cache of built training and test arrays."
)


def _flag_type_rich(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """typer (0.2x) lists a flag's type in the rich help (``--until-end <bool>``), which reads as
    if it took a value: a flag shows no type, like click's own help."""
    if self.is_flag:
        return None
    return _option_type_rich(self, ctx)


_option_type_rich = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = _flag_type_rich  # type: ignore[method-assign]

app = typer.Typer(
    name="lensnet",
    help="Real-time microlensing alert broker: KMTNet photometry in, LensNet alerts out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(help="Create and check the broker's topics.", no_args_is_help=True)
alerts_app = typer.Typer(
    help="Follow-up client: tail, plot and count alerts.", no_args_is_help=True
)
app.add_typer(topics_app, name="topics")
app.add_typer(alerts_app, name="alerts")
events_app = typer.Typer(
    help="Follow alerted events as they unfold: refits, anomalies.", no_args_is_help=True
)
app.add_typer(events_app, name="events")
app.add_typer(novelty_app, name="novelty")
app.add_typer(second_opinion_app, name="second-opinion")


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


@app.callback()
def _main(
    ctx: typer.Context,
    secrets_dir: Annotated[
        Path,
        typer.Option(help="Folder of secret files (Kubernetes Secret volume), read if present."),
    ] = DEFAULT_SECRETS_DIR,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Settings come from LENSNET_* environment variables (nested names joined by __)."""
    if version:
        typer.echo(__version__)
        raise typer.Exit(0)
    settings = load_settings(secrets_dir)
    # The daemon's log is its output (stdout); every other command's output is its result, so
    # its log goes to stderr and stays quiet.
    daemon = ctx.invoked_subcommand == "run"
    configure_logging(settings.log, stream=sys.stdout if daemon else sys.stderr, quiet=not daemon)
    if ctx.invoked_subcommand in _KAFKA_COMMANDS:
        settings = _with_local_broker(settings)
    ctx.obj = settings


#: Subcommands that talk to Kafka.
_KAFKA_COMMANDS = ("run", "replay", "alerts", "topics")


def local_broker_dir() -> Path:
    """Folder of the broker ``make kafka-start`` / ``make demo`` run (deploy/local-kafka)."""
    return Path(
        os.environ.get("LOCAL_KAFKA_DIR")
        or Path(os.environ.get("TMPDIR") or "/tmp") / "lensnet-kafka"
    )


def _with_local_broker(settings: Settings) -> Settings:
    """Without a bootstrap setting, the local broker's address when one runs (one stderr line
    says so); the default ``127.0.0.1:9092`` otherwise."""
    if "bootstrap_servers" in settings.kafka.model_fields_set:
        return settings
    folder = local_broker_dir()
    try:
        bootstrap = (folder / "bootstrap").read_text().strip()
        # A single broker keeps its pid beside `bootstrap`; a cluster, in node-1/.
        pid_file = folder / "kafka.pid"
        if not pid_file.exists():
            pid_file = folder / "node-1" / "kafka.pid"
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except PermissionError:
        pass  # alive, another user's
    except (OSError, ValueError):
        return settings
    if not bootstrap:
        return settings
    kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})
    typer.echo(
        f"lensnet: Kafka at {bootstrap}, the local broker ({folder / 'bootstrap'}); "
        f"{env_name(('kafka', 'bootstrap_servers'))} chooses another",
        err=True,
    )
    return settings.model_copy(update={"kafka": kafka})


def _reach(settings: Settings) -> None:
    """Fail fast, with one line naming the address and setting, when Kafka does not answer."""
    from consumer.edge.reach import reach

    reach(settings.kafka)


class AlertFormat(enum.Enum):
    """How ``lensnet run`` frames the alerts it publishes."""

    SINGLE_OBJECT = "single-object"
    CONFLUENT = "confluent"


@app.command()
def run(
    ctx: typer.Context,
    until_end: Annotated[
        bool,
        typer.Option(
            "--until-end",
            help="Exit 0 once the input is drained (replays, demos); default: run forever.",
        ),
    ] = False,
    http_port: Annotated[
        int | None,
        typer.Option(help="Port of /healthz, /readyz, /metrics (0: any free port, -1: off)."),
    ] = None,
    alert_format: Annotated[
        AlertFormat | None,
        typer.Option(
            help="Alerts as Avro single-object messages, or in the Confluent wire format "
            "(schema registered at LENSNET_SCHEMA_REGISTRY__URL). Default: "
            "LENSNET_DAEMON__ALERT_FORMAT, else single-object."
        ),
    ] = None,
) -> None:
    """Run the broker daemon: consume photometry, trigger, classify, publish alerts."""
    from consumer.daemon import Daemon

    settings = _settings(ctx)
    update: dict[str, object] = {}
    if until_end:
        update["stop_at_end"] = True
    if http_port is not None:
        update["http_port"] = http_port
    if alert_format is not None:
        update["alert_format"] = alert_format.value
    if update:
        daemon = settings.daemon.model_copy(update=update)
        settings = settings.model_copy(update={"daemon": daemon})
        if daemon.alert_format == "confluent" and settings.schema_registry.url is None:
            raise typer.BadParameter(
                f"--alert-format confluent needs {env_name(('schema_registry', 'url'))}"
            )
    raise typer.Exit(Daemon(settings).run())


@app.command()
def replay(
    ctx: typer.Context,
    season_dir: Annotated[Path, typer.Argument(help="Season folder: one sub-folder per star.")],
    speed: Annotated[
        float | None,
        typer.Option(
            help="Survey seconds per wall second (e.g. 3600); default: as fast as possible."
        ),
    ] = None,
    rate: Annotated[
        float | None, typer.Option(help="At most this many observations per second.")
    ] = None,
    start_hjd: Annotated[float | None, typer.Option(help="Replay from this HJD on.")] = None,
    stop_hjd: Annotated[
        float | None, typer.Option(help="Replay up to (excluding) this HJD.")
    ] = None,
    create_topics: Annotated[
        bool, typer.Option(help="Create missing topics before replaying.")
    ] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Replay an archived or simulated season through the photometry topics, in time order.

    Re-running after an interruption resumes where the log ends: nothing is sent twice.
    """
    from consumer.edge.kafka import make_admin
    from consumer.edge.topics import ensure_topics, required_topics
    from consumer.seasons.archive import ArchiveError
    from consumer.seasons.replay import ReplayOptions
    from consumer.seasons.replay import replay as run_replay

    settings = _settings(ctx)
    if not season_dir.is_dir():  # before the broker: the more useful message
        raise ArchiveError(f"{season_dir}: not a directory")
    _reach(settings)
    if create_topics:
        ensure_topics(make_admin(settings.kafka), required_topics(settings.topics))
    options = ReplayOptions(
        speed=speed, max_rate=rate, start_hjd=start_hjd, stop_hjd=stop_hjd, progress=progress
    )
    summary = run_replay(settings, season_dir, options)
    for line in summary.lines():
        typer.echo(line)


@app.command()
def simulate(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="Folder to write the season into (created).")],
    stars: Annotated[int, typer.Option(min=1, help="Number of stars.")] = 2000,
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives the same season.")
    ] = 1,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Simulate a labelled KMTNet-like season of multi-site photometry (native format)."""
    from model.simulate import SimulationConfig, write_season

    summary = write_season(SimulationConfig(n_stars=stars, seed=seed), out, progress=progress)
    typer.echo(
        f"wrote {summary.n_stars} stars ({summary.n_files} files, "
        f"{summary.n_observations:,} observations) to {summary.out_dir} "
        f"in {summary.seconds:.1f} s; labels in {summary.out_dir / 'labels.csv'}"
    )
    for label, subclasses in summary.counts.items():
        parts = ", ".join(f"{name} {count}" for name, count in subclasses.items())
        typer.echo(f"  {label:5s} {sum(subclasses.values()):5d}  ({parts})")


class EpochMetric(enum.Enum):
    """Which validation figure picks the epoch ``lensnet train`` keeps."""

    LOSS = "loss"
    ACCURACY = "accuracy"


_RULE_HELP = (
    "AlertFinder rule of {which} fields the training calls are cut at, "
    "k/n@n_sigma:dchi2_min[~average][^part] (default {default}); recorded in the card: run the "
    "daemon with the same rule."
)


def _cadence(high: str | None, low: str | None) -> Any:
    """The daemon's default schedule with the given trigger rules
    (``k/n@n_sigma:dchi2_min[~average][^part]``)."""
    from consumer.alertfinder.api import TriggerInputError, TriggerRule
    from model.timeline import DEFAULT_CADENCE

    try:
        return DEFAULT_CADENCE.with_rules(
            None if high is None else TriggerRule.parse(high),
            None if low is None else TriggerRule.parse(low),
        )
    except TriggerInputError as error:
        raise typer.BadParameter(str(error)) from error


def _seeds(value: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError as error:
        raise typer.BadParameter(f"{value!r}: expected comma-separated integers") from error
    if not seeds:
        raise typer.BadParameter("at least one season seed is needed")
    return seeds


_TRAIN_SEEDS = ",".join(str(s) for s in range(1001, 1009))


@app.command()
def train(
    ctx: typer.Context,
    seed: Annotated[int, typer.Option(help="Seed of the weights and the shuffling.")] = 1,
    train_seasons: Annotated[
        str, typer.Option(help="Seeds of the simulated training seasons (comma-separated).")
    ] = _TRAIN_SEEDS,
    validation_seasons: Annotated[
        str, typer.Option(help="Seeds of the validation seasons (epoch choice only).")
    ] = "2001,2002",
    stars_per_season: Annotated[
        int, typer.Option(min=10, help="Stars per training season.")
    ] = 3000,
    validation_stars: Annotated[
        int, typer.Option(min=10, help="Stars per validation season.")
    ] = 2000,
    epochs: Annotated[int, typer.Option(min=1, help="At most this many epochs.")] = 40,
    crops: Annotated[int, typer.Option(min=1, help="At most this many instances per star.")] = 4,
    negative_crops: Annotated[
        int, typer.Option(min=1, help="At most this many per non-event star that keeps triggering.")
    ] = 4,
    init: Annotated[
        Path | None, typer.Option(help="Fine-tune: start from this artifact's weights.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Instances per step.")] = 512,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="Peak AdamW step size.")] = 4e-3,
    hidden: Annotated[int, typer.Option(min=1, help="LSTM state size per site.")] = 32,
    dropout: Annotated[float, typer.Option(min=0.0, max=0.9, help="Dropout in the trunk.")] = 0.3,
    weight_decay: Annotated[
        float, typer.Option(min=0.0, help="Decoupled weight decay (AdamW); 0: Adam.")
    ] = 0.01,
    site_loss_weight: Annotated[
        float, typer.Option(min=0.0, help="Weight of the per-site score loss.")
    ] = 0.5,
    cosine: Annotated[
        bool, typer.Option(help="Anneal the learning rate to 0 over --epochs (half cosine).")
    ] = True,
    patience: Annotated[
        int, typer.Option(min=1, help="Stop after this many epochs without progress.")
    ] = 20,
    select: Annotated[
        EpochMetric,
        typer.Option(help="Keep the epoch of the best validation loss or binary accuracy."),
    ] = EpochMetric.ACCURACY,
    threads: Annotated[
        int, typer.Option(min=1, help="torch threads (results depend on it on a CPU).")
    ] = 1,
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto (cuda when present).")] = "auto",
    workers: Annotated[
        int, typer.Option(min=1, help="Processes building the instances (first run only).")
    ] = 1,
    max_minutes: Annotated[
        float | None,
        typer.Option(help="Training time budget: the epochs that fit, timed on the first."),
    ] = None,
    high_cadence_rule: Annotated[
        str | None, typer.Option(help=_RULE_HELP.format(which="high-cadence", default="5/5@3:250"))
    ] = None,
    low_cadence_rule: Annotated[
        str | None, typer.Option(help=_RULE_HELP.format(which="low-cadence", default="10/10@3:400"))
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Folder for lensnet-<version>.pt and model_card.json.")
    ] = Path("model/artifacts"),
    cache: Annotated[Path, _CACHE_OPTION] = DEFAULT_CACHE_DIR,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train LensNet on simulated seasons and export the TorchScript artifact."""
    from model.dataset import CropConfig, SeasonSet
    from model.export import model_card, save
    from model.lensnet import LensNetConfig
    from model.train import TrainConfig
    from model.train import train as train_model

    config = TrainConfig(
        seed=seed,
        train_seasons=SeasonSet("train", _seeds(train_seasons), stars_per_season),
        validation_seasons=SeasonSet("validation", _seeds(validation_seasons), validation_stars),
        crop=CropConfig(crops=crops, negative_crops=negative_crops),
        model=LensNetConfig(hidden=hidden, dropout=dropout),
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        site_loss_weight=site_loss_weight,
        cosine=cosine,
        patience=patience,
        select="accuracy" if select is EpochMetric.ACCURACY else "loss",
        threads=threads,
        device=device,
        workers=workers,
        max_minutes=max_minutes,
        init=None if init is None else str(init),
        cadence=_cadence(high_cadence_rule, low_cadence_rule),
    )
    model, history = train_model(config, cache=cache, progress=progress)
    path = save(model, model_card(config, history, model), out)
    best = history.best_epoch
    typer.echo(
        f"wrote {path} (best epoch {best + 1}: val loss {history.val_loss[best]:.4f}, "
        f"binary {history.val_binary_accuracy[best]:.4f}, "
        f"3-class {history.val_class_accuracy[best]:.4f}; {history.seconds[-1]:.0f} s on "
        f"{history.device}, {history.n_train} training instances)"
    )


@app.command("trigger-scan")
def trigger_scan(
    ctx: typer.Context,
    rule: Annotated[
        list[str] | None,
        typer.Option(
            help="name=HIGH;LOW with each rule k/n@n_sigma:dchi2_min[~average][^part] (high- then "
            "low-cadence fields), e.g. 'loose=4/5@2.5:150;6/10@2.5:200'; repeat. Default: the "
            "shipped rules and eight looser ones (three on averaged points)."
        ),
    ] = None,
    seasons: Annotated[
        str, typer.Option(help="Seeds of the simulated seasons (validation: choose on these).")
    ] = "2001,2002",
    stars: Annotated[int, typer.Option(min=10, help="Stars per season.")] = 2000,
    workers: Annotated[int, typer.Option(min=1, help="Processes.")] = 1,
    out: Annotated[Path, typer.Option(help="Folder for trigger-scan.md, .json and .png.")] = Path(
        "runs/trigger-scan"
    ),
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """The AlertFinder alone over whole simulated seasons, once per rule: events triggered
    before their peak, other stars triggered, LensNet calls (to choose a training trigger)."""
    from consumer.alertfinder.api import TriggerInputError
    from model.dataset import SeasonSet
    from model.evaluation.trigger_scan import DEFAULT_RULES, parse_rules, run_scan
    from model.timeline import DEFAULT_CADENCE

    try:
        cadences = parse_rules(rule or DEFAULT_RULES, DEFAULT_CADENCE)
    except TriggerInputError as error:
        raise typer.BadParameter(str(error), param_hint="--rule") from error
    season_set = SeasonSet("scan", _seeds(seasons), stars)
    result = run_scan(season_set, cadences, out, workers=workers, progress=progress)
    for name, entry in result["rules"].items():
        typer.echo(
            f"{name} ({result['described'][name]}): events before the peak "
            f"{100 * entry['trigger_before_peak_t0_ge_20']:.1f} % (t0 >= 20 d), "
            f"{100 * entry['trigger_before_peak_early']:.1f} % (t0 10-40 d); non-events "
            f"triggered {100 * entry['triggered_per_class']['NO']:.1f} %; "
            f"{entry['calls_per_star']:.2f} calls a star"
        )
    typer.echo(f"report: {out / 'trigger-scan.md'}")


@app.command()
def evaluate(
    ctx: typer.Context,
    artifact: Annotated[
        list[Path] | None,
        typer.Option(
            help="TorchScript artifact (repeat for several seeds); default: the shipped one."
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Folder for report.md, metrics.json and the PNG plots.")
    ] = Path("model/artifacts/evaluation"),
    workers: Annotated[int, typer.Option(min=1, help="Processes preparing the stars.")] = 1,
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto (cuda when present).")] = "auto",
    threads: Annotated[int, typer.Option(min=1, help="torch threads for inference.")] = 1,
    baseline: Annotated[bool, typer.Option(help="Also fit and report the linear baseline.")] = True,
    cache: Annotated[Path, _CACHE_OPTION] = DEFAULT_CACHE_DIR,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    validation_calls: Annotated[
        Path | None,
        typer.Option(
            help="calls-validation.npz of an earlier run with the same artifacts in the same "
            "order: reused instead of rescoring the validation seasons."
        ),
    ] = None,
) -> None:
    """Evaluate artifacts (seeds) on validation and test seasons; write the report."""
    import torch

    from model.evaluation.cadence import load_calls
    from model.evaluation.run import evaluate as run_evaluation
    from model.export import shipped_artifact

    torch.set_num_threads(threads)
    paths = artifact or [shipped_artifact()]
    metrics = run_evaluation(
        paths,
        out,
        cache=cache,
        workers=workers,
        device=device,
        progress=progress,
        baseline=baseline,
        validation_calls=load_calls(validation_calls) if validation_calls else None,
    )
    from model.evaluation.report import TARGETS, fmt, lookup

    for text, path, op, target in TARGETS:
        typer.echo(f"{text}: {fmt(lookup(metrics, path))} (target {op} {100 * target:g} %)")
    typer.echo(f"chosen on validation: {paths[metrics['chosen']]}")
    typer.echo(f"report: {out / 'report.md'}")


@app.command()
def classify(
    ctx: typer.Context,
    season_dir: Annotated[Path, typer.Argument(help="Season folder: one sub-folder per star.")],
    as_of: Annotated[
        float | None, typer.Option(help="Use only observations up to this full HJD.")
    ] = None,
    artifact: Annotated[
        Path | None, typer.Option(help="TorchScript artifact (default: the shipped one).")
    ] = None,
    low_cadence: Annotated[
        bool | None,
        typer.Option(
            help="Force the low- or high-cadence AlertFinder rule (those the artifact was "
            "trained on: its card); default: by each star's fields, as the daemon does."
        ),
    ] = None,
    opinions: Annotated[
        bool, typer.Option(help="Also the novelty score and the second opinion (shipped).")
    ] = True,
) -> None:
    """Classify light curves from files with the shipped LensNet artifact (JSON lines)."""
    import json
    import math

    from model.classify import classify_season
    from model.export import load_artifact
    from model.second_opinion import OpinionModels
    from model.timeline import card_cadence

    module, card = load_artifact(artifact)
    cadence = card_cadence(card)
    rule = None
    if low_cadence is not None:
        rule = cadence.low_cadence if low_cadence else cadence.high_cadence
    as_of_hjd = math.inf if as_of is None else as_of
    extra = OpinionModels() if opinions else None
    records = classify_season(
        module, season_dir, as_of=as_of_hjd, rule=rule, cadence=cadence, opinions=extra
    )
    for record in records:
        typer.echo(json.dumps(record))


@app.command()
def posterior(
    star_dir: Annotated[
        Path, typer.Argument(help="An archived star folder: one file per site-field dataset.")
    ],
    samples: Annotated[int, typer.Option(min=1, help="Posterior draws.")] = 1000,
    as_of: Annotated[
        float | None, typer.Option(help="Use only observations up to this full HJD.")
    ] = None,
    artifact: Annotated[
        Path | None, typer.Option(help="Binary-flow artifact (default: the shipped one).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the draws.")] = 0,
) -> None:
    """Binary-lens posterior of a star's light curve (amortised flow; offline, not the daemon's):
    median and 16th/84th percentiles per parameter and the close/wide modes of s."""
    import math

    from consumer.seasons.archive import read_star

    try:
        from model.binary.export import load, shipped_artifact
        from model.binary.posterior import posterior as binary_posterior
    except ImportError as error:  # an install without zuko (a dependency since alert schema 1.3)
        raise ConfigError(
            f"lensnet posterior needs the binary flow's dependency ({error.name} is missing): "
            f"pip install {error.name}"
        ) from error

    path = artifact or shipped_artifact()
    result = binary_posterior(
        read_star(star_dir),
        samples,
        as_of=math.inf if as_of is None else as_of,
        model=load(path),
        seed=seed,
    )
    typer.echo(
        f"star {star_dir.name}: last point HJD {result.t_last:.5f}, {samples} samples, {path.name}"
    )
    typer.echo(f"{'parameter':10s} {'median':>14s} {'16%':>14s} {'84%':>14s}")
    for name, summary in result.summaries.items():
        typer.echo(f"{name:10s} {summary.median:14.4f} {summary.p16:14.4f} {summary.p84:14.4f}")
    modes = ", ".join(f"{m.label} {m.weight:.0%} (s = {m.s:.3f})" for m in result.s_modes)
    typer.echo(f"s modes: {modes}")


_FROM = typer.Option("--from", help="earliest, latest, committed, or an ISO time (UTC).")
_MIN_SCORE = typer.Option(help="Only alerts with p_event >= this.")
_LABEL = typer.Option(help="Only alerts of this 3-class label (YES, MAYBE, NO).")
_SITE = typer.Option(help="Only alerts whose trigger used this site (repeatable).")
_FIELD = typer.Option(help="Only alerts of this KMTNet field.")
_STAR = typer.Option(help="Only stars whose id matches this shell pattern, e.g. '41*'.")
_GROUP = typer.Option(help="Consumer group; acknowledges what it handled, resumes after it.")
_UNUSUAL = typer.Option(
    "--unusual", help="Only alerts the novelty network flags as unlike its training seasons."
)
_MIN_AGREEMENT = typer.Option(
    min=0.0,
    max=1.0,
    help="Only alerts whose second opinion agrees with LensNet at least this much "
    "(1 - |p_event difference|).",
)


def _start(value: str) -> Any:
    from datetime import UTC, datetime

    if value in ("earliest", "latest", "committed"):
        return value
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        raise typer.BadParameter(f"--from {value!r}: not a keyword or an ISO time") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _alert_filter(
    min_score: float,
    label: str | None,
    site: list[str] | None,
    field: int | None,
    star: str | None,
    unusual: bool = False,
    min_agreement: float | None = None,
) -> Any:
    from consumer.constants import SITES
    from consumer.edge.subscribe import AlertFilter

    sites = tuple(s.upper() for s in site or [])
    unknown = [s for s in sites if s not in SITES]
    if unknown:
        raise typer.BadParameter(f"--site {unknown[0]}: expected one of {', '.join(SITES)}")
    return AlertFilter(
        min_score=min_score,
        label=label,
        sites=sites,
        field=field,
        star=star,
        unusual=unusual,
        min_agreement=min_agreement,
    )


@alerts_app.command("tail")
def alerts_tail(
    ctx: typer.Context,
    start: Annotated[str, _FROM] = "latest",
    until_end: Annotated[
        bool, typer.Option("--until-end", help="Exit once the alerts published so far are read.")
    ] = False,
    min_score: Annotated[float, _MIN_SCORE] = 0.0,
    label: Annotated[str | None, _LABEL] = None,
    site: Annotated[list[str] | None, _SITE] = None,
    field: Annotated[int | None, _FIELD] = None,
    star: Annotated[str | None, _STAR] = None,
    group: Annotated[str | None, _GROUP] = None,
    unusual: Annotated[bool, _UNUSUAL] = False,
    min_agreement: Annotated[float | None, _MIN_AGREEMENT] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON line per alert (with the publication time).")
    ] = False,
) -> None:
    """Table (or JSON lines) of alerts: trigger time, star, field, position, sites, scores,
    novelty and second opinion."""
    import json

    settings = _settings(ctx)
    wanted = _alert_filter(min_score, label, site, field, star, unusual, min_agreement)
    shown = 0
    options = {"group_id": group, "start": _start(start), "stop_at_end": until_end}
    with _subscriber(settings, **options) as alerts:
        for alert in alerts:
            if wanted(alert):
                if as_json:
                    typer.echo(json.dumps(alert_summary(alert)))
                else:
                    if shown == 0:
                        typer.echo(ALERT_TABLE_HEADER)
                    typer.echo(alert_row(alert))
                shown += 1
            if group is not None:
                alerts.ack(alert)
    _report_skipped(alerts, settings.topics.alerts)
    if not as_json:
        typer.echo(f"{shown} alerts")


def _report_skipped(alerts: Any, topic: str, shown: int = 5) -> None:
    """One stderr line per message the subscriber could not decode (the first few)."""
    for partition, offset, why in alerts.skipped[:shown]:
        typer.echo(f"lensnet: skipped {topic}[{partition}]@{offset}: {why}", err=True)
    if len(alerts.skipped) > shown:
        typer.echo(f"lensnet: skipped {len(alerts.skipped) - shown} more messages", err=True)


def _subscriber(settings: Settings, **options: Any) -> Any:
    """An alert subscriber of the configured alert topic (and registry, when one is set)."""
    from consumer.edge.subscribe import AlertSubscriber

    registry = settings.schema_registry if settings.schema_registry.url else None
    return AlertSubscriber(
        settings.kafka,
        settings.topics.alerts,
        registry=registry,
        topic_setting=env_name(("topics", "alerts")),
        **options,
    )


#: ``alerts tail``: what an observer scans for. The UTC is that of the trigger as seen from
#: Earth (HJD corrected for the light time to the Sun at the star's position). ``novel``: the
#: novelty network's flag (``!`` unusual, ``-`` no score); ``2nd``: the second opinion's p_event.
ALERT_TABLE_HEADER = (
    f"{'trigger HJD':>13}  {'trigger UTC':16}  {'star':>12}  {'field':5}  {'chip':>4}  "
    f"{'RA':10}  {'Dec':9}  {'sites':14}  {'Δχ²':>8}  {'p_event':>7}  {'label':5}  "
    f"{'peak HJD ± 1 sd':>20} {'I_pk':>5}  {'novel':5}  {'2nd':>5}  alert id"
)


def alert_row(alert: Any) -> str:
    """One line of the ``alerts tail`` table (see :data:`ALERT_TABLE_HEADER`)."""
    from consumer.edge.times import sexagesimal_dec, sexagesimal_ra, utc_from_hjd

    utc = utc_from_hjd(alert.trigger_hjd, alert.ra, alert.dec)
    field_name = f"BLG{alert.field:02d}" if alert.field >= 0 else "-"
    novel = "-" if alert.novelty is None else ("!" if alert.novelty.unusual else ".")
    second = "-" if alert.second_opinion is None else f"{alert.second_opinion.p_event:.3f}"
    return (
        f"{alert.trigger_hjd:>13.5f}  {utc:%Y-%m-%d %H:%M}  {alert.star_id:>12}  "
        f"{field_name:5}  {alert.chip:>4}  {sexagesimal_ra(alert.ra):10}  "
        f"{sexagesimal_dec(alert.dec):9}  {'+'.join(dict.fromkeys(alert.alertfinder.sites)):14}  "
        f"{alert.alertfinder.dchi2:>8.0f}  {alert.lensnet.p_event:>7.3f}  "
        f"{alert.lensnet.label:5}  {_peak_columns(alert.event_model)}  {novel:5}  {second:>5}  "
        f"{alert.alert_id}"
    )


def _peak_columns(model: Any) -> str:
    """Predicted peak (HJD ± 1 sd) and peak I magnitude of the source, for tables."""
    if model is None:
        return f"{'-':>20} {'-':>5}"
    err = "?" if model.peak_hjd_err is None else f"{min(model.peak_hjd_err, 999.9):.1f}"
    mag = "-" if model.peak_mag is None else f"{model.peak_mag:.1f}"
    return f"{model.peak_hjd:>13.2f} ± {err:>4} {mag:>5}"


def _model_summary(model: Any) -> dict[str, Any] | None:
    """The JSON of an event model in ``tail --json`` lines (no per-dataset fluxes)."""
    if model is None:
        return None
    names = ("fitted_to_hjd", "peak_hjd", "peak_hjd_err", "peak_hjd_lower", "peak_hjd_upper",
             "peak_mag", "peak_mag_err", "t0",
             "t0_err", "u0", "u0_err", "tE", "tE_err", "peak_magnification", "source_mag",
             "peak_seen")  # fmt: skip
    out = {name: getattr(model, name) for name in names}
    anomaly = model.anomaly
    out["anomaly"] = (
        None if anomaly is None else dict(anomaly.__dict__) | {"sites": list(anomaly.sites)}
    )
    return out


def alert_summary(alert: Any) -> dict[str, Any]:
    """The JSON line of one alert in ``alerts tail --json`` (no light curve)."""
    from consumer.edge.binary_posterior import binary_posterior_to_record
    from consumer.edge.opinions import agreement, novelty_to_record, second_opinion_to_record
    from consumer.edge.times import utc_from_hjd

    return {
        "alert_id": alert.alert_id,
        "star_id": alert.star_id,
        "published_at": alert.published_at.isoformat(),
        "trigger_hjd": alert.trigger_hjd,
        "trigger_utc": utc_from_hjd(alert.trigger_hjd, alert.ra, alert.dec).isoformat(
            timespec="seconds"
        ),
        "field": alert.field,
        "chip": alert.chip,
        "ra": alert.ra,
        "dec": alert.dec,
        "sites": list(dict.fromkeys(alert.alertfinder.sites)),
        "dchi2": alert.alertfinder.dchi2,
        "t_break": alert.alertfinder.t_break,
        "p_event": alert.lensnet.p_event,
        "label": alert.lensnet.label,
        "p_yes": alert.lensnet.p_yes,
        "p_maybe": alert.lensnet.p_maybe,
        "p_no": alert.lensnet.p_no,
        "model_version": alert.lensnet.model_version,
        "n_points": len(alert.light_curve),
        "event_model": _model_summary(alert.event_model),
        "novelty": novelty_to_record(alert.novelty),
        "second_opinion": second_opinion_to_record(alert.second_opinion),
        "agreement": agreement(alert.lensnet.p_event, alert.second_opinion),
        "binary_posterior": binary_posterior_to_record(alert.binary_posterior),
    }


@alerts_app.command("plot")
def alerts_plot(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Argument(help="Folder for the PNGs (one per alert).")],
    alert_id: Annotated[
        str | None, typer.Option("--id", help="Only the alert with this id.")
    ] = None,
    start: Annotated[str, _FROM] = "earliest",
    min_score: Annotated[float, _MIN_SCORE] = 0.0,
    label: Annotated[str | None, _LABEL] = None,
    site: Annotated[list[str] | None, _SITE] = None,
    field: Annotated[int | None, _FIELD] = None,
    star: Annotated[str | None, _STAR] = None,
    days_before: Annotated[
        float | None,
        typer.Option(help="Zoom from this many days before the trigger (default: from the break)."),
    ] = None,
    nightly: Annotated[
        bool, typer.Option("--nightly", help="Bin each site's points per night.")
    ] = False,
) -> None:
    """PNG of each alert's multi-site light curve, fitted line and trigger (reads to the end)."""
    from tqdm import tqdm

    from consumer.edge.plot import file_name, plot_alert

    settings = _settings(ctx)
    wanted = _alert_filter(min_score, label, site, field, star)
    written = 0
    with _subscriber(settings, start=_start(start), stop_at_end=True) as alerts:
        for alert in tqdm(alerts, desc="alerts", unit=" alert", disable=None):
            if alert_id is not None and alert.alert_id != alert_id:
                continue
            if wanted(alert):
                path = out_dir / file_name(alert)
                plot_alert(alert, path, days_before=days_before, nightly=nightly)
                written += 1
    _report_skipped(alerts, settings.topics.alerts)
    if alert_id is not None and written == 0:
        raise typer.BadParameter(f"--id {alert_id}: no such alert in {settings.topics.alerts}")
    typer.echo(f"{written} PNGs in {out_dir}")


@alerts_app.command("stats")
def alerts_stats(
    ctx: typer.Context,
    start: Annotated[str, _FROM] = "earliest",
    group: Annotated[
        str | None, typer.Option(help="Also show how far behind this consumer group is.")
    ] = None,
) -> None:
    """Counts of the alerts per class, field and score bin; a group's lag."""
    import itertools
    from collections import Counter

    settings = _settings(ctx)
    labels: Counter[str] = Counter()
    fields: Counter[int] = Counter()
    bins: Counter[str] = Counter()
    edges = (0.0, 0.45, 0.8, 0.955, 1.0001)
    with _subscriber(settings, start=_start(start), stop_at_end=True) as alerts:
        for alert in alerts:
            labels[alert.lensnet.label] += 1
            fields[alert.field] += 1
            for low, high in itertools.pairwise(edges):
                if low <= alert.lensnet.p_event < high:
                    bins[f"[{low:.3g}, {min(high, 1.0):.3g}{']' if high > 1 else ')'}"] += 1
    _report_skipped(alerts, settings.topics.alerts)
    total = sum(labels.values())
    typer.echo(f"{total} alerts in {settings.topics.alerts}")
    typer.echo("by class:  " + "  ".join(f"{k} {v}" for k, v in sorted(labels.items())))
    typer.echo("by score:  " + "  ".join(f"{k} {bins[k]}" for k in sorted(bins)))
    typer.echo(
        "by field:  "
        + "  ".join(f"BLG{k:02d} {v}" for k, v in sorted(fields.items(), key=lambda kv: -kv[1]))
    )
    if group is not None:
        with _subscriber(settings, group_id=group) as reader:
            lag = reader.lag()
        detail = ", ".join(f"p{p} {n}" for p, n in sorted(lag.items()))
        typer.echo(
            f"group {group}: {sum(lag.values())} offsets behind ({detail}; transaction markers "
            "take offsets too, so this bounds the unacknowledged alerts from above)"
        )


@events_app.command("tail")
def events_tail(
    ctx: typer.Context,
    start: Annotated[str, _FROM] = "latest",
    until_end: Annotated[
        bool, typer.Option("--until-end", help="Exit once the updates published so far are read.")
    ] = False,
    kind: Annotated[
        list[str] | None,
        typer.Option(
            help="Only updates of this kind: INITIAL, UPDATE, ANOMALY, FINAL (repeatable)."
        ),
    ] = None,
    star: Annotated[str | None, _STAR] = None,
    group: Annotated[str | None, _GROUP] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per update.")] = False,
) -> None:
    """Follow the events topic: refits of alerted events as they unfold, anomalies at once."""
    import fnmatch
    import json

    from consumer.edge.events import UPDATE_KINDS
    from consumer.edge.subscribe import EventSubscriber

    settings = _settings(ctx)
    kinds = {k.upper() for k in kind or []}
    unknown = sorted(kinds - set(UPDATE_KINDS))
    if unknown:
        raise typer.BadParameter(f"--kind {unknown[0]}: expected one of {', '.join(UPDATE_KINDS)}")
    header = (
        f"{'published (UTC)':19} {'star':>12} {'#':>3} {'kind':7} {'fitted to':>11} "
        f"{'peak HJD ± 1 sd':>20} {'I_pk':>5} {'tE':>6} reason"
    )
    shown = 0
    with EventSubscriber(
        settings.kafka,
        settings.topics.events,
        topic_setting=env_name(("topics", "events")),
        group_id=group,
        start=_start(start),
        stop_at_end=until_end,
    ) as updates:
        for update in updates:
            wanted = (not kinds or update.kind in kinds) and (
                star is None or fnmatch.fnmatchcase(str(update.star_id), star)
            )
            if wanted:
                model = update.event_model
                if as_json:
                    line = {
                        "event_id": update.event_id,
                        "star_id": update.star_id,
                        "sequence": update.sequence,
                        "kind": update.kind,
                        "reason": update.reason,
                        "published_at": update.published_at.isoformat(),
                        "ra": update.ra,
                        "dec": update.dec,
                        "alert_hjd": update.alert_hjd,
                        "event_model": _model_summary(model),
                    }
                    typer.echo(json.dumps(line))
                else:
                    if shown == 0:
                        typer.echo(header)
                    typer.echo(
                        f"{update.published_at:%Y-%m-%d %H:%M:%S} {update.star_id:>12} "
                        f"{update.sequence:>3} {update.kind:7} {model.fitted_to_hjd:>11.2f} "
                        f"{_peak_columns(model)} {model.tE:>6.1f} {update.reason}"
                    )
                shown += 1
            if group is not None:
                updates.ack(update)
    if not as_json:
        typer.echo(f"{shown} updates")


@topics_app.command("create")
def topics_create(
    ctx: typer.Context,
    recreate: Annotated[
        bool,
        typer.Option(
            "--recreate",
            help="Delete the topics first, with everything in them (demos and tests only).",
        ),
    ] = False,
) -> None:
    """Create the photometry, alert, events and dead-letter topics that do not exist yet."""
    from consumer.edge.kafka import make_admin
    from consumer.edge.topics import (
        broker_count,
        check_copartitioning,
        delete_topics,
        ensure_topics,
        replication,
        required_topics,
    )

    settings = _settings(ctx)
    _reach(settings)
    admin = make_admin(settings.kafka)
    if recreate:
        deleted = delete_topics(admin, [spec.name for spec in required_topics(settings.topics)])
        for name in deleted:
            typer.echo(f"deleted {name}")
    created = ensure_topics(admin, required_topics(settings.topics))
    partitions = check_copartitioning(admin, settings.topics)
    topics = settings.topics
    replicas, min_insync = replication(
        broker_count(admin), topics.replication_factor, topics.min_insync_replicas
    )
    for name in created:
        typer.echo(f"created {name} ({replicas} replicas, min.insync.replicas={min_insync})")
    typer.echo(f"photometry topics co-partitioned with {partitions} partitions")


@topics_app.command("describe")
def topics_describe(ctx: typer.Context) -> None:
    """Show each required topic and its partition count; exit 2 if co-partitioning is broken."""
    from consumer.edge.kafka import make_admin
    from consumer.edge.topics import check_copartitioning, partition_counts, required_topics

    settings = _settings(ctx)
    _reach(settings)
    admin = make_admin(settings.kafka)
    specs = required_topics(settings.topics)
    counts = partition_counts(admin, [spec.name for spec in specs])
    for spec in specs:
        found = counts.get(spec.name)
        typer.echo(f"{spec.name:32s} {'missing' if found is None else f'{found} partitions'}")
    check_copartitioning(admin, settings.topics)


def main() -> None:
    """Console-script entry point: maps our errors to one stderr line and an exit code.

    Usage errors are click's (exit 2); everything we raise derives from LensNetError.
    """
    try:
        app()
    except LensNetError as error:
        typer.echo(f"lensnet: {error}", err=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
