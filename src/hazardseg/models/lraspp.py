"""LR-ASPP with a MobileNetV3-Large backbone (torchvision layout): the small CPU model."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large
from torchvision.models.segmentation.lraspp import LRASPP, _lraspp_mobilenetv3

from hazardseg.models.base import SegmentationModel, check_input, upsample_to
from hazardseg.models.pretrained import WeightsSource, load_backbone_weights, read_state_dict
from hazardseg.models.registry import register_model

_URL = MobileNet_V3_Large_Weights.IMAGENET1K_V1.url
MOBILENET_V3_LARGE_IMAGENET = WeightsSource(filename=_URL.rsplit("/", 1)[-1], url=_URL)


class LRASPPModel(LRASPP, SegmentationModel):
    """torchvision's LRASPP-MobileNetV3-Large; no auxiliary head.

    The logits are ``low_classifier(low) + high_classifier(high')``, so ``features`` is the
    concatenation ``[low (40-d), high' (128-d, upsampled)]`` at stride 8: the map the final
    linear classifiers read.
    """

    has_aux = False
    feature_dim = 40 + 128
    feature_stride = 8

    def __init__(self, name: str, num_classes: int) -> None:
        tv = _lraspp_mobilenetv3(mobilenet_v3_large(weights=None, dilated=True), num_classes)
        super().__init__(tv.backbone, 40, 960, num_classes)
        self.name = name
        self.num_classes = num_classes

    def forward(self, x: Tensor, return_features: bool = False) -> dict[str, Tensor]:  # type: ignore[override]
        check_input(x, self.name)
        feats = self.backbone(x)
        low, high = feats["low"], feats["high"]
        head = self.classifier
        context = head.cbr(high) * head.scale(high)
        context = upsample_to(context, low.shape[-2:])
        logits = head.low_classifier(low) + head.high_classifier(context)
        result = {"out": upsample_to(logits, x.shape[-2:])}
        if return_features:
            result["features"] = torch.cat([low, context], dim=1)
        return result

    def load_backbone_weights(self, path: Path) -> None:
        """Load a torchvision MobileNetV3-Large ImageNet state dict (classifier dropped)."""

        def rename(key: str) -> str | None:
            return key[len("features.") :] if key.startswith("features.") else None

        load_backbone_weights(self.backbone, read_state_dict(path), path, rename=rename)


@register_model(family="lraspp", weights=MOBILENET_V3_LARGE_IMAGENET)
def lraspp_mobilenet_v3(num_classes: int = 13) -> LRASPPModel:
    """LR-ASPP MobileNetV3-Large (torchvision layout); small, the CPU demo default."""
    return LRASPPModel("lraspp_mobilenet_v3", num_classes)
