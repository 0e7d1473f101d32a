"""Unit tests of the training pieces: schedule, early stopping, loss, class weights, run dir,
metrics log, resume-config check, precision and seeding (no training runs here)."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hazardseg.config import ExperimentConfig, TrainConfig, apply_overrides
from hazardseg.data.classes import IGNORE_INDEX
from hazardseg.distributed import DistContext, launched_by_torchrun, shard_indices
from hazardseg.errors import ConfigError, HazardsegError
from hazardseg.run_folder import read_metric_rows
from hazardseg.training import (
    EarlyStopping,
    MetricLogger,
    Scheduler,
    SegmentationLoss,
    build_optimizer,
    class_pixel_counts,
    class_weights_from_counts,
    poly_factor,
)
from hazardseg.training.checkpointing import check_resume_config
from hazardseg.training.class_weights import class_weight_record, read_class_weight_cache
from hazardseg.training.metrics_log import MetricsLog, csv_columns, flatten_row
from hazardseg.training.rundir import (
    best_copy_name,
    check_run_dir,
    clear_run_dir,
    publish_best_copy,
    remove_stale_temp_files,
)
from hazardseg.training.steps import epoch_seed, resolve_precision


# ---------------------------------------------------------------- early stopping
def test_early_stopping_counts_checks_without_improvement() -> None:
    es = EarlyStopping(patience=2, min_delta=0.01)
    assert es.step(0.50) is True
    assert es.step(0.505) is False  # within min_delta: not an improvement
    assert not es.should_stop
    assert es.step(0.52) is True  # resets the counter
    assert es.step(0.52) is False
    assert es.step(float("nan")) is False
    assert es.should_stop
    assert es.best == pytest.approx(0.52)


def test_early_stopping_none_never_stops_and_state_roundtrips() -> None:
    es = EarlyStopping(patience=None)
    for _ in range(50):
        es.step(0.1)
    assert not es.should_stop
    es2 = EarlyStopping(patience=3)
    es2.step(0.3)
    es2.step(0.2)
    es3 = EarlyStopping(patience=3)
    es3.load_state_dict(json.loads(json.dumps(es2.state_dict())))
    assert (es3.best, es3.bad_checks) == (0.3, 1)
    es3.step(0.1)
    es3.step(0.1)
    assert es3.should_stop


@pytest.mark.parametrize("patience,delta", [(0, 0.0), (2, -0.1)])
def test_early_stopping_rejects_bad_settings(patience: int, delta: float) -> None:
    with pytest.raises(ConfigError):
        EarlyStopping(patience, delta)


# ---------------------------------------------------------------- schedules
def test_poly_factor_hand_values() -> None:
    assert poly_factor(0, 100, 0.9) == 1.0
    assert poly_factor(50, 100, 1.0) == pytest.approx(0.5)
    assert poly_factor(75, 100, 2.0) == pytest.approx(0.0625)
    assert poly_factor(100, 100, 0.9) == 0.0
    assert poly_factor(150, 100, 0.9) == 0.0


def _opt(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def test_poly_scheduler_follows_formula_and_resumes() -> None:
    cfg = TrainConfig(scheduler="poly", poly_power=0.9, lr=0.1)
    opt = _opt()
    sch = Scheduler(opt, cfg, total_iters=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step_iteration()
    expected = [0.1 * (1 - i / 10) ** 0.9 for i in range(10)]
    assert lrs == pytest.approx(expected)
    # resume after 4 steps gives the same lr sequence
    opt_a, opt_b = _opt(), _opt()
    a, b = Scheduler(opt_a, cfg, 10), Scheduler(opt_b, cfg, 10)
    for _ in range(4):
        opt_a.step()
        a.step_iteration()
    state = a.state_dict()
    assert "lr_lambdas" not in state
    b.load_state_dict(state)
    opt_b.param_groups[0]["lr"] = opt_a.param_groups[0]["lr"]
    for _ in range(3):
        opt_a.step()
        a.step_iteration()
        opt_b.step()
        b.step_iteration()
    assert opt_a.param_groups[0]["lr"] == opt_b.param_groups[0]["lr"] == pytest.approx(expected[7])


def test_plateau_scheduler_is_mode_max_and_ignores_iterations() -> None:
    cfg = TrainConfig(scheduler="plateau", plateau_patience=1, plateau_factor=0.5, lr=1.0)
    opt = _opt(1.0)
    sch = Scheduler(opt, cfg, total_iters=100)
    for _ in range(20):
        sch.step_iteration()
    assert opt.param_groups[0]["lr"] == 1.0
    for miou in (0.1, 0.2, 0.3):  # rising mIoU: no reduction
        sch.step_validation(miou)
    assert opt.param_groups[0]["lr"] == 1.0
    sch.step_validation(0.3)
    sch.step_validation(0.25)  # second bad check in a row > patience 1
    assert opt.param_groups[0]["lr"] == 0.5
    sch.step_validation(float("nan"))
    sch.step_validation(float("nan"))
    assert opt.param_groups[0]["lr"] == 0.25


def test_scheduler_none_and_unknown() -> None:
    opt = _opt()
    sch = Scheduler(opt, TrainConfig(scheduler="none"), 10)
    sch.step_iteration()
    sch.step_validation(0.0)
    assert opt.param_groups[0]["lr"] == 0.1 and sch.state_dict() == {}
    with pytest.raises(ConfigError, match=re.escape("train.scheduler")):
        Scheduler(opt, TrainConfig(scheduler="cosine"), 10)


@pytest.mark.parametrize(
    "name,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_build_optimizer(name: str, cls: type) -> None:
    cfg = TrainConfig(optimizer=name, lr=0.01, weight_decay=1e-4)
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    assert isinstance(opt, cls)
    assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[0]["weight_decay"] == 1e-4


def test_build_optimizer_errors() -> None:
    with pytest.raises(ConfigError, match=re.escape("train.optimizer='rmsprop'")):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], TrainConfig(optimizer="rmsprop"))
    with pytest.raises(ConfigError, match=re.escape("train.lr")):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], TrainConfig(lr=0.0))


# ---------------------------------------------------------------- loss
def test_loss_ignores_anomaly_and_255_and_matches_reference() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 13, 5, 6, generator=g)
    aux = torch.randn(2, 13, 5, 6, generator=g)
    target = torch.randint(0, 13, (2, 5, 6), generator=g)
    target[0, 0, :3] = 13  # anomaly
    target[1, 2, :] = IGNORE_INDEX
    keep = target < 13
    ref_main = -F.log_softmax(logits, 1).gather(1, target.clamp(max=12)[:, None])[:, 0][keep].mean()
    ref_aux = -F.log_softmax(aux, 1).gather(1, target.clamp(max=12)[:, None])[:, 0][keep].mean()
    loss = SegmentationLoss(13, aux_weight=0.4)
    got = loss({"out": logits, "aux": aux}, target)
    assert got.item() == pytest.approx((ref_main + 0.4 * ref_aux).item(), rel=1e-5)
    assert loss({"out": logits}, target).item() == pytest.approx(ref_main.item(), rel=1e-5)


def test_weighted_loss_matches_reference_and_all_ignored_is_zero() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 4, 4, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (1, 4, 4), generator=g)
    w = torch.tensor([0.5, 2.0, 1.0])
    nll = -F.log_softmax(logits, 1).gather(1, target[:, None])[:, 0]
    ref = (nll * w[target]).sum() / w[target].sum()
    got = SegmentationLoss(3, weight=w)({"out": logits}, target)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    empty = SegmentationLoss(3)({"out": logits}, torch.full((1, 4, 4), IGNORE_INDEX))
    empty.backward()
    assert empty.item() == 0.0 and torch.all(logits.grad == 0)


def test_loss_rejects_negative_aux_weight() -> None:
    with pytest.raises(ConfigError, match="aux_weight"):
        SegmentationLoss(13, aux_weight=-1.0)


# ---------------------------------------------------------------- class weights
def _write_label(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), "L").save(path)
    return path


def test_class_pixel_counts_hand_computed(tmp_path: Path) -> None:
    # PNG values are ids + 1; 0 = no class, 14 = anomaly: neither counted.
    a = _write_label(tmp_path / "a.png", np.array([[1, 1, 2], [0, 14, 3]]))
    b = _write_label(tmp_path / "b.png", np.array([[2, 2, 2], [13, 1, 0]]))
    counts = class_pixel_counts([a, b], 13)
    expected = np.zeros(13, dtype=np.int64)
    expected[0], expected[1], expected[2], expected[12] = 3, 4, 1, 1
    np.testing.assert_array_equal(counts, expected)


def test_class_weights_formulas() -> None:
    counts = np.array([10, 30, 60, 0])
    f = counts / 100
    med = np.median(f[:3])
    np.testing.assert_allclose(
        class_weights_from_counts(counts, "median_freq"), [med / 0.1, med / 0.3, med / 0.6, 0]
    )
    np.testing.assert_allclose(
        class_weights_from_counts(counts, "inverse_log"), 1 / np.log(1.02 + f)
    )
    with pytest.raises(ConfigError, match="class_weight_method"):
        class_weights_from_counts(counts, "bogus")
    with pytest.raises(HazardsegError, match="no labelled"):
        class_weights_from_counts(np.zeros(3), "median_freq")


def test_class_weight_cache_roundtrip(tmp_path: Path) -> None:
    lab = _write_label(tmp_path / "l.png", np.array([[1, 2], [2, 3]]))
    rec = class_weight_record([lab], 13, "inverse_log")
    cache = tmp_path / "class_weights.json"
    cache.write_text(json.dumps(rec))
    w = read_class_weight_cache(cache, "inverse_log", 1, 13)
    np.testing.assert_allclose(w, rec["weights"])
    assert read_class_weight_cache(cache, "median_freq", 1, 13) is None
    assert read_class_weight_cache(cache, "inverse_log", 2, 13) is None
    cache.write_text("{not json")
    assert read_class_weight_cache(cache, "inverse_log", 1, 13) is None


# ---------------------------------------------------------------- run directory
def test_check_run_dir_refuses_existing_run(tmp_path: Path) -> None:
    check_run_dir(tmp_path / "new", resume=False, overwrite=False)
    (tmp_path / "notes.txt").write_text("user file")
    check_run_dir(tmp_path, resume=False, overwrite=False)  # unrelated files are fine
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(HazardsegError, match="already holds a training run"):
        check_run_dir(tmp_path, resume=False, overwrite=False)
    check_run_dir(tmp_path, resume=True, overwrite=False)
    check_run_dir(tmp_path, resume=False, overwrite=True)
    with pytest.raises(HazardsegError, match="exclude each other"):
        check_run_dir(tmp_path, resume=True, overwrite=True)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(HazardsegError, match="not a directory"):
        check_run_dir(f, resume=False, overwrite=False)


def test_clear_run_dir_keeps_other_files(tmp_path: Path) -> None:
    for name in ("config.yaml", "last.pt", "best.pt", "best_m_20260101_miou1.00.pt", "keep.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "tb").mkdir()
    (tmp_path / "eval").mkdir()
    clear_run_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "keep.txt"]


def test_best_copy_name_and_publish(tmp_path: Path) -> None:
    when = datetime(2026, 11, 22, tzinfo=UTC)
    assert best_copy_name("lraspp_mobilenet_v3", 0.61234, when) == (
        "best_lraspp_mobilenet_v3_20261122_miou61.23.pt"
    )
    best = tmp_path / "best.pt"
    best.write_bytes(b"one")
    first = publish_best_copy(tmp_path, best, "m", 0.5)
    best.write_bytes(b"two")
    second = publish_best_copy(tmp_path, best, "m", 0.6)
    assert not first.exists() and second.read_bytes() == b"two"
    assert len(list(tmp_path.glob("best_*_miou*.pt"))) == 1


def test_remove_stale_temp_files(tmp_path: Path) -> None:
    stale = tmp_path / ".last.pt.abc123.tmp"
    other = tmp_path / ".results.json.x.tmp"
    stale.write_text("partial")
    other.write_text("not ours")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert not stale.exists() and other.exists()


# ---------------------------------------------------------------- metrics log
def test_metrics_log_writes_jsonl_csv_and_truncates_on_resume(tmp_path: Path) -> None:
    names = ["a", "road line"]
    log = MetricsLog(tmp_path, names, flush_every_s=1e9)
    log.log({"kind": "train", "epoch": 1, "iteration": 1, "loss": 1.5, "lr": 0.1,
             "images_per_s": 3.0, "time_s": 0.1})  # fmt: skip
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1  # first row: written
    log.log({"kind": "val", "epoch": 1, "iteration": 1, "miou": 0.5, "miou_no_unlabeled": None,
             "pixel_accuracy": float("nan"), "iou": {"a": 0.25, "road line": None},
             "time_s": 0.2})  # fmt: skip
    log.log({"kind": "train", "epoch": 2, "iteration": 2, "loss": 1.0, "lr": 0.1,
             "images_per_s": 3.0, "time_s": 0.3})  # fmt: skip
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2  # train row buffered
    log.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["train", "val", "train"]
    assert rows[1]["pixel_accuracy"] is None and rows[1]["iou"] == {"a": 0.25, "road line": None}
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",") == csv_columns(names)
    assert "iou_road_line" in lines[0]
    header = lines[0].split(",")
    val = dict(zip(header, lines[2].split(","), strict=True))
    assert val["kind"] == "val" and float(val["iou_a"]) == 0.25 and val["iou_road_line"] == ""
    assert list(tmp_path.glob("tb*")) == []
    assert len(read_metric_rows(tmp_path / "metrics.jsonl", up_to_iteration=1).rows) == 2
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "tra')  # torn line from a killed writer
    assert len(read_metric_rows(tmp_path / "metrics.jsonl").rows) == 3


def test_metric_logger_averages_each_window_and_stamps_rows(tmp_path: Path) -> None:
    logger = MetricLogger(DistContext(), MetricsLog(tmp_path, ["a"]), elapsed_s=5.0)
    logger.update(torch.tensor(1.0), images=2)
    logger.update(torch.tensor(2.5), images=2)
    loss, images_per_s = logger.window()
    assert loss == 1.75 and images_per_s > 0
    logger.new_window()
    logger.update(torch.tensor(4.0), images=1)
    assert logger.window()[0] == 4.0
    row = {"kind": "train", "epoch": 1, "iteration": 3, "loss": loss, "lr": 0.1,
           "images_per_s": images_per_s}  # fmt: skip
    logger.log(row)
    logger.close()
    written = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert list(written) == [*row, "time_s"] and written["time_s"] >= 5.0
    MetricLogger(DistContext()).log(row)  # other ranks keep no rows


def test_flatten_row() -> None:
    flat = flatten_row({"kind": "val", "iou": {"traffic sign": 0.1}, "miou": 0.2})
    assert flat == {"kind": "val", "iou_traffic_sign": 0.1, "miou": 0.2}


# ---------------------------------------------------------------- resume config
def test_check_resume_config() -> None:
    saved = ExperimentConfig()
    check_resume_config(saved, apply_overrides(saved, ["train.epochs=80", "data.root=/x"]), Path())
    with pytest.raises(ConfigError, match=re.escape("train.lr was 0.0001, now 0.1")):
        check_resume_config(saved, apply_overrides(saved, ["train.lr=0.1"]), Path("run"))


# ---------------------------------------------------------------- precision, seeding, dist
def test_resolve_precision_cpu() -> None:
    cpu = torch.device("cpu")
    p = resolve_precision(TrainConfig(amp="fp16"), cpu)  # amp applies to CUDA only
    assert p.dtype is None and not p.needs_scaler and p.label == "fp32"
    p = resolve_precision(TrainConfig(cpu_bf16=True), cpu)
    assert p.dtype == torch.bfloat16 and p.label == "bf16" and not p.needs_scaler
    with p.autocast():
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match=re.escape("train.amp")):
        resolve_precision(TrainConfig(amp="fp8"), cpu)


def test_epoch_seed_depends_only_on_inputs() -> None:
    assert epoch_seed(0, 1) == epoch_seed(0, 1)
    seeds = {epoch_seed(s, e, r) for s in (0, 1) for e in (1, 2) for r in (0, 1)}
    assert len(seeds) == 8 and all(0 <= s < 2**63 for s in seeds)


def test_torchrun_detection_and_sharding() -> None:
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h",
           "MASTER_PORT": "1"}  # fmt: skip
    assert launched_by_torchrun(env)
    assert not launched_by_torchrun({**env, "WORLD_SIZE": "1"})
    assert not launched_by_torchrun({})
    ctxs = [DistContext(rank=r, world_size=3) for r in range(3)]
    shards = [shard_indices(7, c) for c in ctxs]
    assert sorted(i for s in shards for i in s) == list(range(7))
    assert math.isclose(len(shards[0]), 3)


def test_deeplab_needs_two_images_per_step() -> None:
    from hazardseg.config import load_config
    from hazardseg.errors import ConfigError
    from hazardseg.training.rules import validate_config

    cfg = load_config(None, ["model.name=deeplabv3_resnet50", "train.batch_size=1"])
    with pytest.raises(ConfigError, match="needs at least 2 images per process"):
        validate_config(cfg)
    cfg = load_config(None, ["model.name=lraspp_mobilenet_v3", "train.batch_size=1"])
    with pytest.raises(ConfigError, match=r"data\.root is not set"):
        validate_config(cfg)  # batch 1 is fine for LR-ASPP; the next check fires
