"""Model registry: every entry builds offline, runs forward/backward, round-trips a checkpoint."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from hazardseg.cli import main
from hazardseg.errors import HazardsegError
from hazardseg.models import create_model, describe_model, list_models, pretrained_available
from hazardseg.models.checkpoint import load_checkpoint, load_model, save_checkpoint
from hazardseg.models.forward import autocast_context, prepare_for_inference
from hazardseg.models.pretrained import expected_location
from hazardseg.models.registry import get_model_spec
from hazardseg.models.state_dict import load_state_into
from hazardseg.precision import autocast_dtype

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LIGHT = ["lraspp_mobilenet_v3", "deeplabv3_resnet50", "deeplabv3plus_resnet50", "segformer_b0"]
HEAVY = [name for name in list_models() if name not in LIGHT]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to open a network connection fail loudly."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the torch hub and Hugging Face caches at an empty temporary directory."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path


# hiera_base works at a fixed resolution chosen at build time; 64x64 keeps the test fast.
OPTIONS = {"hiera_base": {"img_size": (64, 64)}}


def _check_contract(name: str, size: tuple[int, int]) -> tuple[torch.nn.Module, torch.Tensor]:
    """Build ``name`` offline, run forward/backward in training mode, check the output dict."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, **OPTIONS.get(name, {}))
    assert (model.name, model.num_classes) == (name, 5)
    x = torch.randn(2, 3, *size)
    model.train()
    out = model(x, return_features=True)
    assert out["out"].shape == (2, 5, *size)
    assert ("aux" in out) == model.has_aux
    if model.has_aux:
        assert out["aux"].shape == (2, 5, *size)
    feats = out["features"]
    assert feats.ndim == 4 and feats.shape[:2] == (2, model.feature_dim)
    loss = out["out"].mean() + (out["aux"].mean() if model.has_aux else 0)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    model.eval()
    return model, x


def _save(model: torch.nn.Module, name: str, path: Path) -> Path:
    return save_checkpoint(
        path,
        model,
        model_name=name,
        class_names=[f"c{i}" for i in range(5)],
        config={"model": {"name": name}},
        epoch=1,
        best_metric=0.25,
    )


@pytest.mark.parametrize("name", LIGHT)
def test_light_model_contract_and_load_model_roundtrip(
    name: str, tmp_path: Path, no_network: None
) -> None:
    model, x = _check_contract(name, (64, 64))
    with torch.no_grad():
        ref = model(x)
    assert set(ref) == {"out"}
    loaded, info = load_model(_save(model, name, tmp_path / "m.pt"))
    assert info["model_name"] == name and info["num_classes"] == 5
    with torch.no_grad():
        again = loaded(x)
    torch.testing.assert_close(again["out"], ref["out"], rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", HEAVY)
def test_heavy_model_contract_and_checkpoint_roundtrip(
    name: str, tmp_path: Path, no_network: None
) -> None:
    """Same contract at 32 px; the checkpoint is reloaded into the (perturbed) same instance
    instead of a second build, which is what dominates the time of these models."""
    model, x = _check_contract(name, (32, 32))
    with torch.no_grad():
        ref = model(x)
    path = _save(model, name, tmp_path / "m.pt")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ckpt = load_checkpoint(path)
    assert ckpt["model_name"] == name and ckpt["num_classes"] == 5
    load_state_into(model, ckpt["model"], path)
    with torch.no_grad():
        again = model(x)
    torch.testing.assert_close(again["out"], ref["out"], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["segformer_b0", "deeplabv3plus_resnet50"])
def test_smp_models_accept_sizes_not_multiple_of_32(name: str) -> None:
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 72, 88), return_features=True)
    assert out["out"].shape == (1, 13, 72, 88)
    assert out["features"].shape == (1, 256, 18, 22)


def test_features_feed_the_final_classifier() -> None:
    """The logits are the final 1x1 conv of the returned features, upsampled."""
    torch.manual_seed(0)
    model = create_model("deeplabv3_resnet50", num_classes=4).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(x, return_features=True)
        logits = model.classifier[4](out["features"])
        up = torch.nn.functional.interpolate(logits, size=(64, 64), mode="bilinear")
    torch.testing.assert_close(up, out["out"])


def test_deeplab_keys_identical_to_torchvision() -> None:
    tv = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, aux_loss=True
    )
    ours = create_model("deeplabv3_resnet50")
    assert list(tv.state_dict()) == list(ours.state_dict())


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3", "segformer_b0", "deeplabv3_resnet50"])
def test_describe_counts_parameters_like_a_real_build(name: str) -> None:
    real = sum(p.numel() for p in create_model(name).parameters())
    info = describe_model(name)
    assert info["params_m"] * 1e6 == pytest.approx(real, abs=0.5)
    assert info["has_aux"] == (name == "deeplabv3_resnet50")


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(HazardsegError, match="unknown model 'deeplabv3_resnet5'") as exc:
        create_model("deeplabv3_resnet5")
    assert "did you mean 'deeplabv3_resnet50'" in str(exc.value)
    assert "lraspp_mobilenet_v3" in str(exc.value)


def test_bad_num_classes_is_an_error() -> None:
    with pytest.raises(HazardsegError, match="num_classes"):
        create_model("lraspp_mobilenet_v3", num_classes=0)


@pytest.mark.parametrize(
    "name", ["deeplabv3_resnet50", "lraspp_mobilenet_v3", "segformer_b0", "hiera_base"]
)
def test_imagenet_with_empty_cache_names_the_file(
    name: str, empty_caches: Path, no_network: None
) -> None:
    spec = get_model_spec(name)
    assert spec.weights is not None
    with pytest.raises(HazardsegError) as exc:
        create_model(name, pretrained="imagenet")
    msg = str(exc.value)
    assert spec.weights.filename in msg and spec.weights.url in msg
    assert str(expected_location(spec.weights).parent) in msg
    assert str(empty_caches) in msg
    assert not pretrained_available(name)


def test_imagenet_weights_from_torch_hub_cache(empty_caches: Path, no_network: None) -> None:
    torch.manual_seed(1)
    mobilenet = torchvision.models.mobilenet_v3_large(weights=None, dilated=True)
    target = empty_caches / "torch" / "hub" / "checkpoints" / "mobilenet_v3_large-8738ca79.pth"
    target.parent.mkdir(parents=True)
    torch.save(mobilenet.state_dict(), target)
    assert pretrained_available("lraspp_mobilenet_v3")

    model = create_model("lraspp_mobilenet_v3", pretrained="imagenet")
    expected = mobilenet.features.state_dict()
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)

    by_path = create_model("lraspp_mobilenet_v3", pretrained=str(target))
    torch.testing.assert_close(
        by_path.backbone.state_dict()["0.0.weight"], expected["0.0.weight"], rtol=0, atol=0
    )


def test_imagenet_weights_from_hf_cache(empty_caches: Path, no_network: None) -> None:
    from safetensors.torch import save_file

    spec = get_model_spec("segformer_b0")
    assert spec.weights is not None
    donor = create_model("segformer_b0")
    target = expected_location(spec.weights)
    target.parent.mkdir(parents=True)
    tensors = {k: v.contiguous() for k, v in donor.encoder.state_dict().items()}
    tensors["head.weight"] = torch.zeros(1000, 256)  # the hub files carry a classifier
    save_file(tensors, str(target))
    model = create_model("segformer_b0", pretrained="imagenet")
    for key, value in model.encoder.state_dict().items():
        torch.testing.assert_close(value, donor.encoder.state_dict()[key], rtol=0, atol=0)


@pytest.mark.slow
def test_hiera_imagenet_weights_resample_position_embedding(
    empty_caches: Path, no_network: None
) -> None:
    import timm
    from safetensors.torch import save_file

    spec = get_model_spec("hiera_base")
    assert spec.weights is not None
    donor = timm.create_model("hiera_base_224", pretrained=False)
    target = expected_location(spec.weights)
    target.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(target))
    model = create_model("hiera_base", pretrained="imagenet", img_size=(64, 96))
    own = model.encoder.state_dict()
    assert own["model.pos_embed"].shape == (1, 16 * 24, 96)
    torch.testing.assert_close(
        own["model.blocks.3.attn.qkv.weight"], donor.state_dict()["blocks.3.attn.qkv.weight"]
    )
    path = save_checkpoint(
        empty_caches / "hiera.pt",
        model,
        model_name="hiera_base",
        class_names=["c"] * 13,
        config={},
        epoch=0,
        best_metric=None,
    )
    loaded, info = load_model(path)
    assert info["model_options"] == {"img_size": [64, 96]} and loaded.img_size == (64, 96)
    with pytest.raises(HazardsegError, match="multiples of 32"):
        create_model("hiera_base", img_size=(60, 64))
    with pytest.raises(HazardsegError, match="has no option"):
        create_model("lraspp_mobilenet_v3", img_size=(64, 64))


def test_pretrained_file_with_wrong_keys_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(3)}, bad)
    with pytest.raises(HazardsegError, match="backbone weights do not match"):
        create_model("lraspp_mobilenet_v3", pretrained=str(bad))
    with pytest.raises(HazardsegError, match="neither 'imagenet' nor an existing"):
        create_model("lraspp_mobilenet_v3", pretrained=str(tmp_path / "missing.pth"))


def test_models_cli_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    for name in list_models():
        assert name in table
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert by_name["deeplabv3_resnet50"]["has_aux"] is True
    assert by_name["lraspp_mobilenet_v3"]["feature_dim"] == 168
    assert by_name["deeplabv3_resnet50"]["params_m"] == pytest.approx(42.0, abs=0.1)


def test_inference_helpers_match_plain_forward() -> None:
    torch.manual_seed(0)
    model = create_model("lraspp_mobilenet_v3").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        ref = model(x)["out"]
        fast = prepare_for_inference(model, "cpu", channels_last=True)
        cl = fast(x.contiguous(memory_format=torch.channels_last))["out"]
        with autocast_context("cpu", "bf16"):
            low = fast(x)["out"]
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-4)
    assert low.dtype == torch.bfloat16
    assert (low.float().argmax(1) == ref.argmax(1)).float().mean() > 0.9
    assert autocast_dtype("fp32") is None and autocast_dtype("bf16") == torch.bfloat16
    with pytest.raises(HazardsegError, match="unknown precision"):
        autocast_dtype("int8")


def test_input_shape_error_suggests_fix() -> None:
    model = create_model("lraspp_mobilenet_v3").eval()
    with pytest.raises(HazardsegError, match="unsqueeze"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(HazardsegError, match="float image batch"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_evaluation_forward_cpu_is_the_plain_forward() -> None:
    from hazardseg.models.forward import evaluation_forward

    model = create_model("lraspp_mobilenet_v3").eval()
    x = torch.randn(2, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = model(x, return_features=True)
        logits, feats = evaluation_forward(model, x, "cpu", features=True)
        assert torch.equal(logits, ref["out"]) and torch.equal(feats, ref["features"])
        assert evaluation_forward(model, x, "cpu")[1] is None
        low, _ = evaluation_forward(model, x, "cpu", precision="bf16")
    assert low.dtype == torch.float32 and low.shape == ref["out"].shape
    agree = (low.argmax(1) == ref["out"].argmax(1)).float().mean().item()
    assert agree > 0.9


def test_importing_the_registry_does_not_import_smp_timm_or_transformers() -> None:
    """Families register without importing their third-party packages (about 1.3 s): a command
    that never builds such a model (eval-maps, compare) does not pay for them."""
    code = (
        "import sys, hazardseg.models, hazardseg.anomaly, hazardseg.evaluation\n"
        "from hazardseg.models import list_models\n"
        "assert len(list_models()) == 14, list_models()\n"
        "heavy = ('timm', 'segmentation_models_pytorch', 'transformers')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
