"""DeepLabV3 with ResNet backbones, parameter names identical to torchvision's."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor
from torchvision.models import ResNet50_Weights, ResNet101_Weights, resnet50, resnet101
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
from torchvision.models.segmentation.fcn import FCNHead

from hazardseg.models.base import SegmentationModel, check_input, upsample_to
from hazardseg.models.pretrained import (
    WeightsSource,
    load_backbone_weights,
    read_state_dict,
)
from hazardseg.models.registry import register_model


def _torchvision_source(url: str) -> WeightsSource:
    return WeightsSource(filename=url.rsplit("/", 1)[-1], url=url)


RESNET50_IMAGENET = _torchvision_source(ResNet50_Weights.IMAGENET1K_V1.url)
RESNET101_IMAGENET = _torchvision_source(ResNet101_Weights.IMAGENET1K_V1.url)


class DeepLabV3Model(DeepLabV3, SegmentationModel):
    """torchvision's DeepLabV3 (output stride 8) with a 13-class auxiliary FCN head on layer3.

    ``features`` is the 256-d map feeding the final 1x1 classifier (ASPP -> 3x3 conv -> BN ->
    ReLU, stride 8): the logits are a linear function of it, which suits Mahalanobis-style
    anomaly methods, and 256x256 class covariances are cheap and well conditioned.
    """

    has_aux = True
    feature_dim = 256
    feature_stride = 8

    def __init__(self, name: str, depth: int, num_classes: int) -> None:
        build = {50: resnet50, 101: resnet101}[depth]
        resnet = build(weights=None, replace_stride_with_dilation=[False, True, True])
        backbone = IntermediateLayerGetter(resnet, return_layers={"layer4": "out", "layer3": "aux"})
        super().__init__(backbone, DeepLabHead(2048, num_classes), FCNHead(1024, num_classes))
        self.name = name
        self.num_classes = num_classes

    def forward(self, x: Tensor, return_features: bool = False) -> dict[str, Tensor]:  # type: ignore[override]
        check_input(x, self.name)
        size = x.shape[-2:]
        feats = self.backbone(x)
        hidden = feats["out"]
        for layer in list(self.classifier)[:-1]:
            hidden = layer(hidden)
        result = {"out": upsample_to(self.classifier[4](hidden), size)}
        if self.training and self.aux_classifier is not None:
            result["aux"] = upsample_to(self.aux_classifier(feats["aux"]), size)
        if return_features:
            result["features"] = hidden
        return result

    def load_backbone_weights(self, path: Path) -> None:
        """Load a torchvision ResNet ImageNet state dict (its ``fc`` head is dropped)."""
        load_backbone_weights(
            self.backbone,
            read_state_dict(path),
            path,
            rename=lambda k: None if k.startswith("fc.") else k,
        )


@register_model(family="deeplabv3", weights=RESNET50_IMAGENET)
def deeplabv3_resnet50(num_classes: int = 13) -> DeepLabV3Model:
    """DeepLabV3-ResNet50 (torchvision layout, aux head); the reference run's model."""
    return DeepLabV3Model("deeplabv3_resnet50", 50, num_classes)


@register_model(family="deeplabv3", weights=RESNET101_IMAGENET)
def deeplabv3_resnet101(num_classes: int = 13) -> DeepLabV3Model:
    """DeepLabV3-ResNet101 (torchvision layout, aux head)."""
    return DeepLabV3Model("deeplabv3_resnet101", 101, num_classes)
