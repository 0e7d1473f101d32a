"""The mask2former family and RbA: the semantic map and the ``rba`` score against independent
implementations of the RbA authors' definitions (NazirNayal8/RbA ``semantic_inference``,
``evaluate_ood.py``, ``criterion.py``), the set-prediction training through ``fit``, resume,
export with ``rba`` in the graph, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hazardseg.anomaly import create_method
from hazardseg.anomaly.registry import parse_methods
from hazardseg.config import load_config
from hazardseg.data.labels import OUTLIER_INDEX
from hazardseg.errors import HazardsegError
from hazardseg.models import create_model
from hazardseg.models.mask2former import mask_targets, semantic_map
from hazardseg.training.outlier_losses import rba_outlier_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def queries(seed: int, n: int = 2, q: int = 5, k: int = 4, hw: tuple[int, int] = (7, 9)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, q, k + 1, generator=g) * 2, torch.randn(n, q, *hw, generator=g) * 3


def test_semantic_map_is_rba_semantic_inference() -> None:
    cls, masks = queries(0)
    got = semantic_map(cls, masks, (29, 35))
    for i in range(cls.shape[0]):
        # maskformer_model.py: upsample the mask logits (align_corners=False), then
        # semantic_inference: softmax over classes without no-object, sigmoid masks, einsum
        mask_pred = F.interpolate(
            masks[i : i + 1], size=(29, 35), mode="bilinear", align_corners=False
        )[0]
        mask_cls = F.softmax(cls[i], dim=-1)[..., :-1]
        want = torch.einsum("qc,qhw->chw", mask_cls, mask_pred.sigmoid())
        torch.testing.assert_close(got[i], want, atol=1e-6, rtol=0)


def test_rba_score_is_the_authors_definition() -> None:
    cls, masks = queries(1)
    sem = semantic_map(cls, masks, (16, 20))
    got = create_method("rba").score(sem)
    for i in range(sem.shape[0]):
        want = -sem[i].tanh().sum(dim=0)  # evaluate_ood.py get_RbA
        torch.testing.assert_close(got[i], want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("with_outliers", [True, False])
def test_rba_outlier_loss_is_criterion_outlier_loss(with_outliers: bool) -> None:
    cls, masks = queries(2, hw=(6, 8))
    target = torch.randint(0, 4, (2, 23, 31))
    target[:, :3] = 255
    if with_outliers:
        target[0, 10:16, 10:20] = OUTLIER_INDEX
    sem = torch.einsum("bqc,bqhw->bchw", F.softmax(cls, -1)[..., :-1], masks.sigmoid())
    got = rba_outlier_loss(sem, target, -1.0, -0.1)
    # criterion.py outlier_loss: nls + tanh + squared_hinge, outlier_masks 0 / 1 / ignore
    outlier_masks = torch.zeros_like(target)
    outlier_masks[target == OUTLIER_INDEX] = 1
    outlier_masks[target == 255] = 255
    score = -sem.tanh().sum(dim=1)
    score = F.interpolate(
        score.unsqueeze(1), size=target.shape[-2:], mode="bilinear", align_corners=True
    ).squeeze(1)
    ood, idd = score[outlier_masks == 1], score[outlier_masks == 0]
    want = torch.pow(F.relu(idd - (-1.0)), 2).mean()
    if (outlier_masks == 1).sum() > 0:
        want = 0.5 * (want + torch.pow(F.relu(-0.1 - ood), 2).mean())
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_mask_targets_hold_the_known_classes_present() -> None:
    t = torch.tensor([[[0, 0, 3], [255, 13, OUTLIER_INDEX]]])
    masks, classes = mask_targets(t, 13)
    assert classes[0].tolist() == [0, 3]
    assert masks[0].tolist() == [[[1, 1, 0], [0, 0, 0]], [[0, 0, 1], [0, 0, 0]]]


def test_model_outputs_and_loss() -> None:
    model = create_model("mask2former_tiny", num_classes=5, num_queries=6, decoder_layers=2)
    model.train()
    out = model(torch.randn(2, 3, 64, 96))
    assert out["out"].shape == (2, 5, 64, 96) and out["queries"]["class"].shape == (2, 6, 6)
    target = torch.randint(0, 5, (2, 64, 96))
    loss = model.query_loss(out["queries"], target)
    assert torch.isfinite(loss) and loss.requires_grad
    loss.backward()
    model.eval()
    out = model(torch.randn(1, 3, 64, 96), return_features=True)
    assert "queries" not in out and out["features"].shape == (1, 64, 16, 24)
    assert float(out["out"].detach().min()) >= 0  # sums of probabilities
    assert model.build_options == {"num_queries": 6, "decoder_layers": 2}


def test_bad_configs_are_one_line_before_building() -> None:
    with pytest.raises(HazardsegError, match=r"num_queries=0; expected an integer in 1\.\.1000"):
        create_model("mask2former_tiny", num_classes=5, num_queries=0)
    with pytest.raises(HazardsegError, match=r"has no option.s. num_queries"):
        create_model("lraspp_mobilenet_v3", num_classes=5, num_queries=8)
    with pytest.raises(HazardsegError, match="unknown model 'mask2former_swin_x'"):
        create_model("mask2former_swin_x", num_classes=5)


def test_init_from_a_checkpoint_built_with_other_options(
    shared_tiny_tree: Path, tmp_path: Path
) -> None:
    from hazardseg.config import ExperimentConfig
    from hazardseg.data.classes import KNOWN_CLASS_NAMES
    from hazardseg.errors import CheckpointError
    from hazardseg.models.checkpoint import save_checkpoint
    from hazardseg.training import fit

    ckpt = tmp_path / "m2f.pt"
    save_checkpoint(ckpt, create_model("mask2former_tiny", 13, num_queries=6),
                    model_name="mask2former_tiny", class_names=list(KNOWN_CLASS_NAMES),
                    config=ExperimentConfig(), epoch=1, best_metric=0.0)  # fmt: skip
    sets = ["model.name=mask2former_tiny", "model.num_queries=8", "train.class_weights=false",
            f"data.root={shared_tiny_tree}", f"train.init={ckpt}"]  # fmt: skip
    with pytest.raises(CheckpointError, match=r"options \{'num_queries': 6\}") as info:
        fit(load_config(None, sets), tmp_path / "run", progress=False)
    assert "num_queries': 8" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_rba_only_for_mask_classification_models() -> None:
    assert "rba" not in parse_methods("all", "lraspp")
    assert "rba" not in parse_methods("all")
    assert "rba" in parse_methods("all", "mask2former")
    with pytest.raises(HazardsegError, match=r"'rba' needs a mask2former model .* lraspp model"):
        parse_methods("max_logit,rba", "lraspp")


def test_swin_backbone_weights_from_a_cached_checkpoint(tmp_path: Path, monkeypatch) -> None:
    from safetensors.torch import save_file
    from transformers import SwinConfig, SwinModel

    from hazardseg.models import mask2former

    tiny = {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4], "window_size": 4,
            "image_size": 64, "drop_path_rate": 0.0}  # fmt: skip
    variant = {**mask2former.VARIANTS["mask2former_swin_b"], "swin": tiny, "hidden_dim": 32,
               "num_queries": 4, "encoder_layers": 1, "num_attention_heads": 2}  # fmt: skip
    monkeypatch.setitem(mask2former.VARIANTS, "mask2former_swin_b", variant)
    swin = SwinModel(SwinConfig(**tiny))
    state = {f"swin.{k}": v.contiguous() for k, v in swin.state_dict().items()}
    save_file(state, tmp_path / "model.safetensors")
    model = create_model("mask2former_swin_b", 3, pretrained=str(tmp_path / "model.safetensors"))
    encoder = model.net.model.pixel_level_module.encoder
    key = "embeddings.patch_embeddings.projection.weight"
    torch.testing.assert_close(encoder.state_dict()[f"swin.{key}"], swin.state_dict()[key])
    with pytest.raises(HazardsegError, match="has no pretrained backbone"):
        create_model("mask2former_tiny", 3, pretrained=str(tmp_path / "model.safetensors"))


@pytest.mark.slow
def test_fit_resume_evaluate_and_export(shared_tiny_tree: Path, tmp_path: Path) -> None:
    from hazardseg.deploy.onnx_export import export_checkpoint
    from hazardseg.evaluation import evaluate
    from hazardseg.evaluation.spec import RunOptions
    from hazardseg.models.checkpoint import load_checkpoint
    from hazardseg.training import fit

    sets = [
        "model.name=mask2former_tiny", "model.num_queries=6", "model.decoder_layers=2",
        "data.num_workers=0", "augment.crop_size=32", "train.batch_size=2", "train.epochs=2",
        "train.lr=0.001", "train.seed=1", "train.class_weights=false",
        f"data.root={shared_tiny_tree}",
    ]  # fmt: skip
    straight = tmp_path / "a"
    fit(load_config(None, sets), straight, progress=False)
    half = tmp_path / "b"
    fit(load_config(None, [*sets, "train.epochs=1"]), half, progress=False)
    fit(load_config(None, sets), half, resume=True, progress=False)
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(half / "last.pt")
    for key, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][key], atol=0, rtol=0)
    res = evaluate(
        straight / "best.pt", shared_tiny_tree, "test", run=RunOptions(), out_dir=tmp_path / "e"
    )
    assert "rba" in res["methods"] and res["model"]["name"] == "mask2former_tiny"
    report = export_checkpoint(straight / "best.pt", tmp_path / "m.onnx", methods="max_logit,rba")
    assert report.check["score_max_abs_diff"]["rba"] <= 1e-4
