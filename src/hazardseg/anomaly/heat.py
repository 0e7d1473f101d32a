"""``heat``: hazardseg's "Hybrid Energy-Adaptive Thresholding" score (the reference run's hybrid).

Not HEAT of Lafon et al. (ICML 2023, "Hybrid Energy Based Model in the Feature Space for
Out-of-Distribution Detection"), which learns an energy correction in feature space; nothing
here is trained. This is a fitted, training-free sum of three z-normalised per-pixel terms:

1. energy ``E = -T * logsumexp(z / T)`` of the logits ``z`` (temperature ``T``);
2. Mahalanobis distance ``M`` of the pixel's feature vector to the nearest class mean, with
   class means grouped by the PREDICTED class and one shared (tied) covariance, whitened on its
   top ``num_components`` eigenvectors (eigenvalues floored by ``shrinkage`` times their mean);
3. spatial-consistency KL ``K = KL(p || mean of p over the k x k neighbourhood)`` (replicate
   borders) of the softmax ``p``, weighted by the reliability ``r`` = the pixel's max softmax
   (``reliability="none"``: r = 1).

Score: ``w_energy * z(E) + w_mahalanobis * z(M) + w_kl * r * z(K)``, ``z`` the z-score with the
mean / std of each term over all fitting pixels. The "thresholding" of the name is not part of
the score: thresholds come from the same calibration as every other method.

Fitting (one streamed pass over the fitting images, model predictions only, ground truth
unused; see :func:`hazardseg.anomaly.base.fit_methods`):
1. class means of the feature vectors grouped by the predicted class at feature resolution
   (logits resized to the feature map with antialiased bilinear interpolation, then argmax) and
   their tied within-class covariance, accumulated in float64, give the whitening projection W
   (D x k) so that the Mahalanobis distance is computed in k dimensions per pixel;
2. mean and std of each term: energy and KL over all fitting pixels (exact, in the pass); the
   Mahalanobis term, which needs W, over the pixels of a sample of at most ``NORM_IMAGES``
   whole fitting images (all of them when there are fewer; chosen by a hash of their features,
   so independent of batch order; at most ``NORM_ELEMENTS`` stored feature values), computed
   after the pass.

M and K are computed on the feature grid (K from the logits average-pooled to it, where
neighbours are distinct network outputs) and bilinearly upsampled to the logits' resolution;
E and r are per pixel. Every operation is per image, so scores do not depend on batch size or
order.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from hazardseg.anomaly.base import AnomalyMethod
from hazardseg.anomaly.filters import box_mean_replicate, resize_map
from hazardseg.anomaly.registry import register_method
from hazardseg.anomaly.sampling import BottomK, feature_keys
from hazardseg.anomaly.scores import energy as energy_score
from hazardseg.errors import HazardsegError

COMPONENTS = ("energy", "mahalanobis", "kl")
NORM_IMAGES = 64
"""Most fitting images whose feature maps are kept to normalise the Mahalanobis term."""
NORM_ELEMENTS = 2**26
"""Most feature values (float32) kept for that (256 MiB)."""


def spatial_kl(logits: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """KL(p || p_bar) per pixel, p the softmax and p_bar its k x k mean (replicate padding)."""
    logp = torch.log_softmax(logits.float(), dim=1)
    p = logp.exp()
    p_bar = box_mean_replicate(p, kernel)
    return (p * (logp - p_bar.clamp_min(1e-12).log())).sum(dim=1).clamp_min(0.0)


class _Moments:
    """Streaming float64 count / sum / sum of squares of one scalar per pixel."""

    def __init__(self) -> None:
        self.n = 0.0
        self.s = 0.0
        self.ss = 0.0

    def update(self, v: torch.Tensor) -> None:
        v = v.detach().reshape(-1).to(torch.float64)
        self.n += float(v.numel())
        self.s += float(v.sum())
        self.ss += float((v * v).sum())

    def mean_std(self) -> tuple[float, float]:
        mean = self.s / self.n
        var = max(self.ss / self.n - mean * mean, 0.0)
        return mean, max(var**0.5, 1e-6)


@register_method(
    "heat",
    rank=50,
    description=(
        "hazardseg's Hybrid Energy-Adaptive Thresholding hybrid of the reference run: "
        "z(energy) + z(Mahalanobis distance to the nearest predicted-class mean, tied "
        "covariance) + max-softmax * z(spatial-consistency KL); not HEAT of Lafon et al. (ICML "
        "2023)"
    ),
)
class HEAT(AnomalyMethod):
    """hazardseg's Hybrid Energy-Adaptive Thresholding score (module docstring); not Lafon et
    al.'s HEAT. ``w_energy * z(energy) + w_mahalanobis * z(Mahalanobis) + w_kl * r * z(KL)``."""

    name = "heat"
    needs_fit = True
    needs_features = True

    def __init__(
        self,
        temperature: float = 1.0,
        num_components: int = 64,
        kl_kernel: int = 3,
        w_energy: float = 1.0,
        w_mahalanobis: float = 1.0,
        w_kl: float = 1.0,
        reliability: str = "msp",
        shrinkage: float = 1e-3,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise HazardsegError(f"HEAT: temperature must be > 0, got {temperature}")
        if num_components < 1:
            raise HazardsegError(f"HEAT: num_components must be >= 1, got {num_components}")
        if kl_kernel not in (3, 5, 7):
            raise HazardsegError(f"HEAT: kl_kernel must be 3, 5 or 7, got {kl_kernel}")
        if reliability not in ("msp", "none"):
            raise HazardsegError(f"HEAT: reliability must be 'msp' or 'none', got {reliability!r}")
        self.temperature = float(temperature)
        self.num_components = int(num_components)
        self.kl_kernel = int(kl_kernel)
        self.w_energy = float(w_energy)
        self.w_mahalanobis = float(w_mahalanobis)
        self.w_kl = float(w_kl)
        self.reliability = reliability
        self.shrinkage = float(shrinkage)
        self.projection: torch.Tensor | None = None  # (D, k) whitening projection
        self.class_means: torch.Tensor | None = None  # (C, k) projected class means
        self.class_valid: torch.Tensor | None = None  # (C,) bool, class seen during fit
        self.norm: torch.Tensor | None = None  # (3, 2) mean, std of each component

    @property
    def options(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "num_components": self.num_components,
            "kl_kernel": self.kl_kernel,
            "w_energy": self.w_energy,
            "w_mahalanobis": self.w_mahalanobis,
            "w_kl": self.w_kl,
            "reliability": self.reliability,
            "shrinkage": self.shrinkage,
        }

    # ----------------------------------------------------------------- fitting
    def fit_begin(self) -> None:
        self._gauss = _GaussianAccumulator()
        self._moments = {"energy": _Moments(), "kl": _Moments()}
        self._sample: BottomK | None = None

    def fit_update(
        self,
        logits: torch.Tensor,
        features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> None:
        if features is None:
            raise HazardsegError("HEAT fit needs the model's features")
        self._gauss.update(features, predicted_at(logits, features.shape[-2:]))
        e, k, _ = self._logit_terms(logits, features.shape[-2:])
        self._moments["energy"].update(e)
        self._moments["kl"].update(k)
        if self._sample is None:
            per_image = features[0].numel()
            self._sample = BottomK(max(1, min(NORM_IMAGES, NORM_ELEMENTS // per_image)))
            self._logit_size = tuple(logits.shape[-2:])
        keys = feature_keys(features.float().mean(dim=(2, 3)))
        self._sample.update(keys, features.float())

    def fit_end(self) -> None:
        self._set_gaussian(*self._gauss.finalize(self.num_components, self.shrinkage))
        self.fitted = True
        assert self._sample is not None
        sample = self._sample.result()
        assert sample is not None
        m_moments = _Moments()
        for f in sample.split(8):
            m_moments.update(resize_map(self.mahalanobis(f), self._logit_size)[:, None])
        stats = [self._moments["energy"], m_moments, self._moments["kl"]]
        self.norm = torch.tensor([m.mean_std() for m in stats], dtype=torch.float32)
        del self._gauss, self._moments, self._sample

    def _set_gaussian(
        self, projection: torch.Tensor, means: torch.Tensor, valid: torch.Tensor
    ) -> None:
        self.projection = projection.float()
        self.class_means = means.float()
        self.class_valid = valid.bool()
        self.norm = torch.tensor([[0.0, 1.0]] * len(COMPONENTS))

    # ----------------------------------------------------------------- scoring
    def mahalanobis(self, features: torch.Tensor) -> torch.Tensor:
        """Distance (N, h, w) of each feature vector to the nearest fitted class mean."""
        assert self.projection is not None and self.class_means is not None
        assert self.class_valid is not None
        n, d, h, w = features.shape
        if d != self.projection.shape[0]:
            raise HazardsegError(
                f"HEAT: fitted on {self.projection.shape[0]}-dim features, got {d}-dim"
            )
        dev = features.device
        z = features.float().permute(0, 2, 3, 1).reshape(-1, d) @ self.projection.to(dev)
        m = self.class_means.to(dev)
        d2 = (z * z).sum(1, keepdim=True) - 2.0 * z @ m.T + (m * m).sum(1)
        d2 = d2.masked_fill(~self.class_valid.to(dev), float("inf"))
        return d2.amin(dim=1).clamp_min(0.0).sqrt().reshape(n, h, w)

    def components(
        self, logits: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw (energy, mahalanobis, kl, reliability) maps (N, H, W) at the logits' resolution.

        Energy and reliability are per pixel; the Mahalanobis distance and the spatial KL are
        computed on the feature grid (logits average-pooled to it) and bilinearly upsampled.
        """
        self.check_fitted()
        e, k, r = self._logit_terms(logits, features.shape[-2:])
        return e, resize_map(self.mahalanobis(features), logits.shape[-2:]), k, r

    def _logit_terms(
        self, logits: torch.Tensor, grid: tuple[int, int] | torch.Size
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(energy, spatial KL upsampled from the feature ``grid``, reliability) (N, H, W)."""
        z = logits.float()
        logp = torch.log_softmax(z, dim=1)
        if self.temperature == 1.0:
            e = (logp[:, :1] - z[:, :1])[:, 0]  # -logsumexp(z), from the log-softmax
        else:
            e = energy_score(z, self.temperature)
        if self.reliability == "msp":
            r = logp.amax(dim=1).exp()
        else:
            r = torch.ones_like(e)
        small = z if z.shape[-2:] == grid else F.adaptive_avg_pool2d(z, grid)
        k = spatial_kl(small, self.kl_kernel)[:, None]
        if k.shape[-2:] != z.shape[-2:]:
            k = F.interpolate(k, size=z.shape[-2:], mode="bilinear", align_corners=False)
        return e, k[:, 0], r

    def score(self, logits: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        if features is None:
            raise HazardsegError(
                "HEAT needs the model's features: call model(x, return_features=True)"
            )
        e, m, k, r = self.components(logits, features)
        assert self.norm is not None
        mu, sd = self.norm[:, 0].tolist(), self.norm[:, 1].tolist()
        ze = (e - mu[0]) / sd[0]
        zm = (m - mu[1]) / sd[1]
        zk = (k - mu[2]) / sd[2]
        return self.w_energy * ze + self.w_mahalanobis * zm + self.w_kl * r * zk

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        self.check_fitted()
        return {
            "projection": self.projection,
            "class_means": self.class_means,
            "class_valid": self.class_valid,
            "norm": self.norm,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        keys = ("projection", "class_means", "class_valid", "norm")
        missing = [k for k in keys if not isinstance(state.get(k), torch.Tensor)]
        if missing:
            raise HazardsegError(f"HEAT state: missing tensors {', '.join(missing)}")
        p, m, v, nrm = (state[k] for k in keys)
        if p.dim() != 2 or m.dim() != 2 or m.shape[1] != p.shape[1] or v.shape != m.shape[:1]:
            raise HazardsegError("HEAT state: inconsistent projection / class mean shapes")
        if tuple(nrm.shape) != (len(COMPONENTS), 2):
            raise HazardsegError("HEAT state: 'norm' must have shape (3, 2)")
        self.projection, self.class_means = p.float(), m.float()
        self.class_valid, self.norm = v.bool(), nrm.float()
        self.fitted = True


def predicted_at(logits: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Predicted class (N, h, w) at another resolution (antialiased bilinear resize, argmax)."""
    if tuple(logits.shape[-2:]) != tuple(size):
        antialias = logits.shape[-2] > size[0] or logits.shape[-1] > size[1]
        logits = F.interpolate(
            logits.float(),
            size=tuple(size),
            mode="bilinear",
            align_corners=False,
            antialias=antialias,
        )
    return logits.argmax(dim=1)


class _GaussianAccumulator:
    """Per-class feature sums and the centred scatter matrix, in float64."""

    def __init__(self) -> None:
        self.ref: torch.Tensor | None = None
        self.count: torch.Tensor | None = None
        self.sums: torch.Tensor | None = None
        self.scatter: torch.Tensor | None = None
        self.num_classes = 0

    def update(self, features: torch.Tensor, classes: torch.Tensor) -> None:
        d = features.shape[1]
        x = features.float().permute(0, 2, 3, 1).reshape(-1, d).cpu()
        c = classes.reshape(-1).cpu()
        if self.ref is None:
            self.ref = x.mean(0)
            self.count = torch.zeros(0, dtype=torch.float64)
            self.sums = torch.zeros(0, d, dtype=torch.float64)
            self.scatter = torch.zeros(d, d, dtype=torch.float64)
        assert self.count is not None and self.sums is not None and self.scatter is not None
        n_cls = int(c.max()) + 1
        if n_cls > self.count.numel():
            grow = n_cls - self.count.numel()
            self.count = torch.cat([self.count, torch.zeros(grow, dtype=torch.float64)])
            self.sums = torch.cat([self.sums, torch.zeros(grow, d, dtype=torch.float64)])
        xc = x - self.ref
        self.count += torch.bincount(c, minlength=self.count.numel()).double()
        self.sums.index_add_(0, c, xc.double())
        self.scatter += (xc.T @ xc).double()

    def finalize(self, k: int, shrinkage: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (whitening projection D x k, projected class means C x k, class seen)."""
        assert self.count is not None and self.sums is not None and self.scatter is not None
        assert self.ref is not None
        n = float(self.count.sum())
        valid = self.count > 0
        means_c = self.sums / self.count.clamp_min(1).unsqueeze(1)  # centred class means
        between = (means_c * self.count.unsqueeze(1)).T @ means_c
        cov = (self.scatter - between) / n
        cov = (cov + cov.T) / 2
        evals, evecs = torch.linalg.eigh(cov)
        k = min(k, cov.shape[0])
        evals, evecs = evals.flip(0)[:k], evecs.flip(1)[:, :k]
        floor = shrinkage * float(evals.clamp_min(0).mean()) + 1e-12
        proj = evecs / (evals.clamp_min(0) + floor).sqrt()
        means = (means_c + self.ref.double()) @ proj
        return proj, means, valid
