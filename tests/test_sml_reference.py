"""SML against an independent re-implementation of the authors' definition.

The reference below is written from the definition in Jung et al.'s public code
(shjung13/Standardized-max-logits: ``calculate_statistics.py`` and
``BoundarySuppressionWithSmoothing`` in ``network/deepv3.py``), in float64 numpy with
scipy.ndimage morphology and correlation, independently of hazardseg's torch code:

* statistics: mean and unbiased variance (ddof=1) of the max logit per predicted class;
* boundary: grey dilation with a 3x3 cross != grey erosion with a 3x3 square of the predicted
  labels, pixels outside the image ignored (kornia's ``geodesic`` border);
* iteration ``it``: the boundary binary-dilated by a diamond of radius
  ``0 if width == 0 or it == last else width - (width // iterations) * it - 1``; boundary
  pixels take (3x3 sum of the map with boundary pixels zeroed) / (3x3 count of non-boundary
  pixels), both with edge-replicating borders, when the count is non-zero;
* smoothing: correlation with the 7x7 Gaussian (sigma 1) spread on a dilation-6 grid,
  edge-replicating borders.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from hazardseg.anomaly.sml import SML, ClassStats, boundary_widths, label_boundary

TOL = 1e-5


def _ref_boundary(pred: np.ndarray, variant: str = "") -> np.ndarray:
    cross = ndi.generate_binary_structure(2, 1)
    square = np.ones((3, 3), dtype=bool)
    # constant borders that can never win the max / min: outside pixels are ignored
    foot = square if variant == "square boundary" else cross
    dil = ndi.grey_dilation(pred, footprint=foot, mode="constant", cval=-1)
    ero = ndi.grey_erosion(pred, footprint=square, mode="constant", cval=int(pred.max()) + 1)
    return dil != ero


def _diamond(r: int, variant: str = "") -> np.ndarray:
    i, j = np.mgrid[-r : r + 1, -r : r + 1]
    if variant == "square widening":
        return np.ones_like(i, dtype=bool)
    return (np.abs(i) + np.abs(j)) <= r


def _ref_suppress(
    x: np.ndarray, pred: np.ndarray, width: int, iterations: int, variant: str = ""
) -> np.ndarray:
    base = _ref_boundary(pred, variant)
    border = "constant" if variant == "zero padding" else "nearest"
    ones = np.ones((3, 3))
    out = x.astype(np.float64)
    for it in range(iterations):
        if width == 0 or it == iterations - 1:
            radius = 0
        else:
            radius = width - (width // iterations) * it - 1
        b = base if radius == 0 else ndi.binary_dilation(base, structure=_diamond(radius, variant))
        inside = ~b
        total = ndi.correlate(np.where(inside, out, 0.0), ones, mode=border)
        count = ndi.correlate(inside.astype(np.float64), ones, mode=border)
        mean = np.divide(total, count, out=out.copy(), where=count != 0)
        out = np.where(b, mean, out)
    return out


def _ref_smooth(x: np.ndarray, size: int = 7, sigma: float = 1.0, dilation: int = 6):
    c = (size - 1) / 2
    g = np.fromfunction(
        lambda a, b: np.exp(-((a - c) ** 2 + (b - c) ** 2) / (2 * sigma**2)), (size, size)
    )
    g /= g.sum()
    k = np.zeros(((size - 1) * dilation + 1,) * 2)
    k[::dilation, ::dilation] = g
    return ndi.correlate(x, k, mode="nearest")


def _ref_stats(fit_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mx, pred = fit_logits.max(axis=1).ravel(), fit_logits.argmax(axis=1).ravel()
    c = fit_logits.shape[1]
    mean = np.array([mx[pred == k].mean() for k in range(c)])
    var = np.array([mx[pred == k].var(ddof=1) for k in range(c)])
    return mean, var


def _ref_sml(
    logits: np.ndarray, mean, var, width, iterations, smooth=True, variant=""
) -> np.ndarray:
    out = []
    for z in logits.astype(np.float64):
        pred = z.argmax(axis=0)
        s = (z.max(axis=0) - mean[pred]) / np.sqrt(var[pred])
        if iterations:
            s = _ref_suppress(s, pred, width, iterations, variant)
        if smooth:
            s = _ref_smooth(s)
        out.append(-s)
    return np.stack(out)


def _blobby_logits(seed: int, n: int = 2, c: int = 5, size=(44, 58)) -> torch.Tensor:
    """Smooth random logits: predicted regions are blobs, with a little pixel noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, c, 6, 8, generator=g) * 3.0
    up = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
    return up + 0.05 * torch.randn(n, c, *size, generator=g)


def _fitted(seed: int, **options) -> tuple[SML, np.ndarray, np.ndarray]:
    fit = _blobby_logits(seed + 100, n=3)
    stats = ClassStats(fit.shape[1])
    for part in fit.split(2):  # statistics must not depend on batching
        m, c = part.max(dim=1)
        stats.update(m, c)
    method = SML(**options)
    method.fit_from_stats(stats)
    mean, var = _ref_stats(fit.numpy().astype(np.float64))
    return method, mean, var


def test_statistics_are_mean_and_unbiased_variance() -> None:
    method, mean, var = _fitted(0)
    np.testing.assert_allclose(method.mean.numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(method.std.numpy(), np.sqrt(var), rtol=1e-6)
    # the population std would differ measurably from the unbiased one on a small class
    stats = ClassStats(1)
    stats.update(torch.tensor([1.0, 2.0, 4.0]), torch.zeros(3, dtype=torch.long))
    _, std = stats.mean_std()
    assert std.item() == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1), rel=1e-12)


def test_boundary_is_cross_dilation_vs_square_erosion() -> None:
    # a pixel whose only other label is a diagonal neighbour: boundary only when that
    # neighbour's label is the smaller one
    pred = torch.zeros(1, 5, 5, dtype=torch.long)
    pred[0, 2, 2] = 1
    b = label_boundary(pred)[0]
    assert b[2, 2] and b[1, 2] and b[2, 1] and not b[1, 1]  # (1,1) sees 1 only diagonally
    pred = torch.ones(1, 5, 5, dtype=torch.long)
    pred[0, 2, 2] = 0
    b = label_boundary(pred)[0]
    assert b[1, 1] and b[1, 2] and b.sum() == 9  # now the diagonal neighbours count too
    for seed in range(3):
        p = _blobby_logits(seed).argmax(dim=1)
        for i in range(p.shape[0]):
            assert np.array_equal(
                label_boundary(p[i : i + 1])[0].numpy(), _ref_boundary(p[i].numpy())
            )


def test_width_schedule() -> None:
    assert boundary_widths(4, 4) == [3, 2, 1, 0]
    assert boundary_widths(8, 4) == [7, 5, 3, 0]
    assert boundary_widths(4, 2) == [3, 0]
    assert boundary_widths(6, 3) == [5, 3, 0]
    assert boundary_widths(0, 2) == [0, 0]
    assert boundary_widths(3, 1) == [0]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("width,iterations", [(4, 4), (8, 4), (4, 2), (6, 3), (3, 1), (0, 2)])
def test_sml_matches_authors_definition(seed: int, width: int, iterations: int) -> None:
    method, mean, var = _fitted(seed, boundary_width=width, boundary_iterations=iterations)
    logits = _blobby_logits(seed)
    ours = method.score(logits).numpy()
    ref = _ref_sml(logits.numpy(), mean, var, width, iterations)
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize("variant", ["square boundary", "square widening", "zero padding"])
def test_reference_detects_each_detail(variant: str) -> None:
    # each detail of the authors' definition changes the scores by far more than the tolerance
    method, mean, var = _fitted(0)
    logits = _blobby_logits(0)
    other = _ref_sml(logits.numpy(), mean, var, 4, 4, variant=variant)
    assert np.abs(method.score(logits).numpy() - other).max() > 1e-3


@pytest.mark.parametrize("seed", [3, 4])
def test_suppression_alone_and_smoothing_alone(seed: int) -> None:
    logits = _blobby_logits(seed)
    for smoothing, suppression in ((False, True), (True, False)):
        method, mean, var = _fitted(seed, smoothing=smoothing, boundary_suppression=suppression)
        ours = method.score(logits).numpy()
        ref = _ref_sml(logits.numpy(), mean, var, 4, 4 if suppression else 0, smooth=smoothing)
        assert np.abs(ours - ref).max() <= TOL
