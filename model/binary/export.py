"""The shipped binary-lens flow: weights and model arguments in one file, named by content.

``binary-flow-<version>.pt`` holds ``{"config": FlowConfig as a dict, "state_dict": ...}``
(``torch.save``; read back with ``weights_only=True``, so loading runs no pickled code). Why not
TorchScript like LensNet: zuko's flows build their distributions in Python per call (lazy
transforms with data-dependent loops), which ``torch.jit.script`` does not compile; the model
code here is small and versioned with the weights instead. The version is a hash of the model
arguments and every tensor (:func:`content_version`), so two different models never share a
name. ``model_card.json`` beside it names the artifact (:func:`shipped_artifact`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import torch

from consumer.exceptions import LensNetError
from model.binary.flow import BinaryFlow, FlowConfig

ARTIFACTS_DIR: Final = Path(__file__).resolve().parent.parent / "artifacts" / "binary_flow"
CARD_NAME: Final = "model_card.json"
_PREFIX: Final = "binary-flow-"


class FlowArtifactError(LensNetError):
    """The binary-flow artifact or its card is missing or unreadable (the message names it)."""


def content_version(model: BinaryFlow) -> str:
    """First 10 hex digits of SHA-256 over the model arguments and every tensor's bytes."""
    digest = hashlib.sha256(json.dumps(asdict(model.config), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:10]


def save(model: BinaryFlow, card: dict[str, Any], out_dir: Path) -> Path:
    """Write ``binary-flow-<version>.pt`` and ``model_card.json`` (``card`` plus ``version`` and
    ``artifact``) to ``out_dir``, removing other ``binary-flow-*.pt`` files there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    version = content_version(model)
    path = out_dir / f"{_PREFIX}{version}.pt"
    for old in out_dir.glob(f"{_PREFIX}*.pt"):
        if old != path:
            old.unlink()
    torch.save({"config": asdict(model.config), "state_dict": model.state_dict()}, path)
    card = {**card, "version": version, "artifact": path.name}
    (out_dir / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return path


def shipped_artifact(directory: Path = ARTIFACTS_DIR) -> Path:
    """The artifact the card in ``directory`` names."""
    card_path = directory / CARD_NAME
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        path = directory / str(card["artifact"])
    except (OSError, ValueError, KeyError) as error:
        raise FlowArtifactError(f"{card_path}: cannot read the model card ({error})") from error
    if not path.exists():
        raise FlowArtifactError(f"{card_path}: names {path.name}, which does not exist")
    return path


def load(path: Path | None = None) -> BinaryFlow:
    """The model in ``path`` (default: the shipped one), in eval mode."""
    path = shipped_artifact() if path is None else path
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        config = stored["config"]
        config["dilations"] = tuple(config["dilations"])
        model = BinaryFlow(FlowConfig(**config))
        model.load_state_dict(stored["state_dict"])
    except (OSError, RuntimeError, KeyError, TypeError) as error:
        raise FlowArtifactError(f"{path}: cannot load the binary flow ({error})") from error
    return model.eval()
