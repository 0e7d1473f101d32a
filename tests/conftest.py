"""Shared fixtures: tiny hand-made StreetHazards-format trees (no generator needed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from hazardseg.data.classes import ODGT_NAMES, SPLITS, TOWNS


def make_tiny_tree(
    root: Path,
    counts: dict[str, int] | None = None,
    size: tuple[int, int] = (64, 48),
    seed: int = 0,
    rgba: bool = False,
    odgt: str | None = "lines",
) -> Path:
    """Write a minimal official-layout tree with random blocky scenes.

    Labels are PNG values 1..14 (0 = no class in a few pixels); only test has value 14.
    ``odgt`` is "lines" (one JSON object per line), "list" (one JSON list) or None (no index).
    """
    counts = counts or {"train": 4, "validation": 2, "test": 3}
    rng = np.random.default_rng(seed)
    w, h = size
    for split, n in counts.items():
        top, sub = SPLITS[split]
        towns = TOWNS[split]
        entries = []
        for i in range(n):
            town = towns[i % len(towns)]
            label = np.full((h, w), 8, dtype=np.uint8)  # road
            label[: h // 3] = 2  # building
            label[: h // 6, : w // 4] = 1  # unlabeled sky
            for _ in range(4):
                v = int(rng.integers(1, 14))
                y0, x0 = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
                label[y0 : y0 + 6, x0 : x0 + 6] = v
            label[0, 0] = 0  # a pixel with no class
            if split == "test" and i != n - 1:  # last test image has no anomaly
                label[h // 2 : h // 2 + 8, w // 2 : w // 2 + 10] = 14
            from hazardseg.data.classes import PALETTE

            img = PALETTE[np.clip(label.astype(int) - 1, 0, 13)].astype(np.int16)
            img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
            rel = f"{town}/{i + 1}.png"
            ip = root / top / "images" / sub / rel
            lp = root / top / "annotations" / sub / rel
            ip.parent.mkdir(parents=True, exist_ok=True)
            lp.parent.mkdir(parents=True, exist_ok=True)
            if rgba:
                a = np.full((h, w, 1), 255, dtype=np.uint8)
                Image.fromarray(np.concatenate([img, a], axis=2), "RGBA").save(ip)
            else:
                Image.fromarray(img, "RGB").save(ip)
            Image.fromarray(label, "L").save(lp)
            entries.append(
                {
                    "fpath_img": f"{top}/images/{sub}/{rel}",
                    "fpath_segm": f"{top}/annotations/{sub}/{rel}",
                    "width": w,
                    "height": h,
                    "dbName": "StreetHazards",
                }
            )
        if odgt is not None:
            p = root / ODGT_NAMES[split]
            p.parent.mkdir(parents=True, exist_ok=True)
            if odgt == "list":
                p.write_text(json.dumps(entries))
            else:
                p.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return root


@pytest.fixture
def tiny_tree(tmp_path: Path) -> Path:
    """A fresh tiny tree (4 train, 2 validation, 3 test images of 64x48) per test."""
    return make_tiny_tree(tmp_path / "sh")


@pytest.fixture(scope="session")
def shared_tiny_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny tree shared by the whole session; do not modify it."""
    return make_tiny_tree(tmp_path_factory.mktemp("shared") / "sh")


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread: tiny tensors gain nothing from more, and the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TinyNet(nn.Module):
    """A deterministic stand-in segmentation model for the anomaly-method tests: features at
    stride 2, ``num_classes`` classes; counts its forward calls."""

    def __init__(self, num_classes: int = 5, dim: int = 6, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.body = nn.Conv2d(3, dim, 3, padding=1)
        self.head = nn.Conv2d(dim, num_classes, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        self.calls = 0

    def forward(self, x: torch.Tensor, return_features: bool = False) -> dict[str, torch.Tensor]:
        self.calls += 1
        f = torch.tanh(F.avg_pool2d(self.body(x), 2))
        out = {"out": F.interpolate(self.head(f), size=x.shape[-2:], mode="bilinear")}
        if return_features:
            out["features"] = f
        return out


def spec_for(checkpoint: Path, **overrides: object):
    """The checkpoint's evaluation spec with ``overrides``: what a command resolves from its
    flags (``hazardseg.evaluation.spec.resolve_spec``)."""
    from hazardseg.evaluation.spec import resolve_spec
    from hazardseg.models.checkpoint import open_checkpoint

    return resolve_spec(open_checkpoint(checkpoint).config, overrides)


def torch_predictor(checkpoint: Path, method: str = "max_logit", state=None, **overrides):
    """The PyTorch predictor of ``checkpoint`` with spec ``overrides`` and a state file."""
    from hazardseg.evaluation.spec import RunOptions
    from hazardseg.inference.predictor import MapPredictor

    return MapPredictor(
        checkpoint, method, spec_for(checkpoint, **overrides), RunOptions(state_path=state)
    )
