"""Published fixes to DARTS collapse, as the search job applies them (switches in
:class:`nas.search.config.StabilizeConfig`).

- β-DARTS (Ye et al., CVPR 2022): :func:`beta_regularizer`, λ·mean over edges of
  logsumexp(α), added to the architecture loss; its gradient is λ·softmax(α)/#edges, so it
  pulls every α row down in proportion to its softmax and keeps the rows from saturating.
- SDARTS-RS (Chen & Hsieh, ICML 2020): :func:`smoothed_weights`, the weight step's mixing
  weights softmax(α) + U[-ε, ε], clipped to [0, 1] and renormalized per edge.

- DrNAS (Chen et al., ICLR 2021): :func:`dirichlet_concentration` maps α to a positive
  concentration elu(α) + 1; the forward mixes with a reparameterized sample of
  Dirichlet(concentration) (:func:`dirichlet_sample`), the derivation reads the Dirichlet
  mean, and :func:`dirichlet_kl` (KL to the uniform Dirichlet(1)) regularizes α.
- DARTS- (Chu et al., ICLR 2021) lives in the supernet cells (``aux_skip``).

β-DARTS and SDARTS-RS ramp their strength linearly over the search (:func:`ramp`), as
the papers' code does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Dirichlet, kl_divergence

__all__ = ["RS_EPSILON_START", "ramp", "beta_regularizer", "rs_noise", "smoothed_weights",
           "dirichlet_concentration", "dirichlet_mean", "dirichlet_sample", "dirichlet_kl"]

#: SDARTS-RS's ε at epoch 0; it grows linearly to the configured ε at the last epoch.
RS_EPSILON_START = 0.03


def ramp(final: float, epoch: int, epochs: int, start: float = 0.0) -> float:
    """``start`` at epoch 0, ``final`` at the last epoch (``epochs - 1``), linear between."""
    if epochs <= 1:
        return final
    return start + (final - start) * min(epoch, epochs - 1) / (epochs - 1)


def beta_regularizer(alphas: list[torch.Tensor]) -> torch.Tensor:
    """β-DARTS's term: the mean over every edge (rows of the α matrices) of logsumexp(α)."""
    return torch.cat([a.reshape(-1, a.shape[-1]) for a in alphas]).logsumexp(-1).mean()


def rs_noise(alphas: dict[bool, torch.Tensor], epsilon: float) -> dict[bool, torch.Tensor]:
    """U[-ε, ε] noise shaped like each cell type's α, on its device (the global RNG)."""
    return {r: (torch.rand_like(a, dtype=torch.float32) * 2 - 1).mul_(epsilon).detach()
            for r, a in alphas.items()}


def smoothed_weights(weights: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``weights`` (softmax(α), edges × ops) plus ``noise``, clipped to [0, 1] and each row
    renormalized to sum 1; a row clipped to all zeros becomes one-hot on its largest weight
    (SDARTS's rule). Gradients flow to α through ``weights``."""
    w = (weights + noise).clamp(0, 1)
    total = w.sum(-1, keepdim=True)
    # scatter, not F.one_hot: one_hot checks its indices on the host (a device sync)
    onehot = torch.zeros_like(w).scatter_(-1, weights.argmax(-1, keepdim=True), 1.0)
    return torch.where(total > 0, w / total.clamp_min(1e-12), onehot)


def dirichlet_concentration(alpha: torch.Tensor) -> torch.Tensor:
    """DrNAS's positive map from α to the Dirichlet concentration: elu(α) + 1 (> 0)."""
    return F.elu(alpha) + 1


def dirichlet_mean(alpha: torch.Tensor) -> torch.Tensor:
    """The mean mixing weights of DrNAS's Dirichlet: concentration / its row sum."""
    c = dirichlet_concentration(alpha)
    return c / c.sum(-1, keepdim=True)


def dirichlet_sample(alpha: torch.Tensor) -> torch.Tensor:
    """One reparameterized draw of the mixing weights per edge (implicit reparameterization
    gradients flow to α); ``validate_args=False``: the check would read a tensor back."""
    return Dirichlet(dirichlet_concentration(alpha), validate_args=False).rsample()


def dirichlet_kl(alphas: list[torch.Tensor]) -> torch.Tensor:
    """Σ over edges of KL(Dirichlet(elu(α)+1) ‖ Dirichlet(1)), DrNAS's regularizer."""
    terms = []
    for a in alphas:  # in α's dtype
        c = dirichlet_concentration(a)
        q = Dirichlet(c, validate_args=False)
        p = Dirichlet(torch.ones_like(c), validate_args=False)
        terms.append(kl_divergence(q, p).sum())
    return torch.stack(terms).sum()
