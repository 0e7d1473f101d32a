"""One prediction contract for both backends: the onnxruntime predictor feeds the exported
graph exactly what the PyTorch predictor feeds the model (the spec's resize policy), scores
the logits at the image's size the same way, applies only a threshold calibrated under the
same settings, and records what it did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from conftest import make_tiny_tree, spec_for
from hazardseg.cli import main
from hazardseg.data.classes import KNOWN_CLASS_NAMES
from hazardseg.deploy import DeployError
from hazardseg.deploy.onnx_check import sample_images
from hazardseg.deploy.onnx_export import ExportOptions, export_checkpoint
from hazardseg.deploy.predictor import OnnxMapPredictor, open_predictor
from hazardseg.errors import HazardsegError
from hazardseg.evaluation.calibrate import calibrate
from hazardseg.evaluation.spec import SpecRequest
from hazardseg.inference.predict import PredictOptions, predict
from hazardseg.inference.predictor import MapPredictor
from hazardseg.models import create_model
from hazardseg.models.checkpoint import save_checkpoint

METHODS = ("max_logit", "sml")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("backends") / "sh"
    return make_tiny_tree(root, counts={"train": 3, "validation": 2, "test": 1})


def _checkpoint(folder: Path, resize: str) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(
        folder / "best.pt",
        create_model("lraspp_mobilenet_v3").eval(),
        model_name="lraspp_mobilenet_v3",
        class_names=list(KNOWN_CLASS_NAMES),
        config={"eval": {"resize": resize, "fit_images": 3, "batch_size": 2}},
        epoch=0,
        best_metric=None,
    )


def _images(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = folder / f"img{i}_{w}x{h}.png"
        Image.fromarray(sample_images(1, h, w, seed=60 + i).numpy()[0]).save(path)
        paths.append(path)
    return paths


def _compare_backends(
    torch_p: MapPredictor, onnx_p: OnnxMapPredictor, images: list[Path], out: Path
) -> None:
    """Both backends find the same calibrated threshold, feed the network the same input
    size and flag the same pixels: at most 0.1% differ, none farther than 1e-3 (relative to
    the scores' scale) from the threshold."""
    from hazardseg.data.transforms import load_image

    assert onnx_p.resize == torch_p.resize
    assert torch_p.threshold is not None and onnx_p.threshold == torch_p.threshold
    method = torch_p.method_name
    a = predict(torch_p, images, out / f"torch_{method}")
    b = predict(onnx_p, images, out / f"onnx_{method}")
    assert a["threshold"] == b["threshold"] and b["resize"] == torch_p.resize
    thr = a["threshold"]
    for ra, rb, path in zip(a["images"], b["images"], images, strict=True):
        assert ra["input_size"] == rb["input_size"]  # the same network input
        sa = torch_p(load_image(path)).score
        sb = onnx_p.predict_batch([load_image(path)])[0].score
        scale = max(1.0, float(np.abs(sa).max()))
        assert np.abs(sa - sb).max() <= 1e-4 * scale, (method, path.name)
        ma = np.asarray(Image.open(ra["files"]["mask"])) > 0
        mb = np.asarray(Image.open(rb["files"]["mask"])) > 0
        differ = ma != mb
        assert differ.mean() <= 0.001, (method, path.name, differ.mean())
        assert not (differ & (np.abs(sa - thr) > 1e-3 * scale)).any()


@pytest.fixture(scope="module")
def dynamic(tree, tmp_path_factory) -> dict:
    """A checkpoint evaluating at 48x32, calibrated there (max_logit and sml) and, for
    max_logit, also at native and short:24; exported with dynamic shapes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base = tmp_path_factory.mktemp("dynamic")
        ckpt = _checkpoint(base / "run", "48x32")
        calibrate(ckpt, tree, "validation", spec_for(ckpt, methods=",".join(METHODS)))
        for resize in ("native", "short:24"):
            calibrate(ckpt, tree, "validation", spec_for(ckpt, methods="max_logit", resize=resize))
        onnx = base / "dynamic.onnx"
        export_checkpoint(
            ckpt, onnx, options=ExportOptions(dynamic=True, threads=1), methods=list(METHODS)
        )
    finally:
        torch.set_num_threads(threads)
    return {"ckpt": ckpt, "onnx": onnx, "base": base}


@pytest.mark.parametrize(
    ("method", "resize"),
    [("max_logit", "48x32"), ("sml", "48x32"), ("max_logit", "native"), ("max_logit", "short:24")],
)
def test_dynamic_graph_equals_torch_under_every_policy(
    dynamic, tmp_path, one_torch_thread, method, resize
):
    """The calibrated spec (48x32) and the other policies a user can pick with --resize."""
    images = _images(tmp_path / "in", [(48, 64), (51, 77)])
    torch_p = MapPredictor(dynamic["ckpt"], method, spec_for(dynamic["ckpt"], resize=resize))
    request = SpecRequest({"resize": resize})
    onnx_p = open_predictor("onnxruntime", method, source=dynamic["onnx"], request=request)
    assert onnx_p.resize == resize and onnx_p.segmenter.input_size is None
    _compare_backends(torch_p, onnx_p, images, tmp_path)


@pytest.mark.slow
def test_fixed_graph_made_at_the_specs_size_equals_torch(tree, tmp_path, one_torch_thread):
    """short:24 calibrated; a fixed export without --height/--width is made at the size the
    policy gives StreetHazards' 16:9 frames, and 16:9 images of any size predict equally."""
    from hazardseg.deploy.onnx_export import spec_export_size

    assert spec_export_size("48x32") == (32, 48) and spec_export_size("native") == (720, 1280)
    ckpt = _checkpoint(tmp_path / "run", "short:24")
    calibrate(ckpt, tree, "validation", spec_for(ckpt, methods=",".join(METHODS)))
    onnx = tmp_path / "fixed.onnx"
    report = export_checkpoint(ckpt, onnx, options=ExportOptions(threads=1), methods=list(METHODS))
    assert report.input_shape[1:3] == [24, 43] == list(spec_export_size("short:24"))
    images = _images(tmp_path / "in", [(72, 128), (36, 64)])
    for method in METHODS:
        _compare_backends(
            MapPredictor(ckpt, method), OnnxMapPredictor(onnx, method, threads=1), images, tmp_path
        )


def test_fixed_graph_refuses_images_the_policy_sizes_otherwise(tree, tmp_path, one_torch_thread):
    ckpt = _checkpoint(tmp_path / "run", "native")
    calibrate(ckpt, tree, "validation", spec_for(ckpt, methods="max_logit"))
    onnx = tmp_path / "fixed.onnx"
    options = ExportOptions(height=48, width=64, threads=1)
    export_checkpoint(ckpt, onnx, options=options, methods=["max_logit"])
    meta = OnnxMapPredictor(onnx, "max_logit", threads=1)
    # images of the graph's size: the native policy needs no resize, both backends agree
    _compare_backends(
        MapPredictor(ckpt, "max_logit"), meta, _images(tmp_path / "ok", [(48, 64)]), tmp_path
    )
    (odd,) = _images(tmp_path / "in", [(51, 77)])
    with pytest.raises(DeployError, match=r"takes 64x48 \(WxH\).*--dynamic.*--resize 64x48"):
        predict(meta, [odd], tmp_path / "o", PredictOptions(threshold=0.0))
    # asking for the graph's size works, and predictions.json says what was done
    request = SpecRequest({"resize": "64x48"})
    pred = open_predictor("onnxruntime", "max_logit", source=onnx, request=request, threads=1)
    out = predict(pred, [odd], tmp_path / "o2", PredictOptions(threshold=0.0))
    doc = json.loads((tmp_path / "o2" / "predictions.json").read_text())
    assert doc["resize"] == "64x48" and doc["images"][0]["input_size"] == "64x48"
    assert doc["graph_input"] == "64x48" and doc["tta"] == "none" and doc["precision"] == "fp32"
    assert out["images"][0]["width"] == 77  # maps at the image's own size
    for flag, value in (("tta", "flip"), ("precision", "bf16"), ("device", "cuda")):
        with pytest.raises(DeployError, match=f"--{flag}"):
            open_predictor("onnxruntime", "max_logit", source=onnx,
                           request=SpecRequest({flag: value}))  # fmt: skip


def test_a_threshold_of_other_settings_is_refused_by_both_backends(
    dynamic, tmp_path, one_torch_thread, capsys
):
    """sml was calibrated at 48x32 only: asked at native, neither backend uses that
    threshold, and both say which setting differs; --threshold still works."""
    (img,) = _images(tmp_path / "in", [(48, 64)])
    for backend, flag, source in (
        ("torch", "--checkpoint", dynamic["ckpt"]),
        ("onnxruntime", "--onnx", dynamic["onnx"]),
    ):
        args = ["predict", str(img), "--out", str(tmp_path / backend), "--backend", backend,
                flag, str(source), "--method", "sml", "--resize", "native", "--quiet"]  # fmt: skip
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2, err
        assert "needs fitted state under resize native" in err
        assert len(err.strip().splitlines()) == 1
        code = main([*args, "--method", "max_logit", "--resize", "48x32", "--threshold", "0"])
        assert code == 0
        doc = json.loads((tmp_path / backend / "predictions.json").read_text())
        assert doc["resize"] == "48x32" and doc["threshold_source"] == "--threshold"
        assert doc["backend"] == backend
    with pytest.raises(HazardsegError, match="checkpoint"):
        open_predictor("torch", "max_logit", source=None)
