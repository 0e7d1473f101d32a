"""Per-method metric accumulators and the per-image score store used by the component pass."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hazardseg.errors import HazardsegError
from hazardseg.io import atomic_path
from hazardseg.metrics.ood import PerImageOOD, PooledOOD

NONFINITE_POLICIES = ("error", "exclude")


def map_relpath(rel: str) -> str:
    """Score-map path of an image: ``t5/1.png`` -> ``t5/1.npy``."""
    return str(Path(rel).with_suffix(".npy"))


class MethodAccumulator:
    """Pooled and per-image OOD accumulators of one method, with non-finite score counting.

    Non-finite scores on evaluated pixels are counted per image; they are excluded from the
    metrics and :meth:`check_nonfinite` raises unless the policy is ``"exclude"``.
    """

    def __init__(self, name: str, nonfinite: str = "error") -> None:
        if nonfinite not in NONFINITE_POLICIES:
            raise HazardsegError(
                f"nonfinite policy {nonfinite!r}: expected one of {', '.join(NONFINITE_POLICIES)}"
            )
        self.name = name
        self.policy = nonfinite
        self.pooled = PooledOOD()
        self.per_image = PerImageOOD()
        self.nonfinite = 0
        self.nonfinite_images: list[str] = []

    def update(
        self, scores: torch.Tensor, is_anomaly: torch.Tensor, valid: torch.Tensor, ids: list[str]
    ) -> None:
        """Add a batch: scores (N, H, W) float, masks (N, H, W) bool, one id per image."""
        bad = ~torch.isfinite(scores) & valid
        if bool(bad.any()):
            per = bad.flatten(1).sum(1).tolist()
            self.nonfinite += int(sum(per))
            self.nonfinite_images.extend(i for i, c in zip(ids, per, strict=True) if c)
            valid = valid & ~bad
        self.pooled.update(scores, is_anomaly, valid)
        self.per_image.update(scores, is_anomaly, valid, image_ids=list(ids))

    def merge(self, other: MethodAccumulator) -> MethodAccumulator:
        """Add another rank's accumulator; return self."""
        self.pooled.merge(other.pooled)
        self.per_image.merge(other.per_image)
        self.nonfinite += other.nonfinite
        self.nonfinite_images.extend(other.nonfinite_images)
        return self

    def check_nonfinite(self, where: str) -> None:
        """Raise when non-finite scores were seen and the policy is ``"error"``."""
        if self.nonfinite and self.policy == "error":
            first = ", ".join(sorted(self.nonfinite_images)[:3])
            raise HazardsegError(
                f"{where}: method '{self.name}' has {self.nonfinite} NaN/infinite scores in "
                f"{len(self.nonfinite_images)} image(s) (first: {first}); use --nonfinite "
                "exclude to leave those pixels out (the count is recorded)"
            )


class ScoreStore:
    """Per-image float32 score maps (``<dir>/<method>/<rel>.npy``) and evaluation masks.

    Maps go to ``maps_dir`` when given (kept; ``--save-maps``), else to a scratch folder that
    :meth:`close` removes. Masks are kept in the scratch folder as uint8 (0 ignored,
    1 known, 2 anomaly).
    """

    def __init__(self, maps_dir: Path | None = None, scratch_parent: Path | None = None) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="hazardseg-eval-", dir=scratch_parent))
        self.maps_dir = maps_dir
        self._keep = maps_dir is not None

    def map_path(self, method: str, rel: str) -> Path:
        """Where the score map of image ``rel`` for ``method`` is stored."""
        base = self.maps_dir if self.maps_dir is not None else self.scratch / "maps"
        return base / method / map_relpath(rel)

    def put(self, method: str, rel: str, scores: torch.Tensor) -> None:
        """Store one (H, W) score map as float32."""
        arr = scores.detach().to("cpu", torch.float32).numpy()
        path = self.map_path(method, rel)
        if self._keep:
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, arr)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, arr)

    def get(self, method: str, rel: str) -> np.ndarray:
        """Load the stored score map of ``rel``."""
        return np.load(self.map_path(method, rel))

    def put_mask(self, rel: str, is_anomaly: torch.Tensor, valid: torch.Tensor) -> None:
        """Store the evaluation masks of one image."""
        code = valid.to(torch.uint8) * (1 + is_anomaly.to(torch.uint8))
        path = self.scratch / "masks" / map_relpath(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, code.cpu().numpy())

    def get_mask(self, rel: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(is_anomaly, valid)`` of one image."""
        code = torch.from_numpy(np.load(self.scratch / "masks" / map_relpath(rel)))
        return code == 2, code > 0

    def close(self) -> None:
        """Remove the scratch folder."""
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> ScoreStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
