"""Outlier-exposure objectives on the segmentation logits (pure functions of logits and
labels), added to the segmentation loss when ``train.outliers`` pastes negatives.

Outlier pixels carry :data:`~hazardseg.data.labels.OUTLIER_INDEX`; inlier pixels are those of
a known class ``0..K-1``; everything else (ignore, anomaly labels) takes no part.

* ``energy`` (Liu et al. 2020, "Energy-based out-of-distribution detection", as PEBAL and RPL
  use it): ``E = -logsumexp(z)``; ``mean_in relu(E - m_in)^2 + mean_out relu(m_out - E)^2``
  (the outlier term only when the batch holds outlier pixels), the objective of
  wetliu/energy_ood's ``train.py``.
* ``entropy`` (Hendrycks et al. 2019 outlier exposure, the ``OE`` option of energy_ood's
  ``train.py``; Meta-OoD's outlier term): cross-entropy of outlier pixels to the uniform
  distribution, ``mean_out (logsumexp(z) - mean_k z_k)``, maximising their softmax entropy.
* ``extra_class``: outliers as a (K+1)-th class whose logit is fixed at 0: cross-entropy over
  ``[z_1..z_K, 0]`` on inlier and outlier pixels. The model keeps its K outputs (every
  method, export and report works on it); rejecting means all K logits low, i.e. high energy.
* ``rba`` (mask-classification models; NazirNayal8/RbA ``criterion.py`` ``outlier_loss`` with
  ``nls``, ``tanh``, ``squared_hinge``): the RbA score ``S = -sum_c tanh(s_c)`` of the
  semantic map at the mask resolution, bilinearly upsampled (``align_corners=True``) to the
  label's; ``1/2 [mean_in relu(S - m_in)^2 + mean_out relu(m_out - S)^2]`` (without the half
  and the outlier term when the batch holds no outlier pixel).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from hazardseg.data.labels import OUTLIER_INDEX
from hazardseg.errors import ConfigError
from hazardseg.models.mask2former import semantic_map


def _pixels(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Logits (P, K) of the inlier and outlier pixels, at the target's resolution."""
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    k = logits.shape[1]
    flat = logits.float().permute(0, 2, 3, 1).reshape(-1, k)
    t = target.reshape(-1)
    return flat[(t >= 0) & (t < k)], flat[t == OUTLIER_INDEX], t[(t >= 0) & (t < k)]


def energy_margin_loss(
    logits: torch.Tensor, target: torch.Tensor, m_in: float, m_out: float
) -> torch.Tensor:
    """``mean_in relu(E - m_in)^2 + mean_out relu(m_out - E)^2`` with ``E = -logsumexp(z)``."""
    z_in, z_out, _ = _pixels(logits, target)
    loss = logits.float().sum() * 0.0
    if z_in.numel():
        loss = loss + F.relu(-torch.logsumexp(z_in, dim=1) - m_in).pow(2).mean()
    if z_out.numel():
        loss = loss + F.relu(m_out + torch.logsumexp(z_out, dim=1)).pow(2).mean()
    return loss


def uniform_entropy_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the outlier pixels to the uniform distribution (0 without any)."""
    _, z_out, _ = _pixels(logits, target)
    if not z_out.numel():
        return logits.float().sum() * 0.0
    return (torch.logsumexp(z_out, dim=1) - z_out.mean(dim=1)).mean()


def extra_class_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the K logits and a constant 0 logit for "outlier"."""
    z_in, z_out, t_in = _pixels(logits, target)
    z = torch.cat([z_in, z_out])
    if not z.numel():
        return logits.float().sum() * 0.0
    labels = torch.cat([t_in, torch.full((z_out.shape[0],), z.shape[1], device=z.device)])
    padded = torch.cat([z, torch.zeros_like(z[:, :1])], dim=1)
    return F.cross_entropy(padded, labels.long())


def rba_outlier_loss(
    semantic: torch.Tensor, target: torch.Tensor, m_in: float, m_out: float
) -> torch.Tensor:
    """RbA's squared-hinge outlier loss on a semantic map ``(N, K, h, w)`` (module docstring)."""
    score = -semantic.float().tanh().sum(dim=1, keepdim=True)
    score = F.interpolate(score, size=target.shape[-2:], mode="bilinear", align_corners=True)[:, 0]
    k = semantic.shape[1]
    s_in = score[(target >= 0) & (target < k)]
    s_out = score[target == OUTLIER_INDEX]
    loss = F.relu(s_in - m_in).pow(2).mean() if s_in.numel() else score.sum() * 0.0
    if s_out.numel():
        loss = 0.5 * (loss + F.relu(m_out - s_out).pow(2).mean())
    return loss


class OutlierObjective(torch.nn.Module):
    """``weight *`` one of the objectives above, on a model's outputs: the main logits, or
    (``rba``) the semantic map of its queries at the mask resolution."""

    def __init__(self, objective: str, weight: float, m_in: float = -12.0, m_out: float = -6.0):
        super().__init__()
        self.objective, self.weight, self.m_in, self.m_out = objective, weight, m_in, m_out

    def forward(self, outputs: dict[str, Any], target: torch.Tensor) -> torch.Tensor:
        logits = outputs["out"]
        if self.objective == "rba":
            q = outputs.get("queries")
            if q is None:
                raise ConfigError(
                    "train.outliers.objective=rba needs a mask-classification model (mask2former_*)"
                )
            masks = q["masks"]  # the semantic map at the mask resolution, as RbA's criterion
            semantic = semantic_map(q["class"], masks, tuple(masks.shape[-2:]))
            loss = rba_outlier_loss(semantic, target, self.m_in, self.m_out)
        elif self.objective == "energy":
            loss = energy_margin_loss(logits, target, self.m_in, self.m_out)
        elif self.objective == "entropy":
            loss = uniform_entropy_loss(logits, target)
        else:
            loss = extra_class_loss(logits, target)
        return self.weight * loss
