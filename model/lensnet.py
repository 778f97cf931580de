"""LensNet: a branched LSTM classifier of AlertFinder candidates (architecture only).

One LSTM branch per site reads that site's series of raw features (see
:data:`model.features.FEATURES`); the branch states at the last valid step are concatenated and
go through a dense trunk to two heads: a binary logit (No vs Yes + Maybe) and three class
logits in the order of :data:`CLASS_NAMES` (No, Maybe, Yes). Standardisation lives inside the
module (buffers ``mean`` and ``std``, shape (F,)), so the exported TorchScript artifact takes raw
features and nothing about preprocessing statistics can drift between training and serving.

Input conventions: ``x`` is (B, S, L, F), each site's series left-aligned (its real steps
first, zeros after them), ``lengths`` (B, S) the real steps per site. Padded LSTMs rather than
packed sequences (packing is 2-110x slower on CPU), read at each branch's own last valid step
``lengths - 1``: an LSTM is causal, so its state there does not depend on the padding after it,
and a star scores the same alone or in any batch, whatever the others' lengths (exactly, up to
float rounding of the batched matrix products; tested to 1e-5). The paper pads on the left and
reads the last step; then the branch runs through a "warm-up" of padding that depends on the
batch's longest member, which moved one star's score from 0.49 alone to 0.99 in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

import torch
from torch import Tensor, nn

#: Order of the 3-class head and of ``p_class``.
CLASS_NAMES: Final = ("NO", "MAYBE", "YES")
#: Index of ``flux`` and of ``fitted`` among the features: the fitted line is standardised with
#: the flux statistics (paper §5.4) so that it stays comparable to the flux.
FLUX_INDEX: Final = 1
FITTED_INDEX: Final = 7


@dataclass(frozen=True)
class LensNetConfig:
    """Model arguments, stored beside the weights in checkpoints and the model card.

    Attributes
    ----------
    n_sites : branches (3: CTIO, SAAO, SSO).
    n_features : features per step (8, see :data:`model.features.FEATURES`).
    hidden : LSTM state size per branch.
    dense : width of the dense trunk.
    dropout : dropout in the trunk (training only).
    clamp : standardised inputs are clipped to +-clamp (robust to wild values).
    """

    n_sites: int = 3
    n_features: int = 8
    hidden: int = 32
    dense: int = 64
    dropout: float = 0.3
    clamp: float = 10.0


class LensNet(nn.Module):
    """The branched LSTM. Call with raw features; see the module docstring for conventions."""

    # The config dataclass is Python-side bookkeeping (checkpoints, model card), not scripted.
    __jit_ignored_attributes__: ClassVar[list[str]] = ["config"]

    def __init__(self, config: LensNetConfig) -> None:
        super().__init__()
        self.config = config
        self.n_sites = config.n_sites
        self.hidden = config.hidden
        self.clamp = config.clamp
        self.register_buffer("mean", torch.zeros(config.n_features))
        self.register_buffer("std", torch.ones(config.n_features))
        self.branches = nn.ModuleList(
            [
                nn.LSTM(config.n_features, config.hidden, batch_first=True)
                for _ in range(config.n_sites)
            ]
        )
        self.trunk = nn.Sequential(
            nn.Linear(config.n_sites * config.hidden, config.dense),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.dense, config.dense),
            nn.ReLU(),
            nn.Dropout(config.dropout),
        )
        self.binary_head = nn.Linear(config.dense, 1)
        self.class_head = nn.Linear(config.dense, len(CLASS_NAMES))

    def set_standardisation(self, mean: Tensor, std: Tensor) -> None:
        """Set the (F,) training-set statistics; ``fitted`` takes those of ``flux``."""
        mean = mean.clone().float()
        std = std.clone().float().clamp_min(1e-6)
        mean[FITTED_INDEX] = mean[FLUX_INDEX]
        std[FITTED_INDEX] = std[FLUX_INDEX]
        self.mean.copy_(mean)
        self.std.copy_(std)

    def standardise(self, x: Tensor, lengths: Tensor) -> Tensor:
        """(B, S, L, F) raw -> standardised; NaN (missing column) and padded steps -> 0."""
        length = x.shape[2]
        z = (x - self.mean) / self.std  # (B, S, L, F)
        z = torch.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)
        z = z.clamp(-self.clamp, self.clamp)
        steps = torch.arange(length, device=x.device)  # (L,)
        valid = steps.view(1, 1, length) < lengths.unsqueeze(-1)  # (B, S, L)
        return z * valid.unsqueeze(-1).to(z.dtype)

    def encode(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Branch states at each site's last valid step, (B, S, H); zero for sites without
        data."""
        z = self.standardise(x, lengths)  # (B, S, L, F)
        last = (lengths - 1).clamp(min=0)  # (B, S)
        states = []
        for site, branch in enumerate(self.branches):
            out, _ = branch(z[:, site])  # (B, L, H)
            index = last[:, site].view(-1, 1, 1).expand(-1, 1, out.shape[2])  # (B, 1, H)
            states.append(out.gather(1, index).squeeze(1))  # (B, H)
        h = torch.stack(states, dim=1)  # (B, S, H)
        return h * (lengths > 0).unsqueeze(-1).to(h.dtype)

    def heads(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """(…, S, H) branch states -> binary logit (…,) and class logits (…, 3)."""
        flat = h.flatten(-2)  # (…, S * H)
        trunk = self.trunk(flat)  # (…, D)
        return self.binary_head(trunk).squeeze(-1), self.class_head(trunk)

    def logits(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training entry point: binary logit (B,), class logits (B, 3) and per-site binary
        logits (B, S) (each site's branch state alone, as ``site_scores``)."""
        h = self.encode(x, lengths)  # (B, S, H)
        binary, classes = self.heads(h)
        site_binary, _ = self.heads(self.alone(h))  # (B, S)
        return binary, classes, site_binary

    def alone(self, h: Tensor) -> Tensor:
        """(B, S, H) branch states -> (B, S, S, H): for each site, only its state kept."""
        eye = torch.eye(self.n_sites, dtype=h.dtype, device=h.device)  # (S, S)
        return h.unsqueeze(1) * eye.view(1, self.n_sites, self.n_sites, 1)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Probabilities.

        Parameters
        ----------
        x : (B, S, L, F) float32, raw features, each site's steps first, zeros after.
        lengths : (B, S) int64, real steps per site.

        Returns
        -------
        p_event : (B,) probability of Yes or Maybe (binary head).
        p_class : (B, 3) probabilities of No, Maybe, Yes (class head).
        site_scores : (B, S) per-site attribution: the binary probability when only that
            site's branch state is kept and the others are zeroed (as for a site without
            data); cheap, since the branch states are computed once. Trained against per-site
            labels (does this site's own data show the rise?), so a flat site scores low.
        """
        h = self.encode(x, lengths)  # (B, S, H)
        binary, classes = self.heads(h)  # (B,), (B, 3)
        site_binary, _ = self.heads(self.alone(h))  # (B, S)
        return torch.sigmoid(binary), torch.softmax(classes, dim=-1), torch.sigmoid(site_binary)

    if TYPE_CHECKING:  # for mypy only: no runtime annotation, which TorchScript cannot resolve
        mean: Tensor  # (F,) buffer
        std: Tensor  # (F,) buffer
