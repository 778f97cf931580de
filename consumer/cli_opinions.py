"""``lensnet novelty ...`` and ``lensnet second-opinion ...``: train and evaluate the two models
that give every alert a novelty score and a second opinion (model/README.md, "Novelty and
second opinion"). Registered on the main ``lensnet`` app by :mod:`consumer.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "lensnet"
_CACHE_OPTION = typer.Option(
    envvar="LENSNET_CACHE_DIR", help="Cache of built training and test arrays."
)
_TRAIN_SEEDS = ",".join(str(s) for s in range(1001, 1009))

novelty_app = typer.Typer(
    help="The novelty network: recurrent VAE + Gaussian mixture energy.", no_args_is_help=True
)
second_opinion_app = typer.Typer(
    help="The second opinion: gradient boosting on the novelty encoder's features.",
    no_args_is_help=True,
)


def _seeds(value: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError as error:
        raise typer.BadParameter(f"{value!r}: expected comma-separated integers") from error
    if not seeds:
        raise typer.BadParameter("at least one season seed is needed")
    return seeds


@novelty_app.command("train")
def novelty_train(
    seed: Annotated[int, typer.Option(help="Seed of the weights, subset and shuffling.")] = 1,
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
    holdout: Annotated[
        list[str] | None,
        typer.Option(help="Leave this subclass out of training (repeatable; experiments)."),
    ] = None,
    max_instances: Annotated[
        int | None, typer.Option(min=100, help="At most this many training instances.")
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="At most this many epochs.")] = 30,
    batch_size: Annotated[int, typer.Option(min=64, help="Instances per step.")] = 512,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="Peak Adam step size.")] = 3e-3,
    kl_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the VAE's KL term.")] = 1e-3,
    gmm_weight: Annotated[
        float, typer.Option(min=0.0, help="Lambda of the energy term (paper: 1e-3).")
    ] = 1e-3,
    steps: Annotated[int, typer.Option(min=4, help="Bins per site the encoder reads.")] = 32,
    hidden: Annotated[int, typer.Option(min=4, help="Encoder GRU state size.")] = 32,
    embedding: Annotated[int, typer.Option(min=2, help="Embedding size (paper: 16).")] = 16,
    cut_percentile: Annotated[
        float,
        typer.Option(min=50.0, max=100.0, help="Energy cut: this percentile of training."),
    ] = 95.0,
    threads: Annotated[int, typer.Option(min=1, help="torch threads.")] = 1,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes building the instances (first run only).")
    ] = 1,
    max_minutes: Annotated[
        float | None,
        typer.Option(help="Training time budget: the epochs that fit, timed on the first."),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Folder for novelty-<version>.pt and model_card.json.")
    ] = Path("model/artifacts/novelty"),
    cache: Annotated[Path, _CACHE_OPTION] = DEFAULT_CACHE_DIR,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train the novelty network on simulated seasons and export its TorchScript artifact."""
    import numpy as np
    import torch

    from model.dataset import CropConfig, SeasonSet
    from model.export_novelty import novelty_card, save_novelty
    from model.novelty import NoveltyConfig
    from model.train_novelty import NoveltyTrainConfig, train_novelty

    config = NoveltyTrainConfig(
        seed=seed,
        train_seasons=SeasonSet("train", _seeds(train_seasons), stars_per_season),
        validation_seasons=SeasonSet("validation", _seeds(validation_seasons), validation_stars),
        crop=CropConfig(),
        model=NoveltyConfig(steps=steps, hidden=hidden, embedding=embedding),
        holdout=tuple(holdout or ()),
        max_instances=max_instances,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        kl_weight=kl_weight,
        gmm_weight=gmm_weight,
        threads=threads,
        workers=workers,
        max_minutes=max_minutes,
    )
    model, history, config = train_novelty(config, cache=cache, progress=progress)
    # Interpolated between the recorded training percentiles (exact at 80/90/95/97.5/99).
    cut = float(np.interp(cut_percentile, *_percentile_table(history.energy_percentiles)))
    model.energy_cut.fill_(torch.tensor(cut, dtype=torch.float64))
    path = save_novelty(model, novelty_card(config, history, model, cut_percentile), out)
    best = history.best_epoch
    typer.echo(
        f"wrote {path} (best epoch {best + 1} of {history.epochs_planned}: val reconstruction "
        f"{history.val_reconstruction[best]:.4f}, components "
        f"{history.val_component_accuracy[best]:.4f}; energy cut {cut:.3f} = training "
        f"p{cut_percentile:g}; {history.seconds[-1]:.0f} s, {history.n_train} training instances)"
    )


_HOLDOUT_MODELS = typer.Argument(
    help="Folders of held-out-subclass novelty models (lensnet novelty train --holdout NAME)."
)
_EVALUATION_DIR = Path("model/artifacts/evaluation")


@novelty_app.command("choose-cut")
def novelty_choose_cut(
    holdout_models: Annotated[list[Path], _HOLDOUT_MODELS],
    shipped: Annotated[
        Path, typer.Option(help="Folder of the novelty artifact whose cut is set.")
    ] = Path("model/artifacts/novelty"),
    validation_seasons: Annotated[
        str, typer.Option(help="Seeds of the validation seasons.")
    ] = "2001,2002",
    validation_stars: Annotated[
        int, typer.Option(min=10, help="Stars per validation season.")
    ] = 2000,
    out: Annotated[Path, typer.Option(help="Folder for novelty-validation.json.")] = (
        _EVALUATION_DIR
    ),
    cache: Annotated[Path, _CACHE_OPTION] = DEFAULT_CACHE_DIR,
) -> None:
    """Choose the energy cut on the validation seasons (best mean F1 of flagging held-out
    subclasses) and write it into the shipped novelty artifact (a new version)."""
    import torch

    from model.dataset import SeasonSet
    from model.evaluation.opinions_run import choose_cut

    torch.set_num_threads(1)
    seasons = SeasonSet("validation", _seeds(validation_seasons), validation_stars)
    metrics = choose_cut(holdout_models, shipped, out, validation_seasons=seasons, cache=cache)
    means = metrics["mean_f1_by_percentile"]
    chosen = metrics["chosen_percentile"]
    typer.echo(
        f"chose training p{chosen} (validation mean F1 {means[chosen]:.4f}); "
        f"wrote {metrics['shipped']}"
    )


@novelty_app.command("evaluate")
def novelty_evaluate(
    holdout_models: Annotated[list[Path], _HOLDOUT_MODELS],
    lensnet: Annotated[
        Path | None, typer.Option(help="LensNet artifact to compare with; default: shipped.")
    ] = None,
    test_seasons: Annotated[str, typer.Option(help="Seeds of the test seasons.")] = "3001,3002",
    test_stars: Annotated[int, typer.Option(min=10, help="Stars per test season.")] = 3000,
    out: Annotated[Path, typer.Option(help="Folder of novelty-validation.json; report.")] = (
        _EVALUATION_DIR
    ),
    cache: Annotated[Path, _CACHE_OPTION] = DEFAULT_CACHE_DIR,
) -> None:
    """Score the test seasons once (after choose-cut): held-out-subclass flagging, the shipped
    model's unusual shares, the second opinion beside LensNet; writes opinions.md."""
    import torch

    from model.dataset import SeasonSet
    from model.evaluation.opinions_run import evaluate_opinions

    torch.set_num_threads(1)
    seasons = SeasonSet("test", _seeds(test_seasons), test_stars)
    evaluate_opinions(holdout_models, lensnet, out, test_seasons=seasons, cache=cache)
    typer.echo(f"wrote {out / 'opinions.md'} and {out / 'opinions-test.json'}")


def _percentile_table(percentiles: dict[str, float]) -> tuple[list[float], list[float]]:
    pairs = sorted((float(k), v) for k, v in percentiles.items())
    return [p for p, _ in pairs], [v for _, v in pairs]


@second_opinion_app.command("train")
def second_opinion_train(
    seed: Annotated[int, typer.Option(help="Seed of the subset and LightGBM's bagging.")] = 1,
    train_seasons: Annotated[
        str, typer.Option(help="Seeds of the simulated training seasons (comma-separated).")
    ] = _TRAIN_SEEDS,
    stars_per_season: Annotated[
        int, typer.Option(min=10, help="Stars per training season.")
    ] = 3000,
    validation_seasons: Annotated[
        str, typer.Option(help="Seeds of the validation seasons (early stopping).")
    ] = "2001,2002",
    validation_stars: Annotated[
        int, typer.Option(min=10, help="Stars per validation season.")
    ] = 2000,
    novelty: Annotated[
        Path | None, typer.Option(help="Novelty artifact (file or folder); default: shipped.")
    ] = None,
    max_instances: Annotated[
        int | None, typer.Option(min=100, help="At most this many training instances.")
    ] = None,
    num_leaves: Annotated[int, typer.Option(min=2, help="LightGBM leaves per tree.")] = 31,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="LightGBM shrinkage.")] = 0.05,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes building the instances (first run only).")
    ] = 1,
    out: Annotated[
        Path, typer.Option(help="Folder for second-opinion-<version>.json and its card.")
    ] = Path("model/artifacts/second_opinion"),
    cache: Annotated[Path, _CACHE_OPTION] = DEFAULT_CACHE_DIR,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train the second opinion's boosters on the novelty encoder's features; export them."""
    import torch

    from model.dataset import SeasonSet
    from model.export_novelty import load_novelty, save_second_opinion
    from model.second_opinion import booster_document, feature_names
    from model.train_second_opinion import (
        SecondOpinionConfig,
        second_opinion_card,
        train_second_opinion,
    )

    torch.set_num_threads(1)
    module, card = load_novelty(novelty)
    config = SecondOpinionConfig(
        seed=seed,
        train_seasons=SeasonSet("train", _seeds(train_seasons), stars_per_season),
        validation_seasons=SeasonSet("validation", _seeds(validation_seasons), validation_stars),
        novelty=None if novelty is None else str(novelty),
        max_instances=max_instances,
        num_leaves=num_leaves,
        learning_rate=learning_rate,
        workers=workers,
    )
    binary, classes, history = train_second_opinion(
        config, novelty=module, cache=cache, progress=progress
    )
    names = feature_names(int(card.get("model_config", {}).get("embedding", 16)))
    document = booster_document(binary, classes, names, str(card.get("version", "")))
    path = save_second_opinion(document, second_opinion_card(config, history, names, card), out)
    typer.echo(
        f"wrote {path} (binary {history['binary']['best_iteration']} rounds, 3-class "
        f"{history['classes']['best_iteration']} rounds; {history['seconds']:.0f} s, "
        f"{history['n_train']} training instances)"
    )
