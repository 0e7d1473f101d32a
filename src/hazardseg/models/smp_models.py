"""DeepLabV3+ and SegFormer from segmentation-models-pytorch, behind the hazardseg interface."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor
from torch.nn import functional as F

from hazardseg.models.base import SegmentationModel, check_input, upsample_to
from hazardseg.models.pretrained import WeightsSource, load_backbone_weights, read_state_dict
from hazardseg.models.registry import register_model

if TYPE_CHECKING:
    import segmentation_models_pytorch as smp

# segmentation_models_pytorch (and timm under it) is imported when a model is built or its
# weights file is asked about, not when the family registers: importing hazardseg.models
# stays free of it.


def smp_imagenet_source(encoder: str) -> WeightsSource:
    """The Hugging Face hub file smp 0.6 would fetch for ``encoder_weights="imagenet"``."""
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders[encoder]["pretrained_settings"]["imagenet"]
    repo, rev = settings["repo_id"], settings["revision"]
    return WeightsSource(
        filename="model.safetensors",
        url=f"https://huggingface.co/{repo}/resolve/{rev}/model.safetensors",
        repo_id=repo,
        revision=rev,
    )


_CLASSIFIER_KEYS = {"fc.weight", "fc.bias", "head.weight", "head.bias"}


class SMPModel(SegmentationModel):
    """An smp encoder-decoder; parameter names are smp's (``encoder.``, ``decoder.``,
    ``segmentation_head.``).

    Inputs of any size are padded (bottom/right, replicate) to a multiple of the encoder's
    stride and the outputs cropped back. ``features`` is the decoder output feeding the 1x1
    classifier (256-d, stride 4).
    """

    has_aux = False
    feature_dim = 256
    feature_stride = 4

    def __init__(self, name: str, net: smp.base.SegmentationModel, pad_multiple: int) -> None:
        super().__init__()
        self.encoder = net.encoder
        self.decoder = net.decoder
        self.segmentation_head = net.segmentation_head
        self.name = name
        self.num_classes = int(net.segmentation_head[0].out_channels)
        self.pad_multiple = pad_multiple

    def forward(self, x: Tensor, return_features: bool = False) -> dict[str, Tensor]:
        check_input(x, self.name)
        height, width = x.shape[-2:]
        m = self.pad_multiple
        pad_h, pad_w = (-height) % m, (-width) % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        decoded = self.decoder(self.encoder(x))
        logits = upsample_to(self.segmentation_head[0](decoded), x.shape[-2:])
        result = {"out": logits[..., :height, :width]}
        if return_features:
            fh = -(-height * decoded.shape[-2] // x.shape[-2])
            fw = -(-width * decoded.shape[-1] // x.shape[-1])
            result["features"] = decoded[..., :fh, :fw]
        return result

    def load_backbone_weights(self, path: Path) -> None:
        """Load encoder weights in smp's format (the hub ``model.safetensors`` of the encoder);
        an ImageNet classifier (``fc.*`` / ``head.*``) in the file is dropped, as smp does."""
        own = set(self.encoder.state_dict())

        def rename(key: str) -> str | None:
            return None if key in _CLASSIFIER_KEYS and key not in own else key

        load_backbone_weights(self.encoder, read_state_dict(path), path, rename=rename)


def _deeplabv3plus(name: str, encoder: str, num_classes: int) -> SMPModel:
    import segmentation_models_pytorch as smp

    net = smp.DeepLabV3Plus(encoder_name=encoder, encoder_weights=None, classes=num_classes)
    return SMPModel(name, net, pad_multiple=32)


def _segformer(name: str, encoder: str, num_classes: int) -> SMPModel:
    import segmentation_models_pytorch as smp

    net = smp.Segformer(encoder_name=encoder, encoder_weights=None, classes=num_classes)
    return SMPModel(name, net, pad_multiple=32)


@register_model(family="deeplabv3plus", weights=partial(smp_imagenet_source, "resnet50"))
def deeplabv3plus_resnet50(num_classes: int = 13) -> SMPModel:
    """DeepLabV3+ (ASPP + low-level decoder, output stride 16) on ResNet50, via smp."""
    return _deeplabv3plus("deeplabv3plus_resnet50", "resnet50", num_classes)


@register_model(family="deeplabv3plus", weights=partial(smp_imagenet_source, "resnet101"))
def deeplabv3plus_resnet101(num_classes: int = 13) -> SMPModel:
    """DeepLabV3+ (ASPP + low-level decoder, output stride 16) on ResNet101, via smp."""
    return _deeplabv3plus("deeplabv3plus_resnet101", "resnet101", num_classes)


@register_model(family="segformer", weights=partial(smp_imagenet_source, "mit_b0"))
def segformer_b0(num_classes: int = 13) -> SMPModel:
    """SegFormer with a MiT-B0 encoder and the all-MLP decoder (256-d), via smp."""
    return _segformer("segformer_b0", "mit_b0", num_classes)


@register_model(family="segformer", weights=partial(smp_imagenet_source, "mit_b1"))
def segformer_b1(num_classes: int = 13) -> SMPModel:
    """SegFormer with a MiT-B1 encoder and the all-MLP decoder (256-d), via smp."""
    return _segformer("segformer_b1", "mit_b1", num_classes)


@register_model(family="segformer", weights=partial(smp_imagenet_source, "mit_b2"))
def segformer_b2(num_classes: int = 13) -> SMPModel:
    """SegFormer with a MiT-B2 encoder and the all-MLP decoder (256-d), via smp."""
    return _segformer("segformer_b2", "mit_b2", num_classes)


@register_model(family="segformer", weights=partial(smp_imagenet_source, "mit_b3"))
def segformer_b3(num_classes: int = 13) -> SMPModel:
    """SegFormer with a MiT-B3 encoder and the all-MLP decoder (256-d), via smp."""
    return _segformer("segformer_b3", "mit_b3", num_classes)


@register_model(family="segformer", weights=partial(smp_imagenet_source, "mit_b4"))
def segformer_b4(num_classes: int = 13) -> SMPModel:
    """SegFormer with a MiT-B4 encoder and the all-MLP decoder (256-d), via smp."""
    return _segformer("segformer_b4", "mit_b4", num_classes)


@register_model(family="segformer", weights=partial(smp_imagenet_source, "mit_b5"))
def segformer_b5(num_classes: int = 13) -> SMPModel:
    """SegFormer with a MiT-B5 encoder and the all-MLP decoder (256-d), via smp."""
    return _segformer("segformer_b5", "mit_b5", num_classes)
