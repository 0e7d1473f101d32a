"""Typed config: YAML loading, overrides, unknown keys, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hazardseg.config import (
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    save_config,
)
from hazardseg.errors import ConfigError


def test_defaults_round_trip(tmp_path: Path) -> None:
    cfg = ExperimentConfig()
    path = tmp_path / "c.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert config_from_dict(yaml.safe_load(dump_config(cfg))) == cfg


def test_yaml_values_are_coerced(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "model: {name: deeplabv3_resnet50}\n"
        "train: {lr: '1e-3', epochs: 3, grad_clip: null}\n"
        "augment: {scale_range: [0.3, 3], hflip: 'no'}\n"
    )
    cfg = load_config(path)
    assert cfg.model.name == "deeplabv3_resnet50"
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.train.epochs == 3
    assert cfg.train.grad_clip is None
    assert cfg.augment.scale_range == (0.3, 3.0)
    assert cfg.augment.hflip is False


def test_overrides() -> None:
    cfg = apply_overrides(
        ExperimentConfig(),
        ["train.lr=0.01", "augment.scale_range=[0.75, 1.25]", "data.root=/x", "train.grad_clip=1"],
    )
    assert cfg.train.lr == 0.01
    assert cfg.augment.scale_range == (0.75, 1.25)
    assert cfg.data.root == "/x"
    assert cfg.train.grad_clip == 1.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1", "unknown config key 'train.lrr'; did you mean 'lr'?"),
        ("trian.lr=1", "unknown config key 'trian'; did you mean 'train'?"),
        ("train.epochs=abc", "train.epochs: expected an integer"),
        ("train.epochs=1.5", "train.epochs: expected an integer"),
        ("augment.hflip=maybe", "augment.hflip: expected true or false"),
        ("augment.scale_range=[1]", "augment.scale_range: expected 2 values"),
        ("train=1", "is a section"),
        ("train.lr.x=1", "has no sub-keys"),
        ("novalue", "expected key=value"),
        ("train.amp=off", "train.amp: expected a string, got the YAML boolean False"),
    ],
)
def test_bad_overrides(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("[", r"\[")):
        apply_overrides(ExperimentConfig(), [override])


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml: unknown config key 'train.epoch'"):
        load_config(unknown)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(scalar)


def test_to_dict_is_plain() -> None:
    d = config_to_dict(ExperimentConfig())
    assert isinstance(d["augment"]["scale_range"], list)
    yaml.safe_dump(d)  # plain types only
