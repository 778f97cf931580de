"""Novelty: a recurrent variational autoencoder over LensNet's inputs, an estimation network and
a Gaussian mixture (after Tsang & Schultz 2019, "Deep neural network classifier for variable
stars with novelty detection capability"). Architecture only; training is
:mod:`model.train_novelty`.

The module takes exactly LensNet's input, ``(x (B, S, L, F), lengths (B, S))`` from
:func:`model.features.collate`, and works in four parts:

1. **Bins** (:meth:`NoveltyNet.bin`): each site's series averaged over consecutive steps into
   at most ``steps`` bins (a site with ``n <= steps`` points keeps every point), then
   standardised as LensNet does (buffers ``mean`` / ``std``, a missing column and padding ->
   0, clamp). The
   paper cuts light curves into fixed 200-point sequences; averaging keeps the whole season's
   shape (a Mira's cycle, an outburst, a rise) in a short sequence, which is what makes the
   encoder cheap on a CPU. Each bin also carries ``log1p(dt)``, the days since the previous
   bin (the paper's Δt input).
2. **Encoder / decoder**: one GRU shared by the three sites (run on (B * S, C) at once: one
   call pays the per-step overhead once, where LensNet pays it per branch) reads each site's
   bins; the states at each site's last bin, concatenated, give the embedding's mean and log
   variance (a VAE; the mean is the embedding used downstream). The decoder rebuilds each
   bin's flux from the embedding, the site and the bin's time and Δt, as the paper's does,
   but bin by bin (a small dense network) rather than with a second GRU: the reconstruction
   error is needed at inference (it feeds the estimation network), and a recurrent decoder
   would double the recurrent steps, the part of the cost that does not shrink with the
   light curve (BENCHMARKS.md, "Novelty and second opinion").
3. **Estimation network input** ``z``: the embedding (``embedding``), the paper's two
   reconstruction-error features (relative Euclidean distance and cosine similarity over the
   star's bins) and six summary features (mean, scatter, maximum and minimum of the binned
   flux, log10 of the points and of the days covered): the paper's auxiliary features.
4. **Estimation network + Gaussian mixture**: a hidden layer and a softmax over K components,
   one per training subclass (the paper's classes are variability types; LensNet's three
   classes pool twenty). The mixture's weights, means and covariances (buffers, fitted on the
   whole training set after training) give the sample energy
   ``E(z) = -log sum_k phi_k N(z | mu_k, Sigma_k)``, computed inside the module in float64.

Batch invariance: every step is per star and per site (averages, a causal GRU read at each
site's own last bin), so a star's outputs do not depend on the rest of its batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

import torch
from torch import Tensor, nn

#: Index of the flux and fitted-line features (see :data:`model.features.FEATURES`); the
#: scripted methods index time (0), flux (1) and flux_err (2) with literals, as TorchScript
#: cannot read module-level constants.
FLUX_INDEX: Final = 1
FITTED_INDEX: Final = 7
#: Summary features appended to the embedding and reconstruction errors (paper's z_a).
SUMMARY_NAMES: Final = ("flux_mean", "flux_std", "flux_max", "flux_min", "log_points", "log_days")


@dataclass(frozen=True)
class NoveltyConfig:
    """Model arguments, stored beside the weights and in the model card.

    Attributes
    ----------
    n_sites, n_features : LensNet's input shape (3 sites, 8 features).
    steps : bins per site (the sequence length the encoder sees).
    hidden : the encoder GRU's state size.
    decoder_hidden : width of the decoder's two hidden layers.
    embedding : size of the latent embedding (the paper's fiducial 16).
    estimation_hidden : hidden layer of the estimation network (paper: the embedding size).
    components : mixture components, one per training subclass.
    dropout : dropout of the estimation network (paper: 0.5).
    clamp : standardised inputs are clipped to +-clamp.
    ridge : added to the covariance diagonals (standardised feature units) for stability.
    """

    n_sites: int = 3
    n_features: int = 8
    steps: int = 32
    hidden: int = 32
    decoder_hidden: int = 32
    embedding: int = 16
    estimation_hidden: int = 16
    components: int = 23
    dropout: float = 0.5
    clamp: float = 10.0
    ridge: float = 1e-3

    @property
    def z_size(self) -> int:
        """Size of the estimation network's input: embedding + 2 errors + summaries."""
        return self.embedding + 2 + len(SUMMARY_NAMES)


class NoveltyNet(nn.Module):
    """Autoencoder + estimation network + mixture; see the module docstring."""

    __jit_ignored_attributes__: ClassVar[list[str]] = ["config"]

    def __init__(self, config: NoveltyConfig) -> None:
        super().__init__()
        self.config = config
        self.n_sites = config.n_sites
        self.steps = config.steps
        self.clamp = config.clamp
        self.embedding_size = config.embedding
        d, k = config.z_size, config.components
        self.register_buffer("mean", torch.zeros(config.n_features))
        self.register_buffer("std", torch.ones(config.n_features))
        self.register_buffer("gmm_log_phi", torch.full((k,), -math.log(k), dtype=torch.float64))
        self.register_buffer("gmm_mu", torch.zeros(k, d, dtype=torch.float64))
        # Sigma_k = L_k L_k^T; stored: L_k^{-1} and log det Sigma_k.
        self.register_buffer("gmm_chol_inv", torch.eye(d, dtype=torch.float64).repeat(k, 1, 1))
        self.register_buffer("gmm_log_det", torch.zeros(k, dtype=torch.float64))
        #: Energy above which a candidate is "unusual" (chosen on validation; see the card).
        self.register_buffer("energy_cut", torch.tensor(math.inf, dtype=torch.float64))
        inputs = config.n_features + 1  # + log1p(dt)
        self.encoder = nn.GRU(inputs, config.hidden, batch_first=True)
        self.to_latent = nn.Linear(config.n_sites * config.hidden, 2 * config.embedding)
        # decoder input per bin: embedding, site one-hot, standardised bin time, log1p(dt)
        self.decoder = nn.Sequential(
            nn.Linear(config.embedding + config.n_sites + 2, config.decoder_hidden),
            nn.Tanh(),
            nn.Linear(config.decoder_hidden, config.decoder_hidden),
            nn.Tanh(),
            nn.Linear(config.decoder_hidden, 1),
        )
        self.estimation = nn.Sequential(
            nn.Linear(d, config.estimation_hidden),
            nn.Tanh(),
            nn.Dropout(config.dropout),
            nn.Linear(config.estimation_hidden, k),
        )

    def set_standardisation(self, mean: Tensor, std: Tensor) -> None:
        """Set the (F,) training-set statistics; ``fitted`` takes those of ``flux`` (as in
        LensNet)."""
        mean = mean.clone().float()
        std = std.clone().float().clamp_min(1e-6)
        mean[FITTED_INDEX] = mean[FLUX_INDEX]
        std[FITTED_INDEX] = std[FLUX_INDEX]
        self.mean.copy_(mean)
        self.std.copy_(std)

    # ------------------------------------------------------------------------------ bins

    def bin(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Raw LensNet input -> bins.

        Parameters
        ----------
        x : (B, S, L, F) raw features, each site's ``lengths`` real steps first.
        lengths : (B, S) int64.

        Returns
        -------
        bins : (B, S, C, F + 1) float32: raw features averaged per bin, then standardised
            and clipped (a missing column -> 0), then ``log1p(dt)`` (days since the previous
            bin; 0 for the first); zeros past ``counts``.
        counts : (B, S) int64, bins per site, ``min(lengths, steps)``.
        sigma : (B, S, C) float32, the error of each bin's standardised flux (arcsinh error
            propagation at the bin's mean, divided by the square root of the points averaged):
            the reconstruction loss weights bins by ``1 / sigma`` (paper eq. 1).
        """
        b, s, length, f = x.shape
        c = self.steps
        counts = lengths.clamp(max=c)  # (B, S)
        n = lengths.unsqueeze(-1)  # (B, S, 1)
        steps = torch.arange(length, device=x.device).view(1, 1, length)
        valid = steps < n  # (B, S, L)
        # Step i of a site with n points goes to bin floor(((i + 1) m - 1) / n), m = min(n, C):
        # bin j holds steps [floor(j n / m), floor((j + 1) n / m)).
        index = ((steps + 1) * counts.unsqueeze(-1) - 1).clamp(min=0) // n.clamp(min=1)
        index = torch.where(valid, index, torch.full_like(index, c))  # padding: a spare bin
        # One pass over the input: its padding is zeros (collate's contract) and goes to the
        # spare bin anyway; a missing column's NaN makes its bins NaN, hence 0 below.
        sums = torch.zeros(b, s, c + 1, f, dtype=x.dtype, device=x.device)
        sums.scatter_add_(2, index.unsqueeze(-1).expand(-1, -1, -1, f), x)
        j = torch.arange(c, device=x.device).view(1, 1, c)
        per = counts.clamp(min=1).unsqueeze(-1)
        width = ((j + 1) * n // per - j * n // per) * (j < counts.unsqueeze(-1))  # (B, S, C)
        in_bin = width > 0
        averaged = sums[:, :, :c] / width.clamp(min=1).unsqueeze(-1).to(x.dtype)
        z = torch.nan_to_num((averaged - self.mean) / self.std, nan=0.0, posinf=0.0, neginf=0.0)
        z = z.clamp(-self.clamp, self.clamp) * in_bin.unsqueeze(-1).to(z.dtype)
        bin_time = averaged[..., 0].nan_to_num(0.0)  # (B, S, C) days
        dt = torch.cat([torch.zeros_like(bin_time[..., :1]), bin_time.diff(dim=-1)], dim=-1)
        dt = torch.where(in_bin, torch.log1p(dt.clamp(min=0.0)), torch.zeros_like(dt))
        # The bin mean's error in standardised flux units, from the bin's mean flux and error
        # (d arcsinh(u) = du / cosh(arcsinh u); flux_err is in units of the star's scale).
        flux_err = averaged[..., 2].nan_to_num(1.0)
        sigma = flux_err / torch.cosh(averaged[..., 1].nan_to_num(0.0).clamp(-20.0, 20.0))
        sigma = sigma / self.std[1] / width.clamp(min=1).to(x.dtype).sqrt()
        sigma = torch.where(in_bin, sigma.clamp(min=1e-3), torch.zeros_like(sigma))
        bins = torch.cat([z, dt.unsqueeze(-1)], dim=-1)
        return bins, counts, sigma

    # ------------------------------------------------------------------------------ autoencoder

    def encode(self, bins: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S, C, F + 1) bins -> embedding mean and log variance, (B, E) each."""
        b, s, c, f = bins.shape
        out, _ = self.encoder(bins.reshape(b * s, c, f))  # (B * S, C, H)
        last = (counts.reshape(b * s) - 1).clamp(min=0)
        index = last.view(-1, 1, 1).expand(-1, 1, out.shape[2])
        h = out.gather(1, index).squeeze(1).view(b, s, -1)  # (B, S, H)
        h = h * (counts > 0).unsqueeze(-1).to(h.dtype)
        latent = self.to_latent(h.flatten(1))  # (B, 2E)
        return latent[:, : self.embedding_size], latent[:, self.embedding_size :]

    def decode(self, embedding: Tensor, bins: Tensor) -> Tensor:
        """Embedding (B, E) and the bins' times -> reconstructed binned flux (B, S, C)."""
        b, s, c, f = bins.shape
        site = torch.eye(s, dtype=bins.dtype, device=bins.device).view(1, s, 1, s)
        inputs = torch.cat(
            [
                embedding.view(b, 1, 1, -1).expand(b, s, c, embedding.shape[1]),
                site.expand(b, s, c, s),
                bins[..., 0:1],
                bins[..., f - 1 : f],
            ],
            dim=-1,
        )
        return self.decoder(inputs).squeeze(-1)  # (B, S, C)

    def features(self, bins: Tensor, counts: Tensor, embedding: Tensor, rebuilt: Tensor) -> Tensor:
        """The estimation network's input z, (B, D): embedding, relative Euclidean
        reconstruction error, cosine similarity, summaries (paper eq. 2 and z_a)."""
        c = bins.shape[2]
        mask = (torch.arange(c, device=bins.device).view(1, 1, c) < counts.unsqueeze(-1)).to(
            bins.dtype
        )  # (B, S, C)
        flux = bins[..., 1] * mask
        rebuilt = rebuilt * mask
        eps = 1e-6
        norm = flux.square().sum(dim=(1, 2)).sqrt()  # (B,)
        norm_rebuilt = rebuilt.square().sum(dim=(1, 2)).sqrt()
        distance = (flux - rebuilt).square().sum(dim=(1, 2)).sqrt() / (norm + eps)
        cosine = (flux * rebuilt).sum(dim=(1, 2)) / (norm * norm_rebuilt + eps)
        n = mask.sum(dim=(1, 2)).clamp(min=1.0)
        mean = flux.sum(dim=(1, 2)) / n
        std = ((flux - mean.view(-1, 1, 1)).square() * mask).sum(dim=(1, 2)).div(n).sqrt()
        big = torch.full_like(flux, 1e4)
        high = torch.where(mask > 0, flux, -big).amax(dim=(1, 2))
        low = torch.where(mask > 0, flux, big).amin(dim=(1, 2))
        summary = torch.stack(
            [
                mean,
                std,
                high,
                low,
                torch.log10(counts.sum(dim=1).clamp(min=1).to(bins.dtype)),
                torch.log10(1.0 + self._days(bins, counts)),
            ],
            dim=1,
        )
        distance = distance.clamp(max=10.0)
        return torch.cat([embedding, distance.unsqueeze(1), cosine.unsqueeze(1), summary], dim=1)

    def _days(self, bins: Tensor, counts: Tensor) -> Tensor:
        """(B,) days between the first bin of the earliest site and the last observation."""
        time = bins[..., 0] * self.std[0] + self.mean[0]  # days
        first = torch.where(counts > 0, time[:, :, 0], torch.zeros_like(time[:, :, 0]))
        return (-first.amin(dim=1)).clamp(min=0.0)

    # ------------------------------------------------------------------------------ mixture

    def energy(self, z: Tensor) -> Tensor:
        """(B, D) -> (B,) sample energy under the fitted mixture (float64)."""
        diff = z.double().unsqueeze(1) - self.gmm_mu.unsqueeze(0)  # (B, K, D)
        y = torch.einsum("kde,bke->bkd", self.gmm_chol_inv, diff)
        mahalanobis = y.square().sum(dim=-1)  # (B, K)
        d = float(z.shape[1])
        log_density = (
            self.gmm_log_phi
            - 0.5 * mahalanobis
            - 0.5 * self.gmm_log_det
            - 0.5 * d * math.log(2.0 * math.pi)
        )
        return -torch.logsumexp(log_density, dim=1)

    def set_mixture(self, log_phi: Tensor, mu: Tensor, sigma: Tensor) -> None:
        """Fix the mixture: (K,) log weights, (K, D) means, (K, D, D) covariances (ridge
        added here)."""
        d = mu.shape[1]
        sigma = sigma.double() + self.config.ridge * torch.eye(d, dtype=torch.float64)
        chol = torch.linalg.cholesky(sigma)
        eye = torch.eye(d, dtype=torch.float64).expand_as(chol)
        self.gmm_log_phi.copy_(log_phi.double())
        self.gmm_mu.copy_(mu.double())
        self.gmm_chol_inv.copy_(torch.linalg.solve_triangular(chol, eye, upper=False))
        self.gmm_log_det.copy_(2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1))

    # ------------------------------------------------------------------------------ entry points

    def parts(
        self, bins: Tensor, counts: Tensor, sample: bool = False
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Training entry point on bins: ``(z (B, D), component logits (B, K), rebuilt flux
        (B, S, C), embedding mean (B, E), log variance (B, E))``; ``sample`` draws the VAE's
        embedding (training) instead of taking its mean."""
        mu, log_var = self.encode(bins, counts)
        embedding = mu
        if sample:
            embedding = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        rebuilt = self.decode(embedding, bins)
        z = self.features(bins, counts, mu, rebuilt)
        return z, self.estimation(z), rebuilt, mu, log_var

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Scores.

        Parameters
        ----------
        x : (B, S, L, F) float32 raw features (LensNet's input).
        lengths : (B, S) int64.

        Returns
        -------
        energy : (B,) float64 sample energy (higher: less like the training data).
        z : (B, D) float32 the estimation network's input (embedding first).
        gamma : (B, K) float32 membership probabilities of the components.
        """
        bins, counts, _ = self.bin(x, lengths)
        z, logits, _, _, _ = self.parts(bins, counts)
        return self.energy(z), z, torch.softmax(logits, dim=-1)

    if TYPE_CHECKING:  # for mypy only: TorchScript cannot resolve runtime annotations
        mean: Tensor
        std: Tensor
        gmm_log_phi: Tensor
        gmm_mu: Tensor
        gmm_chol_inv: Tensor
        gmm_log_det: Tensor
        energy_cut: Tensor


def batch_mixture(z: Tensor, gamma: Tensor, ridge: float) -> Tensor:
    """(B,) energies of a batch under the mixture fitted to it with memberships ``gamma`` (the
    DAGMM estimate used while training: Zong et al. 2018, eq. 5), float64."""
    z64, g = z.double(), gamma.double()
    weight = g.sum(dim=0) + 1e-9  # (K,)
    phi = weight / len(z64)
    mu = (g.t() @ z64) / weight.unsqueeze(1)  # (K, D)
    diff = z64.unsqueeze(1) - mu.unsqueeze(0)  # (B, K, D)
    sigma = torch.einsum("bk,bkd,bke->kde", g, diff, diff) / weight.view(-1, 1, 1)
    d = z64.shape[1]
    sigma = sigma + ridge * torch.eye(d, dtype=torch.float64)
    chol = torch.linalg.cholesky(sigma)
    y = torch.linalg.solve_triangular(chol, diff.permute(1, 2, 0), upper=False)  # (K, D, B)
    mahalanobis = y.square().sum(dim=1).t()  # (B, K)
    log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    log_density = (
        torch.log(phi) - 0.5 * mahalanobis - 0.5 * log_det - 0.5 * d * math.log(2 * math.pi)
    )
    return -torch.logsumexp(log_density, dim=1)
