"""Checkpoints: atomic save, weights_only loading, bare torchvision state dicts, clear errors."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from hazardseg.errors import CheckpointError, HazardsegError
from hazardseg.models import create_model
from hazardseg.models.checkpoint import (
    FORMAT_VERSION,
    TrainingState,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from hazardseg.models.rng import restore_rng_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Opaque:
    """A custom class: torch.save pickles it, weights_only loading must refuse it."""

    def __init__(self) -> None:
        self.value = 3


@pytest.fixture(scope="module")
def torchvision_deeplab(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """torchvision's deeplabv3_resnet50 with 13-class final convs and its saved state dict."""
    torch.manual_seed(0)
    tv = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, aux_loss=True
    )
    tv.classifier[4] = torch.nn.Conv2d(256, 13, 1)
    tv.aux_classifier[4] = torch.nn.Conv2d(256, 13, 1)
    tv.eval()
    path = tmp_path_factory.mktemp("tv") / "reference.pth"
    torch.save(tv.state_dict(), path)
    return tv, path


@pytest.fixture
def small_checkpoint(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = create_model("lraspp_mobilenet_v3")
    path = save_checkpoint(
        tmp_path / "run" / "last.pt",
        model,
        model_name="lraspp_mobilenet_v3",
        class_names=[f"c{i}" for i in range(13)],
        config={"train": {"epochs": 2, "crop": [512, 512]}},
        epoch=2,
        best_metric=0.5,
    )
    return model, path


def test_bare_torchvision_state_dict_loads_strictly(
    torchvision_deeplab: tuple[torch.nn.Module, Path],
) -> None:
    tv, path = torchvision_deeplab
    model, info = load_model(path, model_name="deeplabv3_resnet50")
    assert info["format"] == "state_dict" and info["aux_loaded"] is True
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["num_classes"] == 13 and info["epoch"] is None
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["out"], tv(x)["out"], rtol=0, atol=0)
    tv_keys = set(tv.state_dict())
    assert set(model.state_dict()) == tv_keys


def test_ddp_prefix_and_missing_aux_head_warns(
    torchvision_deeplab: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    tv, _ = torchvision_deeplab
    state = {f"module.{k}": v for k, v in tv.state_dict().items() if "aux_classifier" not in k}
    path = tmp_path / "ddp_noaux.pth"
    torch.save(state, path)
    with pytest.warns(UserWarning, match="no auxiliary head weights"):
        model, info = load_model(path, model_name="deeplabv3_resnet50")
    assert info["aux_loaded"] is False
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["out"], tv(x)["out"], rtol=0, atol=0)


def test_extra_or_missing_key_is_an_error(
    torchvision_deeplab: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    tv, _ = torchvision_deeplab
    extra = dict(tv.state_dict())
    extra["classifier.9.weight"] = torch.zeros(1)
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"1 unexpected keys \['classifier.9.weight'\]"):
        load_model(tmp_path / "extra.pth", model_name="deeplabv3_resnet50")

    missing = dict(tv.state_dict())
    del missing["backbone.layer1.0.conv1.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"1 missing keys \['backbone.layer1.0.conv1"):
        load_model(tmp_path / "missing.pth", model_name="deeplabv3_resnet50")


def test_wrong_num_classes_and_architecture(
    torchvision_deeplab: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    tv, path = torchvision_deeplab
    state = dict(tv.state_dict())
    state["classifier.4.weight"] = torch.zeros(19, 256, 1, 1)
    state["classifier.4.bias"] = torch.zeros(19)
    torch.save(state, tmp_path / "c19.pth")
    with pytest.raises(CheckpointError, match="19 output classes, expected 13"):
        load_model(tmp_path / "c19.pth", model_name="deeplabv3_resnet50")
    with pytest.raises(CheckpointError, match="does not match lraspp_mobilenet_v3"):
        load_model(path, model_name="lraspp_mobilenet_v3")
    with pytest.raises(CheckpointError, match="bare state dict; pass the model name"):
        load_model(path)


def test_hazardseg_checkpoint_mismatches(small_checkpoint: tuple[torch.nn.Module, Path]) -> None:
    _, path = small_checkpoint
    with pytest.raises(CheckpointError, match="has 13 classes, expected 19"):
        load_model(path, num_classes=19)
    with pytest.raises(CheckpointError, match="holds model 'lraspp_mobilenet_v3', expected"):
        load_model(path, model_name="deeplabv3_resnet50")


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "junk": Opaque()}, path)
    with pytest.raises(CheckpointError, match="contains pickled Python objects") as exc:
        load_checkpoint(path)
    assert str(path) in str(exc.value) and "weights_only=True" in str(exc.value)
    with pytest.raises(CheckpointError, match="contains pickled Python objects"):
        load_model(path, model_name="lraspp_mobilenet_v3")


def test_truncated_and_missing_files(
    small_checkpoint: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    _, path = small_checkpoint
    cut = tmp_path / "cut.pt"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as exc:
        load_model(cut)
    assert str(cut) in str(exc.value)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_checkpoint_contents_and_roundtrip(small_checkpoint: tuple[torch.nn.Module, Path]) -> None:
    model, path = small_checkpoint
    ckpt = load_checkpoint(path)
    assert ckpt["format_version"] == FORMAT_VERSION
    assert ckpt["model_name"] == "lraspp_mobilenet_v3" and ckpt["epoch"] == 2
    assert ckpt["config"] == {"train": {"epochs": 2, "crop": [512, 512]}}
    assert ckpt["best_metric"] == 0.5 and len(ckpt["class_names"]) == 13
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp files left
    loaded, info = load_model(path)
    assert info["class_names"][0] == "c0" and info["config"] == ckpt["config"]
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not loaded.training
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["out"], model(x)["out"], rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="not a hazardseg checkpoint"):
        load_checkpoint(_bare(path, ckpt))


def _bare(path: Path, ckpt: dict) -> Path:
    bare = path.with_name("bare.pth")
    torch.save(ckpt["model"], bare)
    return bare


def test_training_state_and_rng_resume(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    model.num_classes = 2  # type: ignore[assignment]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=3, factor=0.5)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step(1.0)
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    path = save_checkpoint(
        tmp_path / "state.pt",
        model,
        model_name="linear",
        class_names=["a", "b"],
        config={},
        epoch=4,
        best_metric=None,
        training=TrainingState(opt, sched, scaler),
        extra={"note": "resume"},
    )
    expected = (random.random(), np.random.rand(), torch.rand(1), np.random.randn())
    random.random(), np.random.rand(), torch.rand(1)  # move every generator on

    ckpt = load_checkpoint(path)
    assert restore_rng_state(ckpt)
    got = (random.random(), np.random.rand(), torch.rand(1), np.random.randn())
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2]) and got[3] == expected[3]

    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=1.0)
    opt2.load_state_dict(ckpt["optimizer"])
    assert opt2.param_groups[0]["lr"] == 1e-3 and opt2.param_groups[0]["betas"] == (0.9, 0.99)
    sched2 = torch.optim.lr_scheduler.ReduceLROnPlateau(opt2)
    sched2.load_state_dict(ckpt["scheduler"])
    assert sched2.best == 1.0 and sched2.patience == 3
    assert ckpt["scaler"]["scale"] == scaler.get_scale()
    assert ckpt["extra"] == {"note": "resume"}
    assert not restore_rng_state({"rng": None})


def test_unsaveable_entries_are_refused_before_writing(tmp_path: Path) -> None:
    model = create_model("lraspp_mobilenet_v3")
    with pytest.raises(CheckpointError, match=r"config\['bad'\] is a Opaque"):
        save_checkpoint(
            tmp_path / "x.pt",
            model,
            model_name="lraspp_mobilenet_v3",
            class_names=["a"] * 13,
            config={"bad": Opaque()},
            epoch=0,
            best_metric=None,
        )
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_in_bare_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(HazardsegError, match="unknown model 'nope'; known models: "):
        load_model(path, model_name="nope")
