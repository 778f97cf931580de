"""Export a trained LensNet as a TorchScript artifact plus its model card, and load them back.

``lensnet-<version>.pt`` is ``torch.jit.script`` of the model with standardisation inside: it
takes raw features (:data:`model.features.FEATURES`) and returns probabilities, so the daemon
needs no model code to run it. The version is derived from the content (:func:`content_version`:
a hash of the weights, buffers and architecture), so two different models can never share a
name, and it travels in the file name, the card, every alert and the daemon's ``/metrics``.
``model_card.json`` beside it names the artifact and records what made it (data recipe, model
arguments, feature order, thresholds, metrics, versions); the shipped artifact is the one the
card in :data:`ARTIFACTS_DIR` names.

Why TorchScript, although PyTorch marks it deprecated in favour of ``torch.export``: the design
card asks for one self-contained file loadable with ``torch.jit.load`` and no Python model code;
TorchScript still does this on every torch 2.x, whereas ``torch.export`` programs of an LSTM
with data-dependent lengths need dynamic-shape specs and load with ``torch.export.load`` only
on a matching torch minor version. Migration path: ``torch.export.export(model, (x, lengths),
dynamic_shapes=...)`` + ``torch.export.save`` to ``lensnet-v2.pt2``, keeping this card format;
the eager-vs-artifact equality test carries over unchanged.

TorchScript calls emit ``DeprecationWarning`` on recent torch; :func:`script`, :func:`save` and
:func:`load_artifact` silence exactly that warning category around the calls (the test suite
turns every warning into an error, and the deprecation is a known, recorded decision).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import torch

from consumer.exceptions import LensNetError
from model.lensnet import LensNet
from model.timeline import Cadence, card_cadence

if TYPE_CHECKING:
    from model.train import TrainConfig

CARD_NAME: Final = "model_card.json"
#: Default location of the shipped artifact.
ARTIFACTS_DIR: Final = Path(__file__).resolve().parent / "artifacts"
#: Paper §8.3: balanced threshold and high-purity threshold of the binary head.
THRESHOLD_BALANCED: Final = 0.45
THRESHOLD_HIGH_PURITY: Final = 0.955


def script(model: LensNet) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of the model in eval mode (deprecation warning silenced)."""
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
    assert isinstance(scripted, torch.jit.ScriptModule)
    return scripted


def content_version(model: LensNet) -> str:
    """10 hex digits of SHA-256 over the architecture and every parameter and buffer."""
    digest = hashlib.sha256(json.dumps(asdict(model.config), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return digest.hexdigest()[:10]


def artifact_name(version: str) -> str:
    return f"lensnet-{version}.pt"


def save(model: LensNet, card: dict[str, Any], out_dir: Path) -> Path:
    """Write ``out_dir/lensnet-<version>.pt`` and ``out_dir/model_card.json`` (the card's
    ``version`` and ``artifact`` set from the content); other ``lensnet-*.pt`` files in
    ``out_dir`` are removed, so the card and the folder name one model. Returns the artifact."""
    out_dir.mkdir(parents=True, exist_ok=True)
    version = content_version(model)
    path = out_dir / artifact_name(version)
    scripted = script(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(scripted, str(path))
    for stale in out_dir.glob("lensnet-*.pt"):
        if stale != path:
            stale.unlink()
    card = {**card, "version": version, "artifact": path.name}
    (out_dir / CARD_NAME).write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    return path


def shipped_artifact(directory: Path = ARTIFACTS_DIR) -> Path:
    """The artifact the card in ``directory`` names (the shipped model by default).

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


def shipped_cadence(directory: Path = ARTIFACTS_DIR) -> Cadence:
    """The daemon schedule and trigger rules the shipped LensNet was trained on (its card):
    the calls the networks that run beside it (novelty, second opinion) are trained and
    evaluated at."""
    shipped_artifact(directory)  # the same checks: a card naming a file that is there
    return card_cadence(json.loads((directory / CARD_NAME).read_text()))


def load_artifact(path: Path | None = None) -> tuple[Any, dict[str, Any]]:
    """``(module, card)``: the TorchScript module (eval mode, CPU) and its model card (the
    ``model_card.json`` beside it; ``{}`` when absent). ``path`` None: the shipped artifact.
    Call ``module(x, lengths)`` with :func:`model.features.collate` output as tensors."""
    path = shipped_artifact() if path is None else path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()
    card_path = path.parent / CARD_NAME
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    if card.get("artifact") not in (None, path.name):
        card = {}  # the card beside it describes another model
    return module, card


def training_command(config: TrainConfig) -> str:
    """The ``lensnet train`` command line that reproduces a run of ``config``."""
    seeds = ",".join(str(seed) for seed in config.train_seasons.seeds)
    validation = ",".join(str(seed) for seed in config.validation_seasons.seeds)
    words = [
        f"lensnet train --seed {config.seed}",
        f"--train-seasons {seeds} --validation-seasons {validation}",
        f"--stars-per-season {config.train_seasons.n_stars}",
        f"--validation-stars {config.validation_seasons.n_stars}",
        f"--epochs {config.epochs} --patience {config.patience} --crops {config.crop.crops}",
        f"--negative-crops {config.crop.negative_crops}",
        f"--batch-size {config.batch_size} --learning-rate {config.learning_rate:g}",
        f"--hidden {config.model.hidden} --dropout {config.model.dropout:g}",
        f"--weight-decay {config.weight_decay:g} --site-loss-weight {config.site_loss_weight:g}",
        f"--select {config.select}",
        "--cosine" if config.cosine else "--no-cosine",
        f"--threads {config.threads} --device {config.device}",
        f"--high-cadence-rule {config.cadence.high_cadence}",
        f"--low-cadence-rule {config.cadence.low_cadence}",
    ]
    if config.max_minutes is not None:
        words.append(f"--max-minutes {config.max_minutes:g}")
    if config.init is not None:
        words.append(f"--init {config.init}")
    return " ".join([*words, "--out model/artifacts"])


def model_card(config: Any, history: Any, model: LensNet) -> dict[str, Any]:
    """The card of a freshly trained model (``config``: a :class:`model.train.TrainConfig`,
    ``history``: its :class:`model.train.History`); :func:`save` adds the version and artifact
    name, ``lensnet evaluate`` the test metrics."""
    from model.dataset import code_version
    from model.features import FEATURES, MAX_LENGTH, MIN_POINTS

    return {
        "name": "LensNet",
        "format": "torchscript",
        "torch_version": torch.__version__,
        "inputs": {
            "x": "(B, 3, L, 8) float32 raw features, sites CTIO/SAAO/SSO; each site's "
            "lengths[b, s] real steps first, zeros after",
            "lengths": "(B, 3) int64 real steps per site",
            "features": list(FEATURES),
            "max_length": MAX_LENGTH,
            "min_points": MIN_POINTS,
            "preprocessing": "model.features.prepare + model.features.collate",
        },
        "outputs": {
            "p_event": "(B,) P(Yes or Maybe), binary head",
            "p_class": "(B, 3) P(No), P(Maybe), P(Yes), 3-class head",
            "site_scores": "(B, 3) binary probability from each site's branch alone, trained "
            "against per-site labels",
        },
        "model_config": asdict(model_config_of(model)),
        "training": {
            "command": training_command(config),
            "config": asdict(config),
            "code_version": code_version(),
            "history": asdict(history),
        },
        "thresholds": {
            "balanced": {"value": THRESHOLD_BALANCED},
            "high_purity": {"value": THRESHOLD_HIGH_PURITY},
        },
        "format_decision": (
            "TorchScript kept although deprecated in favour of torch.export: the design card "
            "asks for one self-contained file loadable with torch.jit.load without model code, "
            "which TorchScript gives on every torch 2.x; torch.export of a padded LSTM needs "
            "dynamic-shape specs and loads only on a matching torch. Migration: "
            "torch.export.export(model, (x, lengths), dynamic_shapes=...) + torch.export.save "
            "as lensnet-<version>.pt2, same card, same eager-vs-artifact equality test."
        ),
    }


def model_config_of(model: LensNet) -> Any:
    """The :class:`~model.lensnet.LensNetConfig` a model was built with."""
    return model.config
