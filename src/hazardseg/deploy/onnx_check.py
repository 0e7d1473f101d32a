"""The export's self-check: onnxruntime runs the exported graph on sample images and its
outputs are compared with PyTorch's; an export that does not reproduce PyTorch is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hazardseg.deploy import ExportError, require
from hazardseg.deploy.interface import CLASS_MAP, CONFIDENCE, INPUT_NAME, LOGITS, SCORE_PREFIX
from hazardseg.deploy.onnx_graph import DeployModule, first_line

LOGITS_TOLERANCE = 1e-4
"""Largest accepted max abs difference between onnxruntime and PyTorch logits (fp32)."""
SCORE_RELATIVE_TOLERANCE = 1e-3
"""Largest accepted score difference, relative to max(1, largest absolute score)."""


def sample_images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Deterministic uint8 (N, H, W, 3) images with large smooth regions and some texture."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, max(height // 24, 2), max(width // 24, 2), generator=gen)
    img = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False) * 230
    img = img + 25 * torch.rand(batch, 3, height, width, generator=gen)
    return img.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _second_size(height: int, width: int) -> tuple[int, int]:
    """A second check size for dynamic exports: multiples of 32 when the tracing size is not
    (and other sizes when it is), so size-dependent branches that were not traced show up."""
    if height % 32 or width % 32:
        return -(-(height + 1) // 32) * 32, -(-(width + 1) // 32) * 32
    return height + 24, width + 40


def check_samples(height: int, width: int, dynamic: bool, seed: int = 0) -> list[torch.Tensor]:
    """The images an export is traced and checked on: 2 at ``height`` x ``width`` (the first
    sample, also the tracing example) and, for a dynamic export, 1 at a second size."""
    samples = [sample_images(2, height, width, seed)]
    if dynamic:
        samples.append(sample_images(1, *_second_size(height, width), seed + 1))
    return samples


def compare_with_pytorch(
    model_bytes: bytes, module: DeployModule, samples: list[torch.Tensor], threads: int | None
) -> dict[str, Any]:
    """Run the serialized graph in onnxruntime (``threads``; None: all) and ``module`` in
    PyTorch on ``samples``; max abs differences, their scales and the argmax agreement."""
    session = _ort_session(model_bytes, threads)
    return _compare(session, module, samples, module.output_names)


def _ort_session(model_bytes: bytes, threads: int | None) -> Any:
    ort = require("onnxruntime", "checking an ONNX export")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def near_tie_region(flips: np.ndarray, reach: int) -> np.ndarray:
    """Pixels within Chebyshev distance ``reach`` of a True pixel of ``flips`` (N, H, W)."""
    if reach <= 0 or not flips.any():
        return flips.copy()
    t = torch.from_numpy(flips[:, None].astype(np.float32))
    grown = F.max_pool2d(t, 2 * reach + 1, stride=1, padding=reach)
    return grown[:, 0].numpy() > 0


def score_difference(
    ref: np.ndarray, got: np.ndarray, flips: np.ndarray, reach: int | None
) -> tuple[float, int]:
    """Max abs difference of two (N, H, W) score maps and the number of pixels left out:
    those within ``reach`` of a pixel whose predicted class differs (``flips``); nothing is
    left out when ``reach`` is None (a score continuous in its own pixel's logits)."""
    delta = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    left_out = 0
    if reach is not None and flips.any():
        skip = near_tie_region(flips, int(reach))
        left_out = int(skip.sum())
        delta = np.where(skip, 0.0, delta)
    return float(np.nanmax(delta)) if delta.size else 0.0, left_out


def _compare(
    session: Any, module: DeployModule, samples: list[torch.Tensor], names: list[str]
) -> dict[str, Any]:
    """Run onnxruntime and PyTorch on ``samples``; max abs differences and argmax agreement.

    Where the two largest logits tie to float rounding the two backends may pick different
    classes; a score that uses the predicted class (``label_reach`` of the method) is then
    compared only farther than its reach from such a pixel (the pixels left out are counted
    in ``score_pixels_near_ties``).
    """
    logits_diff = conf_diff = 0.0
    per_sample: list[float] = []
    logits_scale = 0.0
    agree = total = 0
    scores: dict[str, float] = {}
    score_scale: dict[str, float] = {}
    near_ties: dict[str, int] = {}
    nonfinite: dict[str, int] = {}
    reach = {SCORE_PREFIX + n: m.label_reach for n, m in module.methods.items()}
    for img in samples:
        with torch.no_grad():
            ref = [t.numpy() for t in module(img)]
        try:
            got = session.run(names, {INPUT_NAME: img.numpy()})
        except Exception as exc:  # onnxruntime raises its own exception types
            size = "x".join(str(d) for d in img.shape[1:3])
            raise ExportError(
                f"export check: onnxruntime fails on a {size} image ({first_line(exc, 200)})"
                + (
                    "; the graph only works at the tracing size, export at a fixed --height/"
                    "--width instead of --dynamic"
                    if img is not samples[0]
                    else ""
                )
            ) from None
        for name, r, g in zip(names, ref, got, strict=True):
            if r.shape != g.shape:
                raise ExportError(
                    f"export check: output '{name}' has shape {tuple(g.shape)} in onnxruntime, "
                    f"{tuple(r.shape)} in PyTorch"
                )
        outputs = dict(zip(names, zip(ref, got, strict=True), strict=True))
        flips = outputs[CLASS_MAP][0] != outputs[CLASS_MAP][1]
        for name, (r, g) in outputs.items():
            if name == CLASS_MAP:
                agree += int((r == g).sum())
                total += r.size
                continue
            bad = int((~np.isfinite(g)).sum())
            if bad:
                nonfinite[name] = nonfinite.get(name, 0) + bad
            delta = np.abs(g.astype(np.float64) - r.astype(np.float64))
            if name == LOGITS:
                diff = float(np.nanmax(delta))
                logits_diff = max(logits_diff, diff)
                per_sample.append(diff)
                logits_scale = max(logits_scale, float(np.abs(r).max()))
            elif name == CONFIDENCE:
                conf_diff = max(conf_diff, float(np.nanmax(delta)))
            else:
                key = name[len(SCORE_PREFIX) :]
                diff, left_out = score_difference(r, g, flips, reach.get(name))
                if left_out:
                    near_ties[key] = near_ties.get(key, 0) + left_out
                scores[key] = max(scores.get(key, 0.0), diff)
                finite = np.abs(r[np.isfinite(r)])
                scale = float(finite.max()) if finite.size else 0.0
                score_scale[key] = max(score_scale.get(key, 0.0), scale)
    return {
        "samples": ", ".join("x".join(str(d) for d in s.shape) for s in samples),
        "logits_max_abs_diff": logits_diff,
        "logits_max_abs_diff_per_sample": per_sample,
        "logits_scale": logits_scale,
        "argmax_agreement": agree / max(total, 1),
        "argmax_disagreements": total - agree,
        "confidence_max_abs_diff": conf_diff,
        "score_max_abs_diff": scores,
        "score_pixels_near_ties": near_ties,
        "score_scale": score_scale,
        "nonfinite": nonfinite,
    }


def score_failures(check: Mapping[str, Any]) -> list[str]:
    """The scores whose difference exceeds :data:`SCORE_RELATIVE_TOLERANCE` of their scale."""
    bad = []
    for name, diff in check["score_max_abs_diff"].items():
        limit = SCORE_RELATIVE_TOLERANCE * max(1.0, check["score_scale"][name])
        if not diff <= limit:
            bad.append(f"{name} ({diff:.3g} > {limit:.3g})")
    return bad


def require_agreement(
    check: Mapping[str, Any],
    samples: Sequence[torch.Tensor],
    *,
    tolerance: float,
    dynamic: bool,
    model_name: str,
    out: str | os.PathLike[str],
) -> None:
    """Raise :class:`ExportError` (naming ``out``, which is then not written) when the
    onnxruntime outputs in ``check`` do not reproduce PyTorch: logits beyond ``tolerance``,
    scores beyond :data:`SCORE_RELATIVE_TOLERANCE` of their scale, or non-finite values."""
    diff = check["logits_max_abs_diff"]
    first = check["logits_max_abs_diff_per_sample"][0]
    if dynamic and first <= tolerance and not diff <= tolerance:
        size = "x".join(str(d) for d in samples[-1].shape[1:3])
        raise ExportError(
            f"{model_name}: the --dynamic export does not reproduce PyTorch at {size} (logits "
            f"differ by {diff:.3g}, by {first:.3g} at the tracing size): its forward "
            "depends on the input size; trace at a --height/--width that is not a multiple "
            "of 32, or export at a fixed size without --dynamic"
        )
    if not diff <= tolerance:
        scale = check["logits_scale"]
        raise ExportError(
            f"{model_name}: onnxruntime logits differ from PyTorch by {diff:.3g} "
            f"(> {tolerance:g}; largest |logit| {scale:.3g}, relative "
            f"{diff / max(scale, 1e-30):.2g}); not writing {out} (--tolerance sets the limit)"
        )
    failures = score_failures(check)
    if failures:
        raise ExportError(
            f"{model_name}: onnxruntime anomaly scores differ from PyTorch: {', '.join(failures)} "
            f"although the logits agree (max |diff| {diff:.3g}), so the score's own graph "
            f"computes something else; not writing {out} (export without those methods with "
            "--method, or check them with `python -m pytest tests/test_export.py`)"
        )
    if check["nonfinite"]:
        raise ExportError(
            f"{model_name}: onnxruntime produced non-finite values {check['nonfinite']}; "
            f"not writing {out}"
        )
