"""Joint image+mask transforms: the training preset (multi-scale crop, flip, colour, blur) and
the evaluation preset (resize policy).

Transforms take an image (PIL RGB or uint8 tensor (3,H,W)) and a mask of class ids (PIL "L" or
integer tensor (H,W)) and return ``(image float32 (3,h,w), mask int64 (h',w'))``. Geometry is
applied jointly: images are resized bilinearly with antialiasing, masks with nearest neighbour
(so mask values are always values of the input mask), and padding fills masks with
:data:`~hazardseg.data.labels.IGNORE_INDEX`. Crops are taken before resizing, so the cost
follows the output size, not the full image.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

from hazardseg.config import AugmentConfig
from hazardseg.data.imageio import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, check_image_size
from hazardseg.data.imageio import load_image as load_image
from hazardseg.data.labels import IGNORE_INDEX
from hazardseg.errors import ConfigError, DataError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

REGION_POLICIES: tuple[str, ...] = ("clamp", "pad")

ImageLike = Image.Image | torch.Tensor
MaskLike = Image.Image | torch.Tensor | np.ndarray


def _stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, dtype=t.dtype, device=t.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=t.dtype, device=t.device).view(3, 1, 1)
    return mean, std


def normalize(t: torch.Tensor) -> torch.Tensor:
    """Return ImageNet-normalised ``t`` (float in [0, 1], shape (3,H,W) or (N,3,H,W))."""
    mean, std = _stats(t)
    return (t - mean) / std


def denormalize(t: torch.Tensor) -> torch.Tensor:
    """Invert :func:`normalize`; the result is clamped to [0, 1] for display."""
    mean, std = _stats(t)
    return (t * std + mean).clamp(0.0, 1.0)


def _image_tensor(image: ImageLike) -> torch.Tensor:
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            raise DataError(
                f"image tensor must be uint8 (3,H,W), got {image.dtype} {tuple(image.shape)}"
            )
        return image
    raise DataError(f"image must be a PIL image or a uint8 tensor, got {type(image).__name__}")


def _mask_tensor(mask: MaskLike) -> torch.Tensor:
    """Return the mask as uint8 (1,H,W); ids 0..13 and 255 all fit in uint8."""
    if isinstance(mask, Image.Image):
        if mask.mode not in ("L", "P"):
            raise DataError(f"mask must be a single-channel image (mode L), got mode {mask.mode}")
        arr = np.array(mask, dtype=np.uint8)
    elif isinstance(mask, torch.Tensor | np.ndarray):
        t = torch.as_tensor(mask)
        if t.dim() != 2:
            raise DataError(f"mask must have shape (H,W), got {tuple(t.shape)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > 255):
            raise DataError("mask values must lie in 0..255")
        return t.to(torch.uint8).unsqueeze(0)
    else:
        raise DataError(f"mask must be a PIL image or a tensor, got {type(mask).__name__}")
    return torch.from_numpy(arr).unsqueeze(0)


def _check_sizes(img: torch.Tensor, mask: torch.Tensor) -> None:
    if img.shape[-2:] != mask.shape[-2:]:
        raise DataError(
            f"image size {tuple(img.shape[-2:])} and mask size {tuple(mask.shape[-2:])} differ"
        )


def _finish(img: torch.Tensor, do_normalize: bool) -> torch.Tensor:
    out = img.to(torch.float32).div_(255.0)
    return normalize(out) if do_normalize else out


def _resize_image(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(img.shape[-2:]) == size:
        return img
    return F.resize(img, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)


def resize_uint8_image(image: ImageLike, size: tuple[int, int]) -> np.ndarray:
    """An RGB image resized to ``size`` (H, W) as the evaluation transform resizes it
    (bilinear with antialiasing on uint8), as a uint8 (H, W, 3) array: the exact pixels an
    exported graph must be fed to see what the PyTorch path sees."""
    return _resize_image(_image_tensor(image), size).permute(1, 2, 0).contiguous().numpy()


def _resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(mask.shape[-2:]) == size:
        return mask
    return F.resize(mask, list(size), interpolation=InterpolationMode.NEAREST_EXACT)


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    u = float(torch.rand((), generator=generator))
    return lo + (hi - lo) * u


def _randint(lo: int, hi: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [lo, hi] (inclusive)."""
    if hi <= lo:
        return lo
    return int(torch.randint(lo, hi + 1, (), generator=generator))


def _validate_augment(cfg: AugmentConfig) -> None:
    if cfg.crop_size < 1:
        raise ConfigError(f"augment.crop_size: expected a positive integer, got {cfg.crop_size}")
    if cfg.crop_size * cfg.crop_size > MAX_IMAGE_PIXELS:
        raise ConfigError(
            f"augment.crop_size: {cfg.crop_size} exceeds the image limit of "
            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels"
        )
    lo, hi = cfg.scale_range
    if not (0 < lo <= hi):
        raise ConfigError(f"augment.scale_range: expected 0 < lo <= hi, got {cfg.scale_range}")
    if cfg.region_policy not in REGION_POLICIES:
        raise ConfigError(
            f"augment.region_policy: expected one of {', '.join(REGION_POLICIES)}, "
            f"got {cfg.region_policy!r}"
        )
    if cfg.color_jitter < 0 or cfg.color_jitter >= 1:
        raise ConfigError(f"augment.color_jitter: expected 0 <= value < 1, got {cfg.color_jitter}")
    if not (0 <= cfg.blur_prob <= 1):
        raise ConfigError(f"augment.blur_prob: expected a probability, got {cfg.blur_prob}")
    s_lo, s_hi = cfg.blur_sigma
    if not (0 < s_lo <= s_hi):
        raise ConfigError(f"augment.blur_sigma: expected 0 < lo <= hi, got {cfg.blur_sigma}")


def _region_crop(
    img: torch.Tensor,
    mask: torch.Tensor,
    x0: int,
    y0: int,
    side: int,
    out: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize the square ``[x0, x0+side) x [y0, y0+side)`` to ``out x out``.

    Parts of the square outside the image are filled with 0 (image) and IGNORE_INDEX (mask).
    Only the part inside the image is resized.
    """
    h, w = img.shape[-2:]
    ix0, iy0 = max(x0, 0), max(y0, 0)
    ix1, iy1 = min(x0 + side, w), min(y0 + side, h)
    f = out / side
    ox0, oy0 = round((ix0 - x0) * f), round((iy0 - y0) * f)
    ox1, oy1 = round((ix1 - x0) * f), round((iy1 - y0) * f)
    inner = (oy1 - oy0, ox1 - ox0)
    img_c = _resize_image(img[:, iy0:iy1, ix0:ix1], inner)
    mask_c = _resize_mask(mask[:, iy0:iy1, ix0:ix1], inner)
    if inner == (out, out):
        return img_c, mask_c
    img_o = torch.zeros((3, out, out), dtype=img.dtype)
    mask_o = torch.full((1, out, out), IGNORE_INDEX, dtype=mask.dtype)
    img_o[:, oy0:oy1, ox0:ox1] = img_c
    mask_o[:, oy0:oy1, ox0:ox1] = mask_c
    return img_o, mask_o


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur a float image (C,H,W) with a separable Gaussian (kernel 2*ceil(3*sigma)+1, reflect).

    Matches torchvision's ``gaussian_blur`` for the same kernel size, several times faster on
    the CPU: each 1-D pass is a weighted sum of shifted views.
    """
    h, w = x.shape[-2:]
    radius = min(math.ceil(3 * sigma), h - 1, w - 1)
    if radius < 1:
        return x
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (taps / sigma) ** 2)
    weights = (weights / weights.sum()).tolist()
    padded = torch.nn.functional.pad(x[None], (radius,) * 4, mode="reflect")[0]
    rows = torch.zeros((x.shape[0], h + 2 * radius, w), dtype=x.dtype)
    for i, wt in enumerate(weights):
        rows.add_(padded[:, :, i : i + w], alpha=wt)
    out = torch.zeros_like(x)
    for i, wt in enumerate(weights):
        out.add_(rows[:, i : i + h, :], alpha=wt)
    return out


def _offset(extent: int, side: int, generator: torch.Generator | None) -> int:
    """Random start of a window of ``side`` over ``extent`` pixels (negative if it overhangs)."""
    if side <= extent:
        return _randint(0, extent - side, generator)
    return -_randint(0, side - extent, generator)


@dataclass
class TrainTransform:
    """Training preset built from an :class:`AugmentConfig`; see :func:`build_train_transform`."""

    cfg: AugmentConfig
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        _validate_augment(self.cfg)

    def region(self, height: int, width: int) -> tuple[int, int, int]:
        """Draw the square source region ``(x0, y0, side)`` for an image of this size."""
        cfg, g = self.cfg, self.generator
        if not cfg.scale:
            side = cfg.crop_size
            return _offset(width, side, g), _offset(height, side, g), side
        r = _uniform(cfg.scale_range[0], cfg.scale_range[1], g)
        side = max(1, round(r * cfg.crop_size))
        if cfg.region_policy == "clamp":
            side = min(side, height, width)
        return _offset(width, side, g), _offset(height, side, g), side

    def __call__(self, image: ImageLike, mask: MaskLike) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the augmented ``(image float32 (3,c,c), mask int64 (c,c))``, c = crop_size."""
        cfg, g = self.cfg, self.generator
        img, m = _image_tensor(image), _mask_tensor(mask)
        _check_sizes(img, m)
        h, w = img.shape[-2:]
        x0, y0, side = self.region(h, w)
        img, m = _region_crop(img, m, x0, y0, side, cfg.crop_size)
        if cfg.hflip and float(torch.rand((), generator=g)) < 0.5:
            img, m = img.flip(-1), m.flip(-1)
        x = img.to(torch.float32).div_(255.0)
        if cfg.color_jitter > 0:
            x = self._jitter(x)
        if cfg.blur and float(torch.rand((), generator=g)) < cfg.blur_prob:
            x = gaussian_blur(x, _uniform(cfg.blur_sigma[0], cfg.blur_sigma[1], g))
        return (normalize(x) if cfg.normalize else x), m[0].to(torch.int64)

    def _jitter(self, img: torch.Tensor) -> torch.Tensor:
        j, g = self.cfg.color_jitter, self.generator
        ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
        factors = [_uniform(1 - j, 1 + j, g) for _ in ops]
        for i in torch.randperm(len(ops), generator=g).tolist():
            img = ops[i](img, factors[i])
        return img


def build_train_transform(
    cfg: AugmentConfig | None = None, generator: torch.Generator | None = None
) -> TrainTransform:
    """Return the training transform ``(image, mask) -> (image, mask)`` for ``cfg``.

    Randomness comes from ``generator`` if given, else from torch's global RNG (which the
    DataLoader seeds per worker), so a seeded run is reproducible. Leave ``generator`` unset
    with DataLoader workers: each worker would get a copy of the same generator state and
    repeat the other workers' augmentations.
    """
    return TrainTransform(cfg or AugmentConfig(), generator)


@dataclass(frozen=True)
class ResizePolicy:
    """A parsed evaluation resize policy: kind "native", "fixed" (width, height) or "short"."""

    kind: str
    width: int = 0
    height: int = 0
    short: int = 0

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Return the ``(height, width)`` an image of this size is resized to."""
        if self.kind == "fixed":
            return self.height, self.width
        if self.kind == "short":
            if height <= width:
                size = self.short, max(1, round(width * self.short / height))
            else:
                size = max(1, round(height * self.short / width)), self.short
            check_image_size(
                size[1], size[0], f"resize short:{self.short} of a {width}x{height} image"
            )
            return size
        return height, width


_FIXED = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
_SHORT = re.compile(r"^\s*short\s*:\s*(\d+)\s*$")


def _check_resize_limit(policy: str, width: int, height: int) -> None:
    if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise ConfigError(
            f"resize policy {policy!r}: {width}x{height} exceeds the image limit of "
            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels (at most {MAX_IMAGE_SIDE} per side)"
        )


def parse_resize_policy(policy: str) -> ResizePolicy:
    """Parse "native", "WxH" (e.g. "512x512") or "short:N"; ConfigError otherwise."""
    text = str(policy)
    if text.strip().lower() == "native":
        return ResizePolicy("native")
    if m := _FIXED.match(text):
        w, h = int(m.group(1)), int(m.group(2))
        if w > 0 and h > 0:
            _check_resize_limit(policy, w, h)
            return ResizePolicy("fixed", width=w, height=h)
    if m := _SHORT.match(text):
        n = int(m.group(1))
        if n > 0:
            _check_resize_limit(policy, n, n)
            return ResizePolicy("short", short=n)
    raise ConfigError(
        f"resize policy {policy!r}: expected 'native', 'WxH' (e.g. '512x512') or 'short:N'"
    )


@dataclass
class EvalTransform:
    """Evaluation preset; see :func:`build_eval_transform`."""

    policy: ResizePolicy
    at_label_resolution: bool = True
    normalize: bool = True

    def __call__(self, image: ImageLike, mask: MaskLike) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(image float32 (3,h,w), mask int64)`` resized by the policy."""
        img, m = _image_tensor(image), _mask_tensor(mask)
        _check_sizes(img, m)
        size = self.policy.output_size(*img.shape[-2:])
        img = _resize_image(img, size)
        if not self.at_label_resolution:
            m = _resize_mask(m, size)
        return _finish(img, self.normalize), m[0].to(torch.int64)


def build_eval_transform(
    resize: str = "native", at_label_resolution: bool = True, normalize: bool = True
) -> EvalTransform:
    """Return the evaluation transform: the image is resized by the ``resize`` policy.

    The mask stays at native (label) resolution when ``at_label_resolution``, else it is
    resized with nearest neighbour to the image size. With ``normalize=False`` the image is
    float32 in [0, 1].
    """
    return EvalTransform(parse_resize_policy(resize), at_label_resolution, normalize)
