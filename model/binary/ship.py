"""Ship a trained binary flow: pick the seed on validation, write the artifact and its card.

Usage::

    python -m model.binary.ship --checkpoint /tmp/flow-run/checkpoint-seed*.pt \\
        --out model/artifacts/binary_flow

Of the checkpoints (one per training seed), the one with the lowest validation NLL is shipped
(the test split plays no part). The card records the inputs, the parameters and their prior
boxes, the model arguments, the training arguments and sizes, and every seed's validation NLL
and CPU time.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from pathlib import Path
from typing import Any

import torch

from model.binary.export import ARTIFACTS_DIR, save
from model.binary.flow import BinaryFlow, FlowConfig
from model.binary.inputs import MAX_POINTS, MIN_POINTS, POINT_FEATURES, WINDOW_DAYS
from model.binary.simulate import HIGH, LOW, PARAMETERS, REPORTED
from model.binary.train import SPLIT_SEASONS, SPLIT_SIZES, TRAIN_SEASONS, train_seasons


def _best(stored: dict[str, Any]) -> dict[str, float]:
    return min(stored["history"], key=lambda h: h["validation_nll"])


def card(chosen: dict[str, Any], seeds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The model card of ``chosen`` (a checkpoint), with every seed's summary."""
    training = chosen["training"]
    return {
        "name": "binary-lens posterior flow",
        "format": "torch.save {config, state_dict}; model.binary.export.load",
        "torch_version": torch.__version__,
        "zuko_version": importlib.metadata.version("zuko"),
        "vbmicrolensing_version": importlib.metadata.version("VBMicrolensing"),
        "inputs": {
            "preprocessing": "model.binary.inputs.flow_input",
            "point_features": list(POINT_FEATURES),
            "window_days": WINDOW_DAYS,
            "max_points": MAX_POINTS,
            "min_points": MIN_POINTS,
        },
        "parameters": {
            "flow": list(PARAMETERS),
            "reported": list(REPORTED),
            "prior_low": LOW.tolist(),
            "prior_high": HIGH.tolist(),
            "priors": "model.binary.simulate module docstring",
        },
        "model_config": chosen["config"],
        "training": {
            "command": (
                f"python -m model.binary.train --seed {training['seed']} --epochs "
                f"{training['epochs']} --batch-size {training['batch_size']} --learning-rate "
                f"{training['learning_rate']} --patience {training['patience']} --max-minutes "
                f"{training['max_minutes']} --threads {training['threads']} --cache "
                f"{training.get('cache', '/tmp/flow-data')} --train-seasons "
                f"{training.get('train_seasons', len(TRAIN_SEASONS))}"
            ),
            "arguments": training,
            "seasons": {k: list(v) for k, v in SPLIT_SEASONS.items()}
            | {"train": list(train_seasons(training.get("train_seasons", len(TRAIN_SEASONS))))},
            "events_per_season": SPLIT_SIZES,
            "best_epoch": int(_best(chosen)["epoch"]),
            "epochs_run": len(chosen["history"]),
            "validation_nll": _best(chosen)["validation_nll"],
            "cpu_seconds": chosen["history"][-1]["cpu_seconds"],
        },
        "selection": "lowest validation NLL over the seeds below",
        "seeds": seeds,
        "evaluation": "model/artifacts/binary_flow/report.md (test seasons, once)",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=ARTIFACTS_DIR)
    args = parser.parse_args(argv)
    stored = {p.name: torch.load(p, map_location="cpu", weights_only=True) for p in args.checkpoint}
    seeds = {
        name: {
            "seed": s["training"]["seed"],
            "best_epoch": int(_best(s)["epoch"]),
            "epochs_run": len(s["history"]),
            "validation_nll": _best(s)["validation_nll"],
            "cpu_seconds": s["history"][-1]["cpu_seconds"],
        }
        for name, s in stored.items()
    }
    name = min(stored, key=lambda n: seeds[n]["validation_nll"])
    chosen = stored[name]
    config = chosen["config"] | {"dilations": tuple(chosen["config"]["dilations"])}
    model = BinaryFlow(FlowConfig(**config))
    model.load_state_dict(chosen["state_dict"])
    path = save(model.eval(), card(chosen, seeds), args.out)
    print(f"shipped {name} as {path}")


if __name__ == "__main__":
    main()
