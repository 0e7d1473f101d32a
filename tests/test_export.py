"""ONNX export (hazardseg.deploy.onnx_export), the onnxruntime runner and `hazardseg export`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from hazardseg.anomaly import create_method
from hazardseg.anomaly.sml import ClassStats
from hazardseg.anomaly.state import AnomalyState
from hazardseg.anomaly.thresholds import ThresholdSettings
from hazardseg.cli import main
from hazardseg.data.classes import KNOWN_CLASS_NAMES
from hazardseg.data.transforms import normalize
from hazardseg.deploy import DeployError, ExportError, MissingDependencyError, require
from hazardseg.deploy.export_methods import build_methods, resolve_method_names
from hazardseg.deploy.onnx_check import sample_images
from hazardseg.deploy.onnx_export import ExportOptions, export_model
from hazardseg.deploy.onnx_graph import functional_neighbour_reduce, onnx_friendly_filters
from hazardseg.deploy.onnx_runtime import OnnxSegmenter, read_metadata
from hazardseg.errors import HazardsegError
from hazardseg.models import create_model
from hazardseg.models.checkpoint import file_sha256, save_checkpoint

ALL = ["msp", "max_logit", "energy", "entropy", "sml"]


def _torch_reference(model: nn.Module, images: np.ndarray) -> torch.Tensor:
    """Logits of the plain PyTorch path: x / 255, ImageNet normalisation, model(x)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        return model(normalize(x))["out"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """lraspp_mobilenet_v3 (random weights, seed 0) with a fitted SML state, exported with
    every method and dynamic shapes through the CLI."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("export")
        torch.manual_seed(0)
        model = create_model("lraspp_mobilenet_v3").eval()
        ckpt = save_checkpoint(
            root / "best.pt",
            model,
            model_name="lraspp_mobilenet_v3",
            class_names=KNOWN_CLASS_NAMES,
            config={},
            epoch=0,
            best_metric=None,
            rng=False,
        )
        logits = _torch_reference(model, sample_images(2, 64, 64, seed=5).numpy())
        stats = ClassStats(13)
        stats.update(*logits.max(dim=1))
        sml = create_method("sml")
        sml.fit_from_stats(stats)
        sha = file_sha256(ckpt)
        state = AnomalyState.open(root / "anomaly_state.pt", sha)
        fit = {"split": "train", "max_images": 100, "resize": "native", "tta": "none"}
        state.record_fit(sml, fit)
        native = ThresholdSettings("native", True, "fp32", "none", "auto")
        state.set_threshold(sml, fit, native, {"threshold": 0.5, "target": 0.95, "split": "val"})
        state.save()
        out = root / "model.onnx"
        rc = main(
            [
                "export",
                "--checkpoint",
                str(ckpt),
                "--out",
                str(out),
                "--method",
                "all",
                "--dynamic",
                "--height",
                "72",
                "--width",
                "72",
                "--threads",
                "1",
            ]
        )
    finally:
        torch.set_num_threads(threads)
    return {"rc": rc, "onnx": out, "ckpt": ckpt, "model": model, "sha": sha, "root": root}


def test_cli_export_writes_checked_model(exported):
    assert exported["rc"] == 0
    path = exported["onnx"]
    assert path.is_file()
    assert not list(path.parent.glob(".model.onnx.*"))  # no temporary left behind


def test_runner_matches_pytorch_at_two_sizes(exported, one_torch_thread):
    seg = OnnxSegmenter(exported["onnx"], threads=1)
    assert seg.methods == ALL and seg.input_size is None
    assert seg.session.get_inputs()[0].shape == ["batch", "height", "width", 3]
    (entry,) = AnomalyState.read(exported["root"] / "anomaly_state.pt").fits
    sml = create_method("sml", **entry["options"])
    sml.load_state_dict(entry["state"])
    reference = {name: create_method(name) for name in ALL if name != "sml"} | {"sml": sml}
    for n, h, w in ((2, 64, 64), (1, 72, 100)):
        images = sample_images(n, h, w, seed=h).numpy()
        out = seg.run(list(images), logits=True)
        logits = _torch_reference(exported["model"], images)
        assert out.logits.shape == (n, 13, h, w)
        assert np.abs(out.logits - logits.numpy()).max() <= 1e-4
        assert out.class_map.dtype == np.uint8 and out.class_map.shape == (n, h, w)
        agree = (out.class_map == logits.argmax(1).numpy()).mean()
        assert agree >= 0.999
        conf = torch.softmax(logits, 1).amax(1).numpy()
        assert np.abs(out.confidence - conf).max() <= 1e-5
        for name, method in reference.items():
            expected = method.score(logits).numpy()
            scale = max(1.0, float(np.abs(expected).max()))
            assert np.abs(out.scores[name] - expected).max() <= 1e-4 * scale, name
    # a subset of scores, no confidence
    out = seg.run(images[0], methods=["energy"], confidence=False)
    assert list(out.scores) == ["energy"] and out.confidence is None and out.logits is None


def test_metadata_round_trip(exported):
    meta = read_metadata(exported["onnx"])
    assert meta.model_name == "lraspp_mobilenet_v3"
    assert meta.class_names == list(KNOWN_CLASS_NAMES) and meta.num_classes == 13
    assert meta.methods == ALL and meta.dynamic and meta.input_size is None
    assert meta.checkpoint_sha256 == exported["sha"]
    assert meta.thresholds["sml"]["threshold"] == 0.5
    assert meta.method_options["energy"] == {"temperature": 1.0}
    assert meta.method_options["sml"]["boundary_width"] == 4
    assert meta.layout == "NHWC"
    assert meta.normalization["scale"] == 255.0 and len(meta.normalization["mean"]) == 3
    check = meta.export_check
    assert check["logits_max_abs_diff"] <= 1e-4 and check["argmax_agreement"] >= 0.999
    assert set(check["score_max_abs_diff"]) == set(ALL)
    assert json.loads(json.dumps(meta.to_dict()))["input_size"] is None


def test_runner_input_errors(exported):
    seg = OnnxSegmenter(exported["onnx"], threads=1)
    with pytest.raises(DeployError, match="uint8"):
        seg.run(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(DeployError, match=r"\(H, W, 3\)"):
        seg.run(np.zeros((32, 32), np.uint8))
    with pytest.raises(DeployError, match="share one size"):
        seg.run([np.zeros((32, 32, 3), np.uint8), np.zeros((32, 40, 3), np.uint8)])
    with pytest.raises(DeployError, match="heat"):
        seg.run(np.zeros((32, 32, 3), np.uint8), methods=["heat"])
    with pytest.raises(DeployError, match="optimisation level"):
        OnnxSegmenter(exported["onnx"], optimization="fast")


class TinySeg(nn.Module):
    """A one-convolution 13-class model: exports in about a second."""

    name = "tiny"
    num_classes = 13

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 13, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.conv(x)}


class Branchy(TinySeg):
    """Control flow on tensor values: cannot be traced into one graph."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.conv(x)
        if float(out.mean()) > 0:
            out = out * 2
        return {"out": out}


def test_static_export_fixes_size_batch_stays_free(tmp_path, one_torch_thread):
    report = export_model(
        TinySeg(),
        tmp_path / "tiny.onnx",
        methods={"msp": create_method("msp")},
        options=ExportOptions(height=20, width=28, threads=1),
    )
    assert report.input_shape == ["batch", 20, 28, 3]
    assert report.outputs["logits"]["shape"] == ["batch", 13, 20, 28]
    assert report.outputs["score_msp"]["dtype"] == "float32"
    assert "check on" in report.summary()
    seg = OnnxSegmenter(tmp_path / "tiny.onnx", threads=1)
    assert seg.input_size == (20, 28)
    out = seg.run(np.zeros((3, 20, 28, 3), np.uint8))
    assert out.class_map.shape == (3, 20, 28)
    with pytest.raises(DeployError, match="takes 20x28"):
        seg.run(np.zeros((24, 28, 3), np.uint8))


def test_export_refusals_write_nothing(tmp_path, one_torch_thread):
    out = tmp_path / "x.onnx"
    with pytest.raises(ExportError, match="cannot be exported to ONNX"):
        export_model(Branchy(), out, options=ExportOptions(height=16, width=16, threads=1))
    with pytest.raises(ExportError, match="needs the network's features"):
        export_model(TinySeg(), out, methods={"heat": create_method("heat")})
    with pytest.raises(ExportError, match="too small"):
        export_model(TinySeg(), out, options=ExportOptions(height=8, width=8))
    tight = ExportOptions(height=16, width=16, threads=1, logits_tolerance=-1.0)
    with pytest.raises(ExportError, match="logits differ from PyTorch"):
        export_model(TinySeg(), out, options=tight)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_method_resolution_and_state_errors(tmp_path):
    assert resolve_method_names("all") == ALL
    assert resolve_method_names(["msp,energy", "msp"]) == ["msp", "energy"]
    with pytest.raises(ExportError, match="'heat' cannot be exported"):
        resolve_method_names(["heat"])
    from hazardseg.anomaly import list_methods

    for name in set(list_methods()) - {*ALL, "heat", "rba"}:  # feature methods added later
        with pytest.raises(ExportError, match=f"'{name}' cannot be exported"):
            resolve_method_names([name])
    # rba: mask-classification models only; "all" includes it for them
    with pytest.raises(ExportError, match="'rba' needs a mask2former model"):
        resolve_method_names(["rba"], family="lraspp")
    assert resolve_method_names("all", family="mask2former") == [*ALL, "rba"]
    with pytest.raises(ExportError, match="unknown anomaly method 'foo'"):
        resolve_method_names("foo")
    with pytest.raises(ExportError, match="needs fitted statistics"):
        build_methods(["sml"], None, "abc")
    with pytest.raises(ExportError, match="fitted for checkpoint sha256"):
        build_methods(["sml"], AnomalyState(tmp_path / "s.pt", "other"), "abc")
    state = AnomalyState(tmp_path / "s.pt", "abc")
    sml = create_method("sml")
    sml.load_state_dict({"mean": torch.zeros(13), "std": torch.ones(13)})
    state.record_fit(sml, {"split": "train", "max_images": 9, "resize": "native", "tta": "flip"})
    with pytest.raises(ExportError, match="test-time augmentation 'flip'"):
        build_methods(["sml"], state, "abc")
    with pytest.raises(ExportError, match="not exported"):
        build_methods(["msp"], None, "abc", options={"energy": {"temperature": 2}})
    built, _ = build_methods(["energy"], None, "abc", options={"energy": {"temperature": 2}})
    assert built["energy"].options == {"temperature": 2.0}


def test_functional_neighbour_reduce_equals_sml_helper():
    from hazardseg.anomaly import sml

    gen = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 4, (2, 9, 11), generator=gen)
    mask = torch.rand(2, 9, 11, generator=gen) > 0.8
    cases = [(pred, torch.maximum), (pred, torch.minimum), (mask, torch.logical_or)]
    for x, reduce in cases:
        for offsets in (sml._CROSS, sml._SQUARE):
            expected = sml._neighbour_reduce(x, offsets, reduce)
            assert torch.equal(functional_neighbour_reduce(x, offsets, reduce), expected)
    with onnx_friendly_filters() as replaced:
        assert replaced == ["_neighbour_reduce"]
        assert sml._neighbour_reduce is functional_neighbour_reduce
    assert sml._neighbour_reduce is not functional_neighbour_reduce


def test_cli_errors_exit_2(tmp_path, exported, capsys):
    ckpt = str(exported["ckpt"])
    cases = [
        (["--method", "heat"], "'heat' cannot be exported"),
        (["--height", "64"], "give both --height and --width"),
        (["--out", str(tmp_path / "m.txt")], "ending in .onnx"),
        (["--state", str(tmp_path / "none.pt"), "--method", "sml"], "not found"),
        (["--checkpoint", str(tmp_path / "missing.pt")], "not found"),
    ]
    for extra, message in cases:
        args = ["export", "--checkpoint", ckpt, "--out", str(tmp_path / "m.onnx"), *extra]
        assert main(args) == 2, extra
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    # sml without any anomaly state beside the checkpoint
    bare = tmp_path / "bare.pt"
    bare.write_bytes(Path(ckpt).read_bytes())
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(bare),
                "--out",
                str(tmp_path / "m.onnx"),
                "--method",
                "sml",
            ]
        )
        == 2
    )
    assert "needs fitted statistics" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_not_a_hazardseg_export(tmp_path):
    import onnx

    path = tmp_path / "plain.onnx"
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])],
            "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
    )
    onnx.save(model, path)
    with pytest.raises(DeployError, match="not a hazardseg export"):
        read_metadata(path)
    with pytest.raises(DeployError, match="not a hazardseg export"):
        OnnxSegmenter(path)
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(DeployError, match=r"junk\.onnx"):
        OnnxSegmenter(tmp_path / "junk.onnx")
    with pytest.raises(DeployError, match="not found"):
        read_metadata(tmp_path / "missing.onnx")


def test_missing_dependency_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError) as info:
        require("onnxruntime", "running an ONNX model")
    message = str(info.value)
    assert 'pip install "hazardseg[deploy]"' in message and "\n" not in message


def test_import_hazardseg_needs_no_deploy_packages():
    code = (
        "import sys, hazardseg, hazardseg.cli, hazardseg.deploy, hazardseg.inference.video\n"
        "bad = [m for m in ('onnx', 'onnxruntime', 'onnxscript', 'av') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- predict with the onnxruntime backend, and on videos -------------------------------------


def _write_images(folder: Path) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(((48, 64), (48, 64), (51, 77))):
        arr = sample_images(1, h, w, seed=40 + i).numpy()[0]
        path = folder / f"img{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def test_predict_onnxruntime_backend_equals_torch(exported, tmp_path, one_torch_thread):
    """Same files, and the same masks at the same threshold, as the PyTorch backend (scores
    within 1e-4; pixels whose score lies within that of the threshold may flip)."""
    from PIL import Image

    from hazardseg.data.transforms import load_image
    from hazardseg.deploy.predictor import OnnxMapPredictor
    from hazardseg.inference.predict import PredictOptions, predict
    from hazardseg.inference.predictor import MapPredictor

    paths = _write_images(tmp_path / "in")
    for method in ("max_logit", "energy", "sml"):
        thr = {"max_logit": 0.0, "energy": -2.6, "sml": 0.5}[method]
        tp = MapPredictor(exported["ckpt"], method)
        op = OnnxMapPredictor(exported["onnx"], method, threads=1)
        options = PredictOptions(threshold=thr)
        a = predict(tp, paths, tmp_path / f"t_{method}", options)
        b = predict(op, paths, tmp_path / f"o_{method}", options)
        assert b["backend"] == "onnxruntime" and len(a["images"]) == len(b["images"]) == 3
        for ra, rb, path in zip(a["images"], b["images"], paths, strict=True):
            assert Path(ra["files"]["mask"]).name == Path(rb["files"]["mask"]).name
            sa, sb = tp(load_image(path)).score, op.predict_batch([load_image(path)])[0].score
            assert sa.shape == sb.shape and np.abs(sa - sb).max() <= 1e-4
            ma = np.asarray(Image.open(ra["files"]["mask"])) > 0
            mb = np.asarray(Image.open(rb["files"]["mask"])) > 0
            near = np.abs(sa - thr) <= 1e-4
            assert np.array_equal(ma[~near], mb[~near])


def test_predict_onnxruntime_threshold_from_metadata_and_errors(exported, tmp_path):
    from hazardseg.deploy.predictor import open_predictor
    from hazardseg.evaluation.spec import SpecRequest
    from hazardseg.inference.predict import predict

    paths = _write_images(tmp_path / "in")
    onnx = exported["onnx"]
    res = predict(
        open_predictor("onnxruntime", "sml", source=onnx, threads=1), paths[:1], tmp_path / "o"
    )
    assert res["threshold"] == 0.5 and "model.onnx" in res["threshold_source"]
    assert res["images"][0]["width"] == 64  # maps at the image's own size
    # sml was fitted (and calibrated) at resize native: neither is used at another resize
    request = SpecRequest({"resize": "48x32"})
    with pytest.raises(HazardsegError, match=r"needs fitted state under resize 48x32"):
        open_predictor("onnxruntime", "sml", source=onnx, request=request, threads=1)
    rc = main(["predict", str(paths[0]), "--out", str(tmp_path / "x"), "--backend",
               "onnxruntime", "--threshold", "0"])  # fmt: skip
    assert rc == 2
    rc = main(["predict", str(paths[0]), "--out", str(tmp_path / "x"), "--backend",
               "onnxruntime", "--onnx", str(exported["onnx"]), "--method", "heat",
               "--threshold", "0"])  # fmt: skip
    assert rc == 2
    rc = main(["predict", str(paths[0]), "--out", str(tmp_path / "x"), "--threshold", "0"])
    assert rc == 2  # torch backend without --checkpoint


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_predict_video_streams_overlay_and_frame_records(exported, tmp_path, backend):
    pytest.importorskip("av")
    from hazardseg.inference.video_writer import VideoWriter

    video = tmp_path / "drive.mp4"
    rng = np.random.default_rng(0)
    with VideoWriter(video, 10) as writer:
        for _ in range(7):
            writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    out = tmp_path / "out"
    args = ["predict", str(video), "--out", str(out), "--threshold", "0", "--every", "2",
            "--quiet"]  # fmt: skip
    if backend == "torch":
        args += ["--checkpoint", str(exported["ckpt"])]
    else:
        args += ["--backend", "onnxruntime", "--onnx", str(exported["onnx"]), "--threads", "1"]
    assert main(args) == 0
    rows = [json.loads(x) for x in (out / "drive" / "frames.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == [0, 2, 4, 6]
    assert all(0.0 <= r["anomaly_fraction"] <= 1.0 and r["threshold"] == 0.0 for r in rows)
    assert (out / "drive" / "overlay.mp4").stat().st_size > 0
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["videos"][0]["out"] == str(out / "drive")


class _TiedClasses(nn.Module):
    """Classes 0 and 1 share their weights up to ~1e-7: their logits tie to float rounding at
    many pixels, where onnxruntime and PyTorch may pick different classes."""

    num_classes = 4

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.body = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
            self.head.weight[1] = self.head.weight[0] + 3e-7 * torch.randn(
                self.head.weight[0].shape, generator=g
            )
            self.head.bias[1] = self.head.bias[0]

    def forward(self, x: torch.Tensor, return_features: bool = False) -> dict[str, torch.Tensor]:
        f = torch.nn.functional.avg_pool2d(torch.tanh(self.body(x)), 2)
        logits = torch.nn.functional.interpolate(self.head(f), size=x.shape[-2:], mode="bilinear")
        return {"out": logits}


@pytest.mark.parametrize(
    ("dynamic", "height", "width"), [(False, 37, 53), (False, 96, 128), (True, 40, 56)]
)
def test_sml_export_passes_its_check_where_logits_tie(
    tmp_path, one_torch_thread, dynamic, height, width
):
    """SML uses the predicted class; where the two largest logits tie to float rounding the
    backends may choose differently and SML's maps then differ near those pixels. The check
    compares SML away from them (its label reach) and still catches real differences."""
    model = _TiedClasses().eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    stats = ClassStats(4)
    stats.update(*logits["out"].max(dim=1))
    sml = create_method("sml")
    sml.fit_from_stats(stats)
    report = export_model(
        model,
        tmp_path / "tied.onnx",
        options=ExportOptions(height=height, width=width, dynamic=dynamic, threads=1),
        methods={"sml": sml, "max_logit": create_method("max_logit")},
    )
    check = report.check
    assert check["argmax_disagreements"] > 0  # the situation this test is about
    assert check["score_pixels_near_ties"]["sml"] > 0
    assert "max_logit" not in check["score_pixels_near_ties"]  # continuous: compared everywhere
    assert check["score_max_abs_diff"]["sml"] <= 1e-4
    assert "tie to float rounding" in report.summary()


def test_score_difference_leaves_out_only_the_reach_of_flipped_pixels():
    from hazardseg.deploy.onnx_check import score_difference

    ref = np.zeros((1, 40, 40), np.float32)
    flips = np.zeros((1, 40, 40), bool)
    flips[0, 10, 10] = True
    got = ref.copy()
    got[0, 13, 13] = 0.5  # within reach 3 of the flipped pixel
    assert score_difference(ref, got, flips, 3) == (0.0, 49)
    assert score_difference(ref, got, flips, 2)[0] == 0.5  # just outside a reach of 2
    assert score_difference(ref, got, flips, None) == (0.5, 0)  # continuous score: everywhere
    got[0, 30, 30] = 0.25  # far from any flip: a real difference
    assert score_difference(ref, got, flips, 3)[0] == 0.25
    assert create_method("sml").label_reach == 1 + 3 + 4 + 18
    assert create_method("sml", smoothing=False, boundary_suppression=False).label_reach == 0
    assert create_method("max_logit").label_reach is None
