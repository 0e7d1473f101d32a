"""Pure anomaly scores of logits over dim=1; higher = more anomalous.

Every function accepts logits of shape (N, C) or (N, C, H, W) (any float dtype), computes in
float32 and returns (N,) or (N, H, W) float32.
"""

from __future__ import annotations

import torch

from hazardseg.errors import HazardsegError


def _as_float32(logits: torch.Tensor) -> torch.Tensor:
    if logits.dim() < 2:
        raise HazardsegError(
            "anomaly score: expected logits of shape (N, C) or (N, C, H, W), "
            f"got {tuple(logits.shape)}"
        )
    return logits.float()


def msp(logits: torch.Tensor) -> torch.Tensor:
    """Negative maximum softmax probability."""
    z = _as_float32(logits)
    return -torch.softmax(z, dim=1).amax(dim=1)


def max_logit(logits: torch.Tensor) -> torch.Tensor:
    """Negative maximum logit."""
    z = _as_float32(logits)
    return -z.amax(dim=1)


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Energy ``-T * logsumexp(z / T)`` (the free energy; large for anomalies)."""
    if temperature <= 0:
        raise HazardsegError(f"energy: temperature must be > 0, got {temperature}")
    z = _as_float32(logits)
    return -temperature * torch.logsumexp(z / temperature, dim=1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of the softmax distribution."""
    z = _as_float32(logits)
    logp = torch.log_softmax(z, dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def rba(logits: torch.Tensor) -> torch.Tensor:
    """RbA, "Rejected by All" (Nayal et al., ICCV 2023): ``-sum_c tanh(s_c)`` of a
    mask-classification model's semantic map ``s`` (NazirNayal8/RbA ``evaluate_ood.py``)."""
    z = _as_float32(logits)
    return -torch.tanh(z).sum(dim=1)
