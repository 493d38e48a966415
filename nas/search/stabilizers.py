"""Published fixes to DARTS collapse, as the search job applies them (switches in
:class:`nas.search.config.StabilizeConfig`).

- β-DARTS (Ye et al., CVPR 2022): :func:`beta_regularizer`, λ·mean over edges of
  logsumexp(α), added to the architecture loss; its gradient is λ·softmax(α)/#edges, so it
  pulls every α row down in proportion to its softmax and keeps the rows from saturating.
- SDARTS-RS (Chen & Hsieh, ICML 2020): :func:`smoothed_weights`, the weight step's mixing
  weights softmax(α) + U[-ε, ε], clipped to [0, 1] and renormalized per edge.

Both ramp their strength linearly over the search (:func:`ramp`), as the papers' code does.
"""

from __future__ import annotations

import torch

__all__ = ["RS_EPSILON_START", "ramp", "beta_regularizer", "rs_noise", "smoothed_weights"]

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
