"""LensNet architecture: standardisation inside, padding, empty branches, TorchScript export."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt
import pytest
import torch

from model.export import content_version, load_artifact, save, script, shipped_artifact
from model.lensnet import FITTED_INDEX, FLUX_INDEX, LensNet, LensNetConfig

CONFIG = LensNetConfig(hidden=8, dense=16, dropout=0.0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> None:
    """Inference as the daemon runs it; two threads on a busy 2-core machine spin and crawl."""
    torch.set_num_threads(1)


def make_model(seed: int = 0) -> LensNet:
    torch.manual_seed(seed)
    model = LensNet(CONFIG)
    model.set_standardisation(torch.linspace(-1.0, 1.0, 8), torch.linspace(0.5, 2.0, 8))
    return model.eval()


def make_batch(
    seed: int = 1, batch: int = 4, length: int = 30
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = 3.0 * torch.randn(batch, 3, length, 8, generator=generator)
    lengths = torch.randint(0, length + 1, (batch, 3), generator=generator)
    lengths[0] = torch.tensor([length, 5, 0])
    steps = torch.arange(length)
    x = x * (steps.view(1, 1, length) < lengths.unsqueeze(-1)).unsqueeze(-1)
    return x, lengths


def test_fitted_line_takes_the_flux_statistics() -> None:
    model = make_model()
    assert model.mean[FITTED_INDEX] == model.mean[FLUX_INDEX]
    assert model.std[FITTED_INDEX] == model.std[FLUX_INDEX]


def test_standardisation_inside_matches_manual_standardisation() -> None:
    model = make_model()
    x, lengths = make_batch()
    lengths[1, 0] = max(int(lengths[1, 0]), 1)
    x[1, 0, 0, 3] = float("nan")  # a missing column value
    lengths[2, 1] = max(int(lengths[2, 1]), 1)
    x[2, 1, 0, 1] = 1e6  # wild value: clamped
    z = model.standardise(x, lengths)
    manual = (x - model.mean) / model.std
    manual = torch.nan_to_num(manual, nan=0.0).clamp(-CONFIG.clamp, CONFIG.clamp)
    for b in range(x.shape[0]):
        for s in range(3):
            n = int(lengths[b, s])
            torch.testing.assert_close(z[b, s, :n], manual[b, s, :n])
            assert not z[b, s, n:].any()  # padding exactly 0
    assert z[1, 0, 0, 3] == 0.0
    assert z[2, 1, 0, 1] == CONFIG.clamp


def _lstm_reference(lstm: torch.nn.LSTM, z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The LSTM equations step by step in numpy (gates i, f, g, o as in torch)."""
    w_ih, w_hh, b_ih, b_hh = (
        cast(torch.Tensor, getattr(lstm, name)).detach().double().numpy()
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    )
    bias = b_ih + b_hh
    h = np.zeros(lstm.hidden_size)
    c = np.zeros(lstm.hidden_size)

    def sigmoid(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.asarray(1.0 / (1.0 + np.exp(-v)))

    for step in z:
        i, f, g, o = np.split(w_ih @ step + w_hh @ h + bias, 4)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
    return h


def test_model_matches_a_numpy_reference() -> None:
    model = make_model()
    x, lengths = make_batch()
    z = model.standardise(x, lengths).double().numpy()
    states = []
    for s in range(3):
        branch = model.branches[s]
        assert isinstance(branch, torch.nn.LSTM)
        h = _lstm_reference(branch, z[0, s, : int(lengths[0, s])])
        states.append(h if lengths[0, s] > 0 else np.zeros_like(h))
    flat = torch.tensor(np.concatenate(states), dtype=torch.float32)
    with torch.no_grad():
        trunk = model.trunk(flat)
        expected = torch.sigmoid(model.binary_head(trunk)).item()
        p_event, p_class, site_scores = model(x, lengths)
    assert p_event[0].item() == pytest.approx(expected, abs=1e-5)
    assert torch.allclose(p_class.sum(dim=1), torch.ones(len(x)))
    assert site_scores.shape == (len(x), 3)


def test_an_empty_branch_contributes_nothing() -> None:
    model = make_model()
    x, lengths = make_batch()
    lengths[:, 2] = 0
    noisy = x.clone()
    noisy[:, 2] = torch.randn_like(noisy[:, 2])  # garbage in a branch of length 0
    with torch.no_grad():
        clean_out = model(x, lengths)
        noisy_out = model(noisy, lengths)
        states = model.encode(noisy, lengths)
    for a, b in zip(clean_out, noisy_out, strict=True):
        torch.testing.assert_close(a, b)
    assert not states[:, 2].any()


def test_site_scores_use_one_branch_at_a_time() -> None:
    model = make_model()
    x, lengths = make_batch()
    with torch.no_grad():
        _, _, site_scores = model(x, lengths)
        h = model.encode(x, lengths)
        alone = torch.zeros_like(h)
        alone[:, 1] = h[:, 1]
        binary, _ = model.heads(alone)
    torch.testing.assert_close(site_scores[:, 1], torch.sigmoid(binary))


def test_torchscript_export_agrees_with_the_eager_model(tmp_path: Path) -> None:
    model = make_model()
    path = save(model, {"name": "test", "thresholds": {}}, tmp_path)
    loaded, card = load_artifact(path)
    assert card["name"] == "test"
    x, lengths = make_batch(batch=6, length=50)
    with torch.no_grad():
        eager = model(x, lengths)
        scripted = script(model)(x, lengths)
        exported = loaded(x, lengths)
    for a, b, c in zip(eager, scripted, exported, strict=True):
        assert (a - b).abs().max().item() <= 1e-5
        assert (a - c).abs().max().item() <= 1e-5


def test_shipped_artifact_agrees_with_an_eager_model_of_its_card() -> None:
    path = shipped_artifact()
    loaded, card = load_artifact(path)
    eager = LensNet(LensNetConfig(**card["model_config"]))
    eager.load_state_dict(loaded.state_dict())
    eager.eval()
    assert card["version"] == content_version(eager)  # the name says what is inside
    assert path.name == f"lensnet-{card['version']}.pt"
    assert path.stat().st_size < 2_000_000
    x, lengths = make_batch(batch=5, length=120)
    x = x.abs()  # plausible magnitudes for sky / fwhm / airmass
    with torch.no_grad():
        for a, b in zip(eager(x, lengths), loaded(x, lengths), strict=True):
            assert (a - b).abs().max().item() <= 1e-5
