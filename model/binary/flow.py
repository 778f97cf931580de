"""The binary-lens posterior network: a light-curve encoder and a conditional spline flow.

Architecture only (training in :mod:`model.binary.train`, inference in
:mod:`model.binary.posterior`). After Zhang et al. (seed paper 002): a normalizing flow over
the lens parameters conditioned on a learned embedding of the light curve. Differences, each
for the CPU budget and the 50 ms / 1000-sample target: a dilated residual 1-D CNN with masked
mean and max pooling instead of a ResNet-GRU (irregular times enter as a feature); a neural
spline flow (zuko ``NSF``) with coupling masks (``passes=2``: sampling costs two network
passes per transform instead of one per parameter) and a Gaussian base instead of a 20-block
MAF with a Gaussian-mixture base (the rational-quadratic splines carry the multi-modality).

The flow works on unbounded coordinates: each parameter's prior box
(:data:`model.binary.simulate.LOW`, ``HIGH``) is mapped to (0, 1) and through a logit, divided
by :data:`_LOGIT_SCALE` (the logistic distribution's standard deviation) so a uniform prior is
near unit variance. Samples therefore never leave the prior's support.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import torch
import zuko
from torch import Tensor, nn
from torch.distributions import Transform
from zuko.distributions import DiagNormal
from zuko.flows.autoregressive import MaskedAutoregressiveTransform
from zuko.lazy import Flow, UnconditionalDistribution
from zuko.transforms import DependentTransform, MonotonicRQSTransform
from zuko.utils import unpack

from model.binary.inputs import N_POINT_FEATURES
from model.binary.simulate import HIGH, LOW, PARAMETERS

_LOGIT_SCALE: Final = math.pi / math.sqrt(3.0)
_EDGE: Final = 1e-6
#: Typical log10 of a star's median flux error (DIA units), subtracted from the global feature.
_LOG_SCALE_CENTRE: Final = 2.0
#: The splines' minimum slope (zuko's default for ``NSF``).
_SPLINE_SLOPE: Final = 1e-3


@dataclass(frozen=True)
class FlowConfig:
    """Model arguments (stored beside the weights).

    channels : width of the CNN; downsamplings : stride-2 convolutions (kernel 5) before the
    residual blocks, each halving the sequence; dilations : one residual block per dilation
    (kernel 5); embedding : size of the light-curve embedding; transforms : spline-flow
    transforms; hidden : width of each transform's two hidden layers; bins : spline bins.
    """

    channels: int = 32
    downsamplings: int = 2
    dilations: tuple[int, ...] = (1, 2, 4)
    embedding: int = 64
    transforms: int = 4
    hidden: int = 64
    bins: int = 8


class LightCurveEncoder(nn.Module):
    """(B, L, 6) points, (B, L) mask, (B, 1) log flux scale -> (B, embedding)."""

    def __init__(self, config: FlowConfig) -> None:
        super().__init__()
        c = config.channels
        self.lift = nn.Conv1d(N_POINT_FEATURES, c, kernel_size=1)
        self.down = nn.ModuleList(
            nn.Conv1d(c, c, kernel_size=5, stride=2, padding=2) for _ in range(config.downsamplings)
        )
        self.blocks = nn.ModuleList(
            nn.Conv1d(c, c, kernel_size=5, padding=2 * d, dilation=d) for d in config.dilations
        )
        self.head = nn.Sequential(
            nn.Linear(2 * c + 1, config.embedding),
            nn.GELU(),
            nn.Linear(config.embedding, config.embedding),
        )

    def forward(self, points: Tensor, mask: Tensor, log_flux_scale: Tensor) -> Tensor:
        keep = mask[:, None, :]  # (B, 1, L)
        weight = keep.to(points.dtype)
        h = self.lift(points.transpose(1, 2)) * weight  # (B, C, L)
        for conv in self.down:
            # Real points come first, so the stride-2 output i (centred on input 2 i) is real
            # exactly where input 2 i is.
            keep = keep[:, :, ::2]
            weight = keep.to(points.dtype)
            h = nn.functional.gelu(conv(h)) * weight  # (B, C, L / 2)
        for conv in self.blocks:
            h = (h + nn.functional.gelu(conv(h))) * weight
        mean = h.sum(-1) / weight.sum(-1).clamp(min=1.0)  # (B, C)
        peak = h.masked_fill(~keep, -1e4).amax(-1)  # (B, C)
        return self.head(torch.cat([mean, peak, log_flux_scale - _LOG_SCALE_CENTRE], dim=1))


def spline_flow(config: FlowConfig) -> Flow:
    """zuko's ``NSF(8, embedding, transforms, bins, hidden_features=(hidden, hidden),
    passes=2)``, built from :class:`_Autoregressive` and :class:`_Spline`: the same modules and
    state dict (an artifact trained with either loads in both), the same draws to float
    rounding, ~40 % less time per draw (BENCHMARKS.md) and no sympy import at the first draw
    (~2.5 s without bytecode files, ~0.5 s with)."""
    features = len(PARAMETERS)
    orders = [torch.arange(features), torch.flipud(torch.arange(features))]
    transforms = [
        _Autoregressive(
            features=features,
            context=config.embedding,
            order=orders[i % 2],
            univariate=partial(_Spline, slope=_SPLINE_SLOPE),
            shapes=[(config.bins,), (config.bins,), (config.bins - 1,)],
            hidden_features=(config.hidden, config.hidden),
            passes=2,
        )
        for i in range(config.transforms)
    ]
    base = UnconditionalDistribution(
        DiagNormal, loc=torch.zeros(features), scale=torch.ones(features), buffer=True
    )
    return Flow(transforms, base)


def zukos_nsf(config: FlowConfig) -> zuko.flows.NSF:
    """zuko's own NSF of ``config``, which :func:`spline_flow` reproduces (tests, benchmarks);
    an artifact's ``flow`` state dict loads into it."""
    return zuko.flows.NSF(
        features=len(PARAMETERS),
        context=config.embedding,
        transforms=config.transforms,
        bins=config.bins,
        hidden_features=(config.hidden, config.hidden),
        passes=2,
    )


class _Autoregressive(MaskedAutoregressiveTransform):
    """zuko's masked autoregressive transform, joining the context without
    ``torch.broadcast_shapes``: its first call imports sympy (~2.5 s in every daemon start)."""

    def meta(self, c: Tensor | None, x: Tensor) -> Transform:
        if c is not None:
            batch = _batch_shape(x, c)
            x = torch.cat((x.expand(*batch, -1), c.expand(*batch, -1)), dim=-1)
        phi = unpack(self.hyper(x).unflatten(-1, (-1, self.total)), self.shapes)
        return DependentTransform(self.univariate(*phi), 1)


def _batch_shape(*tensors: Tensor) -> torch.Size:
    """The broadcast shape of the tensors' leading dimensions (all but the last)."""
    return torch.broadcast_tensors(*(t[..., 0] for t in tensors))[0].shape


class _Spline(MonotonicRQSTransform):
    """zuko's monotonic rational-quadratic spline with its bin softmax written as exp / sum.

    torch's CPU softmax over a last dimension of 8 (our bins) is ~3x slower than the explicit
    form (torch 2.15, one thread: 1.3 ms against 0.44 ms for (1000, 8, 8)); it was a third of
    the daemon's posterior stage. Same transform, same values to float rounding. Its
    :meth:`bin` avoids an import of sympy.

    widths, heights : unconstrained bin widths and heights, (..., K); derivatives : unconstrained
    inner knot derivatives, (..., K - 1); bound : the spline's domain [-bound, bound];
    slope : the minimum slope.
    """

    def __init__(
        self,
        widths: Tensor,
        heights: Tensor,
        derivatives: Tensor,
        bound: float = 5.0,
        slope: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        Transform.__init__(self, **kwargs)
        limit = math.log(slope)
        widths = _softmax(widths / (1 + abs(2 * widths / limit)))
        heights = _softmax(heights / (1 + abs(2 * heights / limit)))
        derivatives = derivatives / (1 + abs(derivatives / limit))
        # knots from -bound to bound: cumulative bin sizes with a leading zero
        self.horizontal = bound * (2 * torch.cumsum(nn.functional.pad(widths, (1, 0)), -1) - 1)
        self.vertical = bound * (2 * torch.cumsum(nn.functional.pad(heights, (1, 0)), -1) - 1)
        self.derivatives = torch.exp(nn.functional.pad(derivatives, (1, 1)))

    def bin(self, k: Tensor) -> tuple[Tensor, ...]:
        """Bin ``k``'s edges (x0, x1), values (y0, y1), knot slopes (d0, d1), the bin's mean
        slope s and whether k is a bin (mask), each of k's shape broadcast with the spline's.

        As zuko's, without ``torch.broadcast_shapes`` (see :class:`_Autoregressive`)."""
        shape = _batch_shape(k[..., None], self.horizontal)
        mask = (k >= 0) & (k < self.bins)
        k = k % self.bins
        edges = torch.stack((k, k + 1), dim=-1).expand(*shape, 2)

        def ends(knots: Tensor) -> tuple[Tensor, Tensor]:
            first, second = knots.expand(*shape, -1).gather(-1, edges).unbind(-1)
            return first, second

        x0, x1 = ends(self.horizontal)
        y0, y1 = ends(self.vertical)
        d0, d1 = ends(self.derivatives)
        return mask, x0, x1, y0, y1, d0, d1, (y1 - y0) / (x1 - x0)


def _softmax(x: Tensor) -> Tensor:
    """Softmax over the last dimension, (..., K) -> (..., K)."""
    e = torch.exp(x - x.amax(-1, keepdim=True))
    return e / e.sum(-1, keepdim=True)


class BinaryFlow(nn.Module):
    """p(theta | light curve) over :data:`model.binary.simulate.PARAMETERS`."""

    low: Tensor
    high: Tensor

    def __init__(self, config: FlowConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = LightCurveEncoder(config)
        self.flow = spline_flow(config)
        self.register_buffer("low", torch.tensor(LOW, dtype=torch.float32))
        self.register_buffer("high", torch.tensor(HIGH, dtype=torch.float32))

    def to_unbounded(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """(z, log|dz/dtheta|): theta (..., 8) in the prior box -> z (..., 8); log-det (...)."""
        u = ((theta - self.low) / (self.high - self.low)).clamp(_EDGE, 1.0 - _EDGE)
        z = torch.logit(u) / _LOGIT_SCALE
        log_det = -torch.log(u * (1.0 - u) * (self.high - self.low) * _LOGIT_SCALE)
        return z, log_det.sum(-1)

    def to_bounded(self, z: Tensor) -> Tensor:
        """Inverse of :meth:`to_unbounded`: (..., 8) -> (..., 8)."""
        return self.low + torch.sigmoid(z * _LOGIT_SCALE) * (self.high - self.low)

    def embed(self, points: Tensor, mask: Tensor, log_flux_scale: Tensor) -> Tensor:
        """(B, L, 6), (B, L) bool, (B, 1) -> (B, embedding)."""
        return self.encoder(points, mask, log_flux_scale)

    def log_prob(
        self, theta: Tensor, points: Tensor, mask: Tensor, log_flux_scale: Tensor
    ) -> Tensor:
        """log p(theta | light curve), theta (B, 8) -> (B,), density in theta's own units."""
        z, log_det = self.to_unbounded(theta)
        context = self.embed(points, mask, log_flux_scale)
        return self.flow(context).log_prob(z) + log_det

    def sample(
        self, embedding: Tensor, n_samples: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n_samples`` draws per light curve: embedding (B, E) -> theta (n_samples, B, 8).
        ``generator``: draw the base noise from it (the same numbers as torch's global
        generator seeded alike) rather than from the process-wide one, which any module built
        in another thread also draws from."""
        distribution = self.flow(embedding)
        if generator is None:
            return self.to_bounded(distribution.sample((n_samples,)))
        base = distribution.base
        noise = torch.empty((n_samples, *base.batch_shape, *base.event_shape))
        noise.normal_(generator=generator)
        with torch.no_grad():
            z = distribution.transform.inv(base.mean + noise * base.stddev)
        return self.to_bounded(z)
