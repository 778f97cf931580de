"""Artifacts of the novelty network and the second opinion, versioned like LensNet's.

- ``model/artifacts/novelty/novelty-<version>.pt``: TorchScript (``torch.jit.script``, as
  LensNet: one file that loads with ``torch.jit.load`` and no model code), standardisation,
  mixture and energy cut inside; ``<version>`` hashes the architecture and every parameter and
  buffer (the cut included).
- ``model/artifacts/second_opinion/second-opinion-<version>.json``: the two LightGBM boosters
  (:mod:`model.second_opinion`); ``<version>`` hashes the file's text.

Each folder holds one artifact and its ``model_card.json`` (:func:`save_*` remove the others),
and the daemon loads what the cards name.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import torch

from consumer.exceptions import LensNetError
from model.export import ARTIFACTS_DIR, CARD_NAME
from model.novelty import NoveltyNet

NOVELTY_DIR: Final = ARTIFACTS_DIR / "novelty"
SECOND_OPINION_DIR: Final = ARTIFACTS_DIR / "second_opinion"


def content_version(model: NoveltyNet) -> str:
    """10 hex digits of SHA-256 over the architecture and every parameter and buffer."""
    digest = hashlib.sha256(json.dumps(asdict(model.config), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().double().numpy().tobytes())
    return digest.hexdigest()[:10]


def script(model: NoveltyNet) -> torch.jit.ScriptModule:
    """``torch.jit.script`` in eval mode (the deprecation warning silenced, as for LensNet)."""
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
    assert isinstance(scripted, torch.jit.ScriptModule)
    return scripted


def _write_card(out_dir: Path, card: dict[str, Any]) -> None:
    (out_dir / CARD_NAME).write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")


def save_novelty(model: NoveltyNet, card: dict[str, Any], out_dir: Path = NOVELTY_DIR) -> Path:
    """Write ``out_dir/novelty-<version>.pt`` and its card; other ``novelty-*.pt`` go."""
    out_dir.mkdir(parents=True, exist_ok=True)
    version = content_version(model)
    path = out_dir / f"novelty-{version}.pt"
    scripted = script(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(scripted, str(path))
    for stale in out_dir.glob("novelty-*.pt"):
        if stale != path:
            stale.unlink()
    _write_card(out_dir, {**card, "version": version, "artifact": path.name})
    return path


def save_second_opinion(
    document: str, card: dict[str, Any], out_dir: Path = SECOND_OPINION_DIR
) -> Path:
    """Write ``out_dir/second-opinion-<version>.json`` (``document`` from
    :func:`model.second_opinion.booster_document`) and its card."""
    from model.second_opinion import content_version as document_version

    out_dir.mkdir(parents=True, exist_ok=True)
    version = document_version(document)
    path = out_dir / f"second-opinion-{version}.json"
    path.write_text(document)
    for stale in out_dir.glob("second-opinion-*.json"):
        if stale != path:
            stale.unlink()
    _write_card(out_dir, {**card, "version": version, "artifact": path.name})
    return path


def named_artifact(directory: Path) -> Path:
    """The artifact the card in ``directory`` names.

    Raises
    ------
    LensNetError
        No card, or it names a file that is not there.
    """
    card_path = directory / CARD_NAME
    try:
        name = json.loads(card_path.read_text())["artifact"]
    except (OSError, ValueError, KeyError) as error:
        raise LensNetError(f"{card_path}: cannot read the model card ({error})") from error
    path = directory / str(name)
    if not path.is_file():
        raise LensNetError(f"{card_path}: names {name}, which is not in {directory}")
    return path


def read_card(path: Path) -> dict[str, Any]:
    """The card beside an artifact (``{}`` when absent or describing another file)."""
    card_path = path.parent / CARD_NAME
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    return card if card.get("artifact") in (None, path.name) else {}


def load_novelty(path: Path | None = None) -> tuple[Any, dict[str, Any]]:
    """``(module, card)`` of a novelty artifact (default: the shipped one), eval mode, CPU."""
    path = named_artifact(NOVELTY_DIR) if path is None else path
    if path.is_dir():
        path = named_artifact(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError, OSError) as error:
            raise LensNetError(f"{path}: cannot load the novelty artifact ({error})") from error
    module.eval()
    return module, read_card(path)


def training_command(config: Any, percentile: float) -> str:
    """The ``lensnet novelty train`` command line that reproduces a run of ``config`` (a
    :class:`model.train_novelty.NoveltyTrainConfig`)."""
    seeds = ",".join(str(seed) for seed in config.train_seasons.seeds)
    validation = ",".join(str(seed) for seed in config.validation_seasons.seeds)
    words = [
        f"lensnet novelty train --seed {config.seed}",
        f"--train-seasons {seeds} --validation-seasons {validation}",
        f"--stars-per-season {config.train_seasons.n_stars}",
        f"--validation-stars {config.validation_seasons.n_stars}",
        f"--epochs {config.epochs} --batch-size {config.batch_size}",
        f"--learning-rate {config.learning_rate:g} --kl-weight {config.kl_weight:g}",
        f"--gmm-weight {config.gmm_weight:g} --steps {config.model.steps}",
        f"--hidden {config.model.hidden} --embedding {config.model.embedding}",
        f"--threads {config.threads} --cut-percentile {percentile:g}",
    ]
    for name in config.holdout:
        words.append(f"--holdout {name}")
    if config.max_instances is not None:
        words.append(f"--max-instances {config.max_instances}")
    if config.max_minutes is not None:
        words.append(f"--max-minutes {config.max_minutes:g}")
    return " ".join(words)


def novelty_card(config: Any, history: Any, model: NoveltyNet, percentile: float) -> dict[str, Any]:
    """The card of a freshly trained novelty network (``config``: its
    :class:`model.train_novelty.NoveltyTrainConfig`, ``history``: its
    :class:`model.train_novelty.NoveltyHistory`); :func:`save_novelty` adds version and name."""
    from model.dataset import code_version
    from model.features import FEATURES

    return {
        "name": "LensNet novelty (recurrent VAE + estimation network + GMM)",
        "format": "torchscript",
        "torch_version": torch.__version__,
        "paper": "Tsang & Schultz 2019, ApJL (shared/papers/rnn-autoencoder-gmm-novelty-2019.txt)",
        "inputs": {
            "x": "LensNet's input: (B, 3, L, 8) float32 raw features, each site's "
            "lengths[b, s] real steps first, zeros after",
            "lengths": "(B, 3) int64",
            "features": list(FEATURES),
            "preprocessing": "model.features.prepare + model.features.collate (LensNet's)",
        },
        "outputs": {
            "energy": "(B,) float64 sample energy, -log sum_k phi_k N(z | mu_k, Sigma_k)",
            "z": "(B, D) float32 estimation-network input: embedding, reconstruction "
            "distance and cosine, summaries (model.novelty.SUMMARY_NAMES)",
            "gamma": "(B, K) float32 membership of each component (training subclass)",
        },
        "energy_cut": {
            "value": float(model.energy_cut),
            "training_percentile": percentile,
            "training_percentiles": history.energy_percentiles,
            "rule": "unusual when energy > value; the percentile is chosen on the "
            "validation seasons' held-out-subclass experiments (lensnet novelty choose-cut; "
            "evaluation/opinions.md)",
        },
        "components": list(history.components),
        "holdout": list(config.holdout),
        "model_config": asdict(model.config),
        "training": {
            "command": training_command(config, percentile),
            "config": asdict(config),
            "code_version": code_version(),
            "history": asdict(history),
        },
    }
