"""``eval-maps`` per frame vs SegmentMeIfYouCan's own pixel-metric code, and its peak memory on
a Cityscapes-sized split.

speed (default): ``--frames`` frames at ``--size`` (1280x720) in two trees built here: the
smiyc-anomaly layout (labels 0/1/255, maps as the benchmark's float16 ``.hdf5``) and the
StreetHazards layout (the same maps as float16 ``.npy``). Timed, each over every frame and
including reading the maps and labels:

- ``official``: road-anomaly-benchmark's ``PixBinaryClass`` as its code computes it (per frame
  ``np.quantile`` bins and ``np.histogram`` counts of the float16 scores, then the merged
  curve); the numpy calls of ``metrics/pixel_classification*.py`` written out here (its
  package needs its own environment). With ``--official-repo DIR`` (a checkout of
  road-anomaly-benchmark whose imports are installed) its own functions are timed instead;
- ``hazardseg smiyc-anomaly``: ``evaluate_maps`` with the dataset's default protocols (exact
  pooled + smiyc pixels) and components (oracle + the track's SegEval: a second read);
- ``hazardseg streethazards``: ``evaluate_maps`` with StreetHazards' defaults (pooled +
  per-image + oracle components) on the same maps.

memory (``--memory``): ``evaluate_maps`` in a child process over ``--frames`` frames at
``--size`` (e.g. 1500 frames at 2048x1024, the size of a Cityscapes split; the maps take
6.3 GB of disk); reports the child's peak RSS.

    python benchmarks/bench_eval_maps.py --frames 40
    python benchmarks/bench_eval_maps.py --memory --frames 1500 --size 2048x1024
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def frame(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """A label (0 road, 1 anomaly blobs, 255 void band) and a float16 score map."""
    label = np.zeros((h, w), np.uint8)
    label[: h // 8] = 255
    for _ in range(int(rng.integers(1, 4))):
        y, x = int(rng.integers(h // 4, h - h // 6)), int(rng.integers(0, w - w // 8))
        label[y : y + h // 10, x : x + w // 12] = 1
    scores = rng.normal(0.3, 0.15, (h, w)) + 0.45 * (label == 1)
    return label, scores.astype(np.float16)


def write_trees(root: Path, n: int, w: int, h: int, hdf5: bool) -> None:
    """smiyc-anomaly (validation frames, .hdf5 maps) and StreetHazards (test, .npy maps)."""
    import h5py

    rng = np.random.default_rng(0)
    image = Image.new("RGB", (w, h))
    for i in range(n):
        label, scores = frame(rng, w, h)
        fid = f"validation{i:04d}"
        (root / "ra/images").mkdir(parents=True, exist_ok=True)
        (root / "ra/labels_masks").mkdir(parents=True, exist_ok=True)
        image.save(root / f"ra/images/{fid}.jpg")
        Image.fromarray(label).save(root / f"ra/labels_masks/{fid}_labels_semantic.png")
        if hdf5:
            (root / "maps_h5").mkdir(exist_ok=True)
            with h5py.File(root / f"maps_h5/{fid}.hdf5", "w") as fh:
                fh.create_dataset("value", data=scores, compression=9)
        sh_label = np.where(label == 1, 14, np.where(label == 255, 0, 8)).astype(np.uint8)
        for kind, arr in (("images", np.zeros((h, w, 3), np.uint8)), ("annotations", sh_label)):
            p = root / "sh/test" / kind / "test" / "t5" / f"{i + 1}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(p)
        (root / "maps_npy/t5").mkdir(parents=True, exist_ok=True)
        np.save(root / f"maps_npy/t5/{i + 1}.npy", scores)
        if not hdf5:
            (root / "maps_ra").mkdir(exist_ok=True)
            np.save(root / f"maps_ra/{fid}.npy", scores)


def official_frame_bins(scores: np.ndarray, positive: np.ndarray, num_bins: int = 768):
    """``binary_confusion_matrix(..., bin_strategy='percentiles')`` of road-anomaly-benchmark:
    the numpy calls it makes (its eps taken in float64, as its pinned numpy 1.23 does)."""
    at_true, at_false = scores[positive], scores[~positive]
    vmin, vmax = np.min(scores), np.max(scores)
    eps = max(float(vmax - vmin) * 1e-2, 1e-2)
    bins = [[float(vmin) - eps, float(vmax) + eps]]
    if at_true.size:
        bins.append(np.quantile(at_true, np.linspace(0, 1, min(num_bins // 2, at_true.size))))
    if at_false.size:
        bins.append(np.quantile(at_false, np.linspace(0, 1, min(num_bins // 2, at_false.size))))
    edges = np.unique(np.concatenate(bins))
    tp_rel, _ = np.histogram(at_true, bins=edges)
    fp_rel, edges = np.histogram(at_false, bins=edges)
    return edges[::-1][1:], tp_rel[::-1], fp_rel[::-1], at_true.size, at_false.size


def official_curve(frames: list) -> dict[str, float]:
    """``aggregate_dynamic_bins`` + ``curves_from_cmats``: AP, AUROC, FPR95."""
    thr = np.concatenate([f[0] for f in frames])
    order = np.argsort(thr)[::-1]
    tp = np.cumsum(np.concatenate([f[1] for f in frames])[order].astype(np.float64))
    fp = np.cumsum(np.concatenate([f[2] for f in frames])[order].astype(np.float64))
    thr = thr[order]
    keep = np.concatenate([[0], np.nonzero(thr[:-1] != thr[1:])[0], [thr.size - 1]])
    tp, fp = np.concatenate([[0.0], tp[keep]]), np.concatenate([[0.0], fp[keep]])
    npos, nneg = sum(f[3] for f in frames), sum(f[4] for f in frames)
    tpr, fpr = tp / npos, fp / nneg
    prec = np.ones_like(tp)
    prec[1:] = tp[1:] / (tp[1:] + fp[1:])
    i95 = int(np.searchsorted(tpr, 0.95))
    return {
        "aupr": float(np.sum(np.diff(tpr) * prec[1:])),
        "auroc": float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)),
        "fpr95": float(fpr[i95]),
    }


def run_official(root: Path, n: int, repo: str | None) -> tuple[float, dict[str, float]]:
    """Seconds to read every frame (hdf5 map, PNG label) and compute PixBinaryClass."""
    import h5py

    bins_fn, curve_fn = official_frame_bins, official_curve
    if repo:
        sys.path.insert(0, repo)
        from road_anomaly_benchmark.metrics import pixel_classification as pc
        from road_anomaly_benchmark.metrics import pixel_classification_curves as pcc

        def bins_fn(s, y):
            return pc.binary_confusion_matrix(s, y, 768, "percentiles")

        def curve_fn(frames):
            ag = pc.aggregate_dynamic_bins(frames)
            with contextlib.redirect_stdout(io.StringIO()):
                c = pcc.curves_from_cmats(ag.cmat, ag.thresholds)
            return {"aupr": c.area_PRC, "auroc": c.area_ROC, "fpr95": c.tpr95_fpr}

    t0 = time.perf_counter()
    frames = []
    for i in range(n):
        fid = f"validation{i:04d}"
        with h5py.File(root / f"maps_h5/{fid}.hdf5", "r") as fh:
            scores = fh["value"][:]
        label = np.asarray(Image.open(root / f"ra/labels_masks/{fid}_labels_semantic.png"))
        roi = label < 255
        frames.append(bins_fn(scores[roi], label[roi].astype(bool)))
    res = curve_fn(frames)
    return time.perf_counter() - t0, res


def run_hazardseg(maps: Path, data: Path, dataset: str, split: str) -> tuple[float, dict]:
    from hazardseg.data.split import DataSource
    from hazardseg.evaluation import evaluate_maps

    t0 = time.perf_counter()
    res = evaluate_maps(maps, DataSource.of(data, dataset), split)
    return time.perf_counter() - t0, res["methods"]["external"]


def speed(args: argparse.Namespace, w: int, h: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_trees(root, args.frames, w, h, hdf5=True)
        rows = []
        for _ in range(args.repeats):
            t_off, off = run_official(root, args.frames, args.official_repo)
            t_ra, ra = run_hazardseg(root / "maps_h5", root / "ra", "smiyc-anomaly", "validation")
            t_sh, _ = run_hazardseg(root / "maps_npy", root / "sh", "streethazards", "test")
            rows.append((t_off, t_ra, t_sh))
        t_off, t_ra, t_sh = (min(r[i] for r in rows) for i in range(3))
        n = args.frames
        print(f"{n} frames at {w}x{h}, best of {args.repeats}:")
        print(f"{'':44}{'ms/frame':>10}{'vs official':>13}")
        official = "official PixBinaryClass (pixel metrics only)"
        print(f"{official:44}{1000 * t_off / n:>10.1f}{1:>12.2f}x")
        for label, t in (
            ("hazardseg smiyc-anomaly (pooled+smiyc+comp.)", t_ra),
            ("hazardseg streethazards (pooled+per-image+c.)", t_sh),
        ):
            print(f"{label:44}{1000 * t / n:>10.1f}{t / t_off:>12.2f}x")
        diff = {k: abs(ra["smiyc"][k] - off[k]) for k in ("aupr", "auroc", "fpr95")}
        print(f"smiyc vs official: max |difference| {max(diff.values()):.2e} {diff}")
        print(f"binned AP - exact AP: {ra['smiyc']['aupr'] - ra['pooled']['aupr']:+.4f}")


def memory(args: argparse.Namespace, w: int, h: int) -> None:
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_trees(root, args.frames, w, h, hdf5=False)
        print(f"wrote {args.frames} frames at {w}x{h} in {time.perf_counter() - t0:.0f} s")
        code = (
            "import json, sys, time, resource\n"
            "from hazardseg.data.split import DataSource\n"
            "from hazardseg.evaluation import evaluate_maps\n"
            "t0 = time.perf_counter()\n"
            f"r = evaluate_maps({str(root / 'maps_ra')!r}, DataSource.of({str(root / 'ra')!r},"
            " 'smiyc-anomaly'), 'validation')\n"
            "m = r['methods']['external']\n"
            "print(json.dumps({'s': time.perf_counter() - t0, 'ap': m['smiyc']['aupr'],"
            " 'pooled_ap': m['pooled']['aupr'],"
            " 'rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        print(
            f"evaluate_maps: {args.frames} frames in {res['s']:.0f} s "
            f"({1000 * res['s'] / args.frames:.0f} ms/frame), peak RSS {res['rss_gb']:.2f} GB "
            f"(child {child:.2f} GB), smiyc AP {res['ap']:.4f}, exact pooled AP "
            f"{res['pooled_ap']:.4f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--official-repo", default=None)
    parser.add_argument("--tmp", default=None, help="Folder for the generated trees.")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    (memory if args.memory else speed)(args, w, h)


if __name__ == "__main__":
    main()
