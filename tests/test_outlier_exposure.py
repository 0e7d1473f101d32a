"""Outlier exposure: the objectives against independent implementations of their papers'
definitions, the pasting of negatives, COCO cut-outs from a tiny COCO file, fine-tuning from a
checkpoint, and bad input (one line each, nothing written)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hazardseg.cli import main
from hazardseg.config import OutlierConfig, load_config
from hazardseg.data.coco_outliers import write_coco_cutouts
from hazardseg.data.labels import OUTLIER_INDEX
from hazardseg.data.outliers import OutlierPaster, cutout_files
from hazardseg.data.synth.negatives import SHAPES, SURFACES, draw_negative
from hazardseg.errors import ConfigError, DataError
from hazardseg.training.outlier_losses import (
    energy_margin_loss,
    extra_class_loss,
    uniform_entropy_loss,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def batch(seed: int, with_outliers: bool = True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 9, 11, generator=g) * 3
    target = torch.randint(0, 4, (2, 9, 11), generator=g)
    target[0, :2] = 255  # ignored
    target[1, 5:] = 13  # an anomaly label of the dataset: takes no part
    if with_outliers:
        target[0, 4:7, 3:8] = OUTLIER_INDEX
    return logits, target


def pixels(logits, target):
    x = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    t = target.reshape(-1)
    return x[(t >= 0) & (t < logits.shape[1])], x[t == OUTLIER_INDEX], t[(t >= 0) & (t < 4)]


@pytest.mark.parametrize("with_outliers", [True, False])
def test_energy_margin_loss_is_liu_et_al(with_outliers: bool) -> None:
    logits, target = batch(0, with_outliers)
    x_in, x_out, _ = pixels(logits, target)
    # wetliu/energy_ood train.py, without its 0.1 (our weight): Ec = -logsumexp(x)
    ec_in, ec_out = -torch.logsumexp(x_in, dim=1), -torch.logsumexp(x_out, dim=1)
    want = torch.pow(F.relu(ec_in - (-12.0)), 2).mean()
    if with_outliers:
        want = want + torch.pow(F.relu(-6.0 - ec_out), 2).mean()
    got = energy_margin_loss(logits, target, -12.0, -6.0)
    assert float(got) == pytest.approx(float(want), rel=1e-6)


def test_entropy_loss_is_outlier_exposure() -> None:
    logits, target = batch(1)
    _, x_out, _ = pixels(logits, target)
    want = 0.5 * -(x_out.mean(1) - torch.logsumexp(x_out, dim=1)).mean()  # energy_ood 'OE'
    assert float(0.5 * uniform_entropy_loss(logits, target)) == pytest.approx(float(want))
    # equal to the cross-entropy to the uniform distribution
    uniform = -(F.log_softmax(x_out, 1)).mean(1).mean()
    assert float(uniform_entropy_loss(logits, target)) == pytest.approx(float(uniform), rel=1e-6)
    assert float(uniform_entropy_loss(*batch(1, with_outliers=False))) == 0.0


def test_extra_class_loss_is_cross_entropy_with_a_zero_logit() -> None:
    logits, target = batch(2)
    x_in, x_out, t_in = pixels(logits, target)
    z = torch.cat([x_in, x_out])
    z = torch.cat([z, torch.zeros(z.shape[0], 1)], 1)
    labels = torch.cat([t_in, torch.full((x_out.shape[0],), 4)])
    want = F.cross_entropy(z, labels)
    assert float(extra_class_loss(logits, target)) == pytest.approx(float(want), rel=1e-6)


def test_losses_at_a_lower_logit_resolution_use_the_label_grid() -> None:
    logits, target = batch(3)
    small = F.interpolate(logits, size=(5, 6), mode="bilinear", align_corners=False)
    up = F.interpolate(small, size=target.shape[-2:], mode="bilinear", align_corners=False)
    assert float(energy_margin_loss(small, target, -3, -1)) == pytest.approx(
        float(energy_margin_loss(up, target, -3, -1))
    )


def test_negatives_are_rgba_shapes_of_the_declared_families() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        cut = draw_negative(rng, 40)
        assert cut.shape[2] == 4 and max(cut.shape[:2]) == 40
        alpha = cut[..., 3]
        assert alpha.max() == 255 and alpha.min() == 0
    assert set(SHAPES) == {"polygon", "star", "ring", "cross"}
    assert set(SURFACES) == {"checker", "stripes", "noise", "flat"}


def scene(h: int = 48, w: int = 64) -> tuple[Image.Image, Image.Image]:
    return Image.new("RGB", (w, h), (90, 90, 90)), Image.fromarray(np.full((h, w), 7, np.uint8))


def test_pasting_labels_the_objects_and_is_seeded() -> None:
    paster = OutlierPaster(OutlierConfig(source="synthetic", prob=1.0, count=(2, 2)))
    torch.manual_seed(5)
    img_a, mask_a = paster(*scene())
    torch.manual_seed(5)
    img_b, mask_b = paster(*scene())
    m = np.asarray(mask_a)
    assert (m == OUTLIER_INDEX).sum() > 20 and set(np.unique(m)) <= {7, OUTLIER_INDEX}
    assert np.array_equal(np.asarray(img_a), np.asarray(img_b))
    assert np.array_equal(m, np.asarray(mask_b))
    changed = np.any(np.asarray(img_a) != 90, axis=2)
    assert changed[m == OUTLIER_INDEX].mean() > 0.9  # the labelled pixels were painted
    never = OutlierPaster(OutlierConfig(source="synthetic", prob=0.0))
    _img, mask = never(*scene())
    assert np.asarray(mask).max() == 7


def write_cutouts(folder: Path, sizes=((10, 12), (20, 8))) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[..., 0] = 200
        rgba[2:-2, 2:-2, 3] = 255
        Image.fromarray(rgba, "RGBA").save(folder / f"{i}.png")
    return folder


def test_folder_cutouts_and_their_errors(tmp_path: Path) -> None:
    folder = write_cutouts(tmp_path / "cuts")
    paster = OutlierPaster(OutlierConfig(source="folder", folder=str(folder), prob=1.0))
    torch.manual_seed(0)
    _, mask = paster(*scene())
    assert (np.asarray(mask) == OUTLIER_INDEX).any()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \.png cut-outs"):
        cutout_files(tmp_path / "empty")
    Image.new("RGB", (4, 4)).save(tmp_path / "cuts" / "rgb.png")
    with pytest.raises(DataError, match=r"rgb.png: cut-out has mode RGB; expected RGBA"):
        cutout_files(folder)
    (tmp_path / "cuts" / "rgb.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"rgb.png: unreadable cut-out"):
        cutout_files(folder)
    big = write_cutouts(tmp_path / "big", sizes=((300, 20),))
    native = OutlierPaster(OutlierConfig(source="folder", folder=str(big), prob=1.0, scale=None))
    with pytest.raises(DataError, match="bigger than the 64x48 training image"):
        native(*scene())
    with pytest.raises(ConfigError, match=r"train.outliers.prob=1.5"):
        OutlierPaster(OutlierConfig(source="synthetic", prob=1.5))


def coco_fixture(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "train2017"
    images.mkdir()
    anns, imgs = [], []
    for i in range(2):
        Image.new("RGB", (60, 40), (10 * i, 100, 50)).save(images / f"{i:012d}.jpg")
        imgs.append({"id": i + 1, "file_name": f"{i:012d}.jpg", "width": 60, "height": 40})
    poly = [[5, 5, 40, 5, 40, 35, 5, 35]]
    for k, (img, cat, crowd) in enumerate([(1, 1, 0), (1, 3, 0), (2, 3, 1), (2, 20, 0)]):
        anns.append({"id": k + 1, "image_id": img, "category_id": cat, "segmentation": poly,
                     "area": 1050.0, "bbox": [5, 5, 35, 30], "iscrowd": crowd})  # fmt: skip
    cats = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 20, "name": "sheep"}]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": imgs, "annotations": anns, "categories": cats}))
    return path, images


def test_coco_cutouts_leave_out_known_classes(tmp_path: Path) -> None:
    ann, images = coco_fixture(tmp_path)
    out = tmp_path / "cutouts"
    args = ["data", "outliers", "coco", "--annotations", str(ann), "--images", str(images)]
    assert main([*args, "--out", str(out), "--min-area", "100", "--no-progress"]) == 0
    files = sorted(p.name for p in out.glob("*.png"))
    assert files == ["2_4.png"]  # person, car and the crowd instance left out (cityscapes)
    rgba = np.asarray(Image.open(out / "2_4.png"))
    assert rgba.shape[2] == 4 and rgba[..., 3].max() == 255
    assert cutout_files(out)[0].name == "2_4.png"
    # nothing usable: one line, nothing written
    more = ["--exclude-classes", "sheep", "--out", str(tmp_path / "none"), "--no-progress"]
    assert main([*args, *more]) == 2
    assert not (tmp_path / "none").exists()
    assert not list(tmp_path.glob(".none.*"))
    bad = ["--exclude-classes", "zebra", "--out", str(tmp_path / "z"), "--no-progress"]
    assert main([*args, *bad]) == 2


@pytest.mark.parametrize(
    ("edit", "extra", "message"),
    [
        (lambda d: d.pop("annotations"), [], "no 'annotations' list"),
        (lambda d: d.pop("images"), [], "no 'images' list"),
        (lambda d: [a.pop("category_id") for a in d["annotations"]], [], "lacks 'category_id'"),
        (lambda d: d["images"].pop(), [], "refers to image id 2"),
        (lambda d: d["annotations"][3].pop("segmentation"), [], "no readable segmentation"),
        (lambda d: None, ["--dataset", "street-hazards"], "'street-hazards': no list"),
        (lambda d: None, ["--max", "-1"], "--max -1: expected a positive"),
    ],
)
def test_coco_bad_files_and_options_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit, extra, message
) -> None:
    ann, images = coco_fixture(tmp_path)
    doc = json.loads(ann.read_text())
    edit(doc)
    ann.write_text(json.dumps(doc))
    out = tmp_path / "cutouts"
    args = ["data", "outliers", "coco", "--annotations", str(ann), "--images", str(images)]
    code = main([*args, "--out", str(out), "--min-area", "100", "--no-progress", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists() and not list(tmp_path.glob(".cutouts.*"))


def test_crowd_flag_may_be_absent(tmp_path: Path) -> None:
    ann, images = coco_fixture(tmp_path)
    doc = json.loads(ann.read_text())
    for a in doc["annotations"]:
        a.pop("iscrowd")  # absent means not crowd, as in COCO's own reader
    ann.write_text(json.dumps(doc))
    out = tmp_path / "cutouts"
    manifest = write_coco_cutouts(ann, images, out, "cityscapes", min_area=100)
    assert manifest["num_cutouts"] == 1  # the formerly crowd car is still a car: left out
    assert sorted(p.name for p in out.glob("*.png")) == ["2_4.png"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["train.outliers.scale=null"], "synthetic negatives are drawn at a size"),
        (["train.outliers.weight=.inf"], "train.outliers.weight=inf: expected a finite"),
        (["model.name=lraspp_mobilenet_v3", "train.outliers.objective=rba"], "a lraspp model"),
        (["model.name=mask2former_tiny", "train.class_weights=true", "train.outliers.source=none"],
         "train.class_weights=true: mask2former_tiny trains with the set-prediction loss"),
    ],
)  # fmt: skip
def test_outlier_settings_refused_before_anything_is_written(
    shared_tiny_tree: Path, tmp_path: Path, sets: list[str], message: str
) -> None:
    from hazardseg.errors import HazardsegError
    from hazardseg.training import fit

    base = ["train.outliers.source=synthetic", f"data.root={shared_tiny_tree}"]
    cfg = load_config(None, [*base, *sets])
    with pytest.raises(HazardsegError, match=re.escape(message)) as info:
        fit(cfg, tmp_path / "run", progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_fine_tuning_with_negatives_keeps_the_classes(
    shared_tiny_tree: Path, tmp_path: Path
) -> None:
    from hazardseg.models.checkpoint import open_checkpoint
    from hazardseg.training import fit

    base = [
        "model.name=lraspp_mobilenet_v3", "data.num_workers=0", "augment.crop_size=32",
        "train.epochs=1", "train.batch_size=2", f"data.root={shared_tiny_tree}",
    ]  # fmt: skip
    fit(load_config(None, base), tmp_path / "a", progress=False)
    tuned = [*base, f"train.init={tmp_path / 'a' / 'best.pt'}", "train.outliers.source=synthetic",
             "train.outliers.prob=1.0", "train.outliers.objective=energy"]  # fmt: skip
    fit(load_config(None, tuned), tmp_path / "b", progress=False)
    ckpt = open_checkpoint(tmp_path / "b" / "best.pt")
    assert ckpt.num_classes == 13 and ckpt.config["train"]["outliers"]["source"] == "synthetic"
    # --init from a checkpoint of another model: one line, nothing written
    wrong = [*tuned[:-3], "model.name=deeplabv3plus_resnet50", "train.batch_size=2"]
    with pytest.raises(Exception, match="holds a lraspp_mobilenet_v3 model"):
        fit(load_config(None, wrong), tmp_path / "c", progress=False)
    assert not (tmp_path / "c" / "config.yaml").exists()
    # a bare state dict (torchvision style) of the same model also starts a fine-tuning
    bare = tmp_path / "bare.pt"
    torch.save(open_checkpoint(tmp_path / "a" / "best.pt").model.state_dict(), bare)
    fit(load_config(None, [*tuned[:-3], f"train.init={bare}"]), tmp_path / "d", progress=False)
    assert open_checkpoint(tmp_path / "d" / "best.pt").num_classes == 13
    # a resumed fine-tuning continues from its last.pt: the --init file is not needed again
    (tmp_path / "a" / "best.pt").unlink()
    more = fit(load_config(None, [*tuned, "train.epochs=2"]), tmp_path / "b", resume=True,
               progress=False)  # fmt: skip
    assert more["epochs_run"] == 2
