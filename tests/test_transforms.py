"""Joint image+mask transforms: geometry, policies, switches, determinism."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from hazardseg.config import AugmentConfig
from hazardseg.data.classes import IGNORE_INDEX, PALETTE
from hazardseg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_eval_transform,
    build_train_transform,
    denormalize,
    load_image,
    normalize,
    parse_resize_policy,
)
from hazardseg.errors import ConfigError, DataError

PLAIN = AugmentConfig(
    crop_size=64, scale=False, hflip=False, color_jitter=0.0, blur=False, normalize=False
)


def cfg(**kw: object) -> AugmentConfig:
    return dataclasses.replace(PLAIN, **kw)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def scene(h: int, w: int, seed: int = 0) -> tuple[Image.Image, Image.Image]:
    """Blocky random id map (ids 0..12) and its palette-coloured image."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 13, size=(h // 8 + 1, w // 8 + 1)).astype(np.uint8)
    ids = np.kron(ids, np.ones((8, 8), dtype=np.uint8))[:h, :w]
    return Image.fromarray(PALETTE[ids], "RGB"), Image.fromarray(ids, "L")


def squares(size: int, period: int = 40, side: int = 20) -> tuple[Image.Image, Image.Image]:
    """A grid of ``side``-px squares (id 10) every ``period`` px on background id 7."""
    ids = np.full((size, size), 7, dtype=np.uint8)
    for y in range(0, size, period):
        for x in range(0, size, period):
            ids[y : y + side, x : x + side] = 10
    return Image.fromarray(PALETTE[ids], "RGB"), Image.fromarray(ids, "L")


def object_size(mask: torch.Tensor, value: int = 10) -> float:
    """Median bounding-box side of the objects that do not touch the border."""
    m = mask.numpy() == value
    lab, _ = ndimage.label(m)
    sides = []
    for sl in ndimage.find_objects(lab):
        ys, xs = sl
        if ys.start == 0 or xs.start == 0 or ys.stop == m.shape[0] or xs.stop == m.shape[1]:
            continue
        sides.append(((ys.stop - ys.start) + (xs.stop - xs.start)) / 2)
    assert sides, "no complete object in the crop"
    return float(np.median(sides))


@pytest.mark.parametrize("policy", ["clamp", "pad"])
def test_apparent_size_follows_scale(policy: str) -> None:
    img, mask = squares(320)
    sizes = {}
    for r in (0.5, 1.0, 2.0):
        t = build_train_transform(
            cfg(crop_size=128, scale=True, scale_range=(r, r), region_policy=policy), gen(1)
        )
        sizes[r] = [object_size(t(img, mask)[1]) for _ in range(3)]
    for r in (0.5, 1.0, 2.0):
        for s in sizes[r]:
            assert s == pytest.approx(20 / r, abs=1.0), (r, sizes)


def test_clamp_keeps_aspect_and_caps_zoom_out() -> None:
    img, mask = squares(200)
    t = build_train_transform(
        cfg(crop_size=128, scale=True, scale_range=(2.0, 2.0), region_policy="clamp"), gen(0)
    )
    _, m = t(img, mask)
    assert m.shape == (128, 128)
    assert IGNORE_INDEX not in m
    # the 256-px region is clamped to the largest square that fits (200 px): 20 * 128 / 200
    assert object_size(m) == pytest.approx(12.8, abs=1.0)
    lab, _ = ndimage.label(m.numpy() == 10)
    for ys, xs in ndimage.find_objects(lab):
        if ys.start and xs.start and ys.stop < 128 and xs.stop < 128:
            assert abs((ys.stop - ys.start) - (xs.stop - xs.start)) <= 1  # squares stay square


def test_clamp_never_pads_non_square_image() -> None:
    img, mask = scene(40, 100)
    t = build_train_transform(
        cfg(crop_size=64, scale=True, scale_range=(0.5, 2.0), region_policy="clamp"), gen(3)
    )
    for _ in range(20):
        x, m = t(img, mask)
        assert x.shape == (3, 64, 64) and m.shape == (64, 64)
        assert IGNORE_INDEX not in m


def test_pad_fills_ignore_and_black() -> None:
    img, mask = scene(32, 32)
    t = build_train_transform(
        cfg(crop_size=32, scale=True, scale_range=(2.0, 2.0), region_policy="pad"), gen(0)
    )
    x, m = t(img, mask)
    assert m.shape == (32, 32)
    ignored = m == IGNORE_INDEX
    assert int((~ignored).sum()) == 16 * 16  # the 32-px image fills 16x16 of the output
    assert torch.all(x[:, ignored] == 0)


def test_scale_off_random_crop_pads_small_image() -> None:
    img, mask = scene(40, 48)
    x, m = build_train_transform(cfg(crop_size=64), gen(0))(img, mask)
    assert x.shape == (3, 64, 64)
    assert int((m != IGNORE_INDEX).sum()) == 40 * 48


def test_scale_off_crop_is_exact_window() -> None:
    img, mask = scene(96, 128)
    ids = torch.from_numpy(np.array(mask)).long()
    x, m = build_train_transform(cfg(crop_size=64), gen(5))(img, mask)
    found = [
        (y, xx)
        for y in range(96 - 64 + 1)
        for xx in range(128 - 64 + 1)
        if torch.equal(ids[y : y + 64, xx : xx + 64], m)
    ]
    assert found
    y, xx = found[0]
    ref = torch.from_numpy(np.array(img)).permute(2, 0, 1)[:, y : y + 64, xx : xx + 64] / 255
    assert torch.allclose(x, ref)


def test_mask_values_come_from_input() -> None:
    rng = np.random.default_rng(0)
    ids = rng.choice(np.array([0, 3, 7, 13], dtype=np.uint8), size=(90, 120))
    mask = Image.fromarray(ids, "L")
    img = Image.fromarray(PALETTE[ids], "RGB")
    allowed = {0, 3, 7, 13}
    for policy in ("clamp", "pad"):
        t = build_train_transform(
            AugmentConfig(crop_size=48, region_policy=policy, scale_range=(0.3, 3.0)), gen(1)
        )
        for _ in range(10):
            _, m = t(img, mask)
            assert m.dtype == torch.int64
            extra = {IGNORE_INDEX} if policy == "pad" else set()
            assert set(m.unique().tolist()) <= allowed | extra


def test_flip_keeps_image_and_mask_aligned() -> None:
    img, mask = scene(64, 64)
    ids = torch.from_numpy(np.array(mask)).long()
    lut = torch.from_numpy(PALETTE.astype(np.float32) / 255)
    t = build_train_transform(cfg(crop_size=64, hflip=True), gen(2))
    flipped = set()
    for _ in range(16):
        x, m = t(img, mask)
        assert torch.allclose(x.permute(1, 2, 0), lut[m])
        assert torch.equal(m, ids) or torch.equal(m, ids.flip(-1))
        flipped.add(torch.equal(m, ids.flip(-1)))
    assert flipped == {True, False}


def test_hflip_switch_off_never_flips() -> None:
    img, mask = scene(64, 64)
    ids = torch.from_numpy(np.array(mask)).long()
    t = build_train_transform(cfg(crop_size=64, hflip=False), gen(2))
    for _ in range(8):
        assert torch.equal(t(img, mask)[1], ids)


def test_photometric_switches() -> None:
    img, mask = scene(64, 64)
    base = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    x, _ = build_train_transform(cfg(), gen(0))(img, mask)
    assert torch.allclose(x, base)  # everything off = identity (crop == image)
    xj, mj = build_train_transform(cfg(color_jitter=0.3), gen(0))(img, mask)
    assert not torch.allclose(xj, base) and torch.equal(mj, torch.from_numpy(np.array(mask)).long())
    xb, _ = build_train_transform(cfg(blur=True, blur_prob=1.0), gen(0))(img, mask)
    assert not torch.allclose(xb, base)
    assert xb.std() < base.std()  # blur smooths
    xn, _ = build_train_transform(cfg(normalize=True), gen(0))(img, mask)
    assert torch.allclose(xn, normalize(base), atol=1e-6)


def test_determinism_with_generator_and_global_seed() -> None:
    img, mask = scene(100, 140)
    a = build_train_transform(AugmentConfig(crop_size=48), gen(7))
    b = build_train_transform(AugmentConfig(crop_size=48), gen(7))
    for _ in range(3):
        (xa, ma), (xb, mb) = a(img, mask), b(img, mask)
        assert torch.equal(xa, xb) and torch.equal(ma, mb)
    t = build_train_transform(AugmentConfig(crop_size=48))
    torch.manual_seed(3)
    x1, m1 = t(img, mask)
    torch.manual_seed(3)
    x2, m2 = t(img, mask)
    assert torch.equal(x1, x2) and torch.equal(m1, m2)
    x3, _ = t(img, mask)
    assert not torch.equal(x1, x3)


def test_tensor_inputs_match_pil() -> None:
    img, mask = scene(50, 70)
    it = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
    mt = torch.from_numpy(np.array(mask)).long()
    c = AugmentConfig(crop_size=32)
    x1, m1 = build_train_transform(c, gen(4))(img, mask)
    x2, m2 = build_train_transform(c, gen(4))(it, mt)
    assert torch.equal(x1, x2) and torch.equal(m1, m2)


def test_bad_config_and_mismatched_sizes() -> None:
    with pytest.raises(ConfigError, match="region_policy"):
        build_train_transform(AugmentConfig(region_policy="stretch"))
    with pytest.raises(ConfigError, match="scale_range"):
        build_train_transform(AugmentConfig(scale_range=(2.0, 0.5)))
    img, _ = scene(32, 32)
    _, mask = scene(32, 40)
    with pytest.raises(DataError, match="differ"):
        build_train_transform(AugmentConfig(crop_size=16))(img, mask)


@pytest.mark.parametrize(
    ("policy", "size_in", "size_out"),
    [
        ("native", (48, 64), (48, 64)),
        ("32x24", (48, 64), (24, 32)),
        ("16X40", (48, 64), (40, 16)),
        ("short:24", (48, 64), (24, 32)),
        ("short:32", (64, 48), (43, 32)),
    ],
)
def test_eval_policies(policy: str, size_in: tuple[int, int], size_out: tuple[int, int]) -> None:
    img, mask = scene(*size_in)
    x, m = build_eval_transform(policy)(img, mask)
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, *size_out)
    assert m.dtype == torch.int64 and tuple(m.shape) == size_in
    assert torch.equal(m, torch.from_numpy(np.array(mask)).long())
    _, m2 = build_eval_transform(policy, at_label_resolution=False)(img, mask)
    assert tuple(m2.shape) == size_out
    assert set(m2.unique().tolist()) <= set(m.unique().tolist())


def test_eval_normalisation_flag() -> None:
    img, mask = scene(24, 32)
    raw, _ = build_eval_transform(normalize=False)(img, mask)
    assert float(raw.min()) >= 0.0 and float(raw.max()) <= 1.0
    x, _ = build_eval_transform()(img, mask)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(x, (raw - mean) / std, atol=1e-6)
    assert torch.allclose(denormalize(x), raw, atol=1e-6)
    batch = torch.rand(2, 3, 5, 5)
    assert torch.allclose(denormalize(normalize(batch)), batch, atol=1e-6)


@pytest.mark.parametrize("bad", ["", "big", "512", "0x512", "512x", "short:0", "short:-3", "x"])
def test_bad_resize_policy(bad: str) -> None:
    with pytest.raises(ConfigError, match="resize policy"):
        build_eval_transform(bad)
    with pytest.raises(ConfigError):
        parse_resize_policy(bad)


def test_load_image(tmp_path: Path) -> None:
    rgba = np.zeros((6, 5, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 7
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.mode == "RGB" and img.size == (5, 6)
    assert np.array(img)[0, 0].tolist() == [200, 0, 0]
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad\.png"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(DataError, match=r"missing\.png"):
        load_image(tmp_path / "missing.png")


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.0])
def test_gaussian_blur_matches_torchvision(sigma: float) -> None:
    import math

    import torchvision.transforms.v2.functional as F

    from hazardseg.data.transforms import gaussian_blur

    x = torch.rand(3, 40, 52, generator=gen(0))
    k = 2 * math.ceil(3 * sigma) + 1
    ref = F.gaussian_blur(x, [k, k], [sigma, sigma])
    assert torch.allclose(gaussian_blur(x, sigma), ref, atol=1e-5)
