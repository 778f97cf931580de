"""Export a trained LensNet as a TorchScript artifact plus its model card, and load them back.

``lensnet-v1.pt`` is ``torch.jit.script`` of the model with standardisation inside: it takes raw
features (:data:`model.features.FEATURES`) and returns probabilities, so the daemon needs no
model code to run it. ``model_card.json`` beside it records what made it (data recipe, model
arguments, feature order, thresholds, metrics, versions).

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

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import torch

from model.lensnet import LensNet

if TYPE_CHECKING:
    from model.train import TrainConfig

ARTIFACT_NAME: Final = "lensnet-v1.pt"
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


def save(model: LensNet, card: dict[str, Any], out_dir: Path) -> Path:
    """Write ``out_dir/lensnet-v1.pt`` and ``out_dir/model_card.json``; returns the artifact."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ARTIFACT_NAME
    scripted = script(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(scripted, str(path))
    (out_dir / CARD_NAME).write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    return path


def load_artifact(path: Path = ARTIFACTS_DIR / ARTIFACT_NAME) -> tuple[Any, dict[str, Any]]:
    """``(module, card)``: the TorchScript module (eval mode, CPU) and its model card (the
    ``model_card.json`` beside it; ``{}`` when absent). Call ``module(x, lengths)`` with
    :func:`model.features.collate` output as tensors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()
    card_path = path.parent / CARD_NAME
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    return module, card


def training_command(config: TrainConfig) -> str:
    """The ``lensnet train`` command line that reproduces a run of ``config``."""
    words = [
        f"lensnet train --stars {config.n_stars} --seed {config.seed}",
        f"--epochs {config.epochs} --patience {config.patience} --crops {config.crop.crops}",
        f"--hidden {config.model.hidden} --dropout {config.model.dropout:g}",
        f"--weight-decay {config.weight_decay:g} --select {config.select}",
        "--cosine" if config.cosine else "--no-cosine",
        "--lr-decay" if config.lr_decay else "--no-lr-decay",
        f"--threads {config.threads}",
    ]
    if config.max_minutes is not None:
        words.append(f"--max-minutes {config.max_minutes:g}")
    return " ".join([*words, "--out model/artifacts"])


def model_card(config: Any, history: Any, model: LensNet) -> dict[str, Any]:
    """The card of a freshly trained model (``config``: a :class:`model.train.TrainConfig`,
    ``history``: its :class:`model.train.History`); test-set metrics are added by
    :func:`model.evaluate.evaluate_artifact`."""
    from dataclasses import asdict

    from model.features import FEATURES, MAX_LENGTH, MIN_POINTS

    return {
        "name": "LensNet",
        "version": ARTIFACT_NAME.removesuffix(".pt").removeprefix("lensnet-"),
        "artifact": ARTIFACT_NAME,
        "format": "torchscript",
        "torch_version": torch.__version__,
        "inputs": {
            "x": "(B, 3, L, 8) float32 raw features, sites CTIO/SAAO/SSO, left zero-padded",
            "lengths": "(B, 3) int64 real steps per site",
            "features": list(FEATURES),
            "max_length": MAX_LENGTH,
            "min_points": MIN_POINTS,
            "preprocessing": "model.features.prepare + model.features.collate",
        },
        "outputs": {
            "p_event": "(B,) P(Yes or Maybe), binary head",
            "p_class": "(B, 3) P(No), P(Maybe), P(Yes), 3-class head",
            "site_scores": "(B, 3) binary probability from each site's branch alone",
        },
        "model_config": asdict(model_config_of(model)),
        "training": {
            "command": training_command(config),
            "config": asdict(config),
            "simulator": asdict(config.simulation),
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
            "as lensnet-v2.pt2, same card, same eager-vs-artifact equality test."
        ),
    }


def model_config_of(model: LensNet) -> Any:
    """The :class:`~model.lensnet.LensNetConfig` a model was built with."""
    return model.config
