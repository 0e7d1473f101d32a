"""Hiera-Base (timm) with a SegFormer-style all-MLP head.

timm's Hiera fixes its token grid (position embedding and mask-unit unrolling) when it is
built, so the model works at one resolution, ``img_size`` (default 512x512): inputs of any
other size are resized to it and the logits are resized back to the input size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from hazardseg.errors import HazardsegError
from hazardseg.models.base import SegmentationModel, check_input, upsample_to
from hazardseg.models.pretrained import WeightsSource, load_backbone_weights, read_state_dict
from hazardseg.models.registry import register_model

HIERA_BASE_IMAGENET = WeightsSource(
    filename="model.safetensors",
    url="https://huggingface.co/timm/hiera_base_224.mae_in1k_ft_in1k/resolve/main/model.safetensors",
    repo_id="timm/hiera_base_224.mae_in1k_ft_in1k",
    revision=None,
)
_PRETRAIN_TOKENS = (56, 56)  # 224 / patch stride 4


class AllMLPDecoder(nn.Module):
    """Project every stage to ``dim`` channels, upsample to the finest stage, concatenate, fuse.

    ``dropout`` is applied by the owner between the fused map and its classifier.
    """

    def __init__(self, in_channels: list[int], dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(dim * len(in_channels), dim, 1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, feats: list[Tensor]) -> Tensor:
        size = feats[0].shape[-2:]
        maps = [upsample_to(p(f), size) for p, f in zip(self.proj, feats, strict=True)]
        return self.fuse(torch.cat(maps, dim=1))


class HieraSegModel(SegmentationModel):
    """Hiera encoder (4 stages, strides 4-32) + all-MLP decoder; no auxiliary head.

    ``features`` is the fused 256-d decoder map (stride 4 of ``img_size``) feeding the 1x1
    classifier.
    """

    has_aux = False
    feature_dim = 256
    feature_stride = 4

    def __init__(
        self,
        name: str,
        variant: str,
        num_classes: int,
        img_size: tuple[int, int] | list[int] = (512, 512),
    ) -> None:
        super().__init__()
        height, width = (int(v) for v in img_size)
        if height <= 0 or width <= 0 or height % 32 or width % 32:
            raise HazardsegError(
                f"{name}: img_size {img_size!r} must be two positive multiples of 32 (H, W)"
            )
        import timm  # here, not at import: importing hazardseg.models stays free of timm

        self.encoder = timm.create_model(
            variant, pretrained=False, features_only=True, img_size=(height, width)
        )
        self.decoder = AllMLPDecoder(self.encoder.feature_info.channels(), self.feature_dim)
        self.classifier = nn.Conv2d(self.feature_dim, num_classes, 1)
        self.name = name
        self.num_classes = num_classes
        self.img_size = (height, width)

    @property
    def build_options(self) -> dict[str, Any]:
        """The working resolution, needed to rebuild the model from a checkpoint."""
        return {"img_size": list(self.img_size)}

    def forward(self, x: Tensor, return_features: bool = False) -> dict[str, Tensor]:
        check_input(x, self.name)
        size = x.shape[-2:]
        if tuple(size) != self.img_size:
            x = F.interpolate(x, size=self.img_size, mode="bilinear", align_corners=False)
        hidden = self.decoder(self.encoder(x))
        logits = self.classifier(self.decoder.dropout(hidden))
        result = {"out": upsample_to(logits, size)}
        if return_features:
            result["features"] = hidden
        return result

    def load_backbone_weights(self, path: Path) -> None:
        """Load timm Hiera weights (``model.safetensors``); the ImageNet head is dropped and the
        224-px position embedding resampled to ``img_size``."""
        from timm.layers import resample_abs_pos_embed

        own = self.encoder.state_dict()
        state: dict[str, Tensor] = {}
        for key, value in read_state_dict(path).items():
            new = f"model.{key}"
            if new not in own:
                continue
            if key == "pos_embed" and value.shape != own[new].shape:
                grid = (self.img_size[0] // 4, self.img_size[1] // 4)
                value = resample_abs_pos_embed(
                    value, new_size=list(grid), old_size=list(_PRETRAIN_TOKENS), num_prefix_tokens=0
                )
            state[new] = value
        load_backbone_weights(self.encoder, state, path)


@register_model(family="hiera", weights=HIERA_BASE_IMAGENET)
def hiera_base(
    num_classes: int = 13, img_size: tuple[int, int] | list[int] = (512, 512)
) -> HieraSegModel:
    """Hiera-Base (timm) + all-MLP head at a fixed working resolution (default 512x512)."""
    return HieraSegModel("hiera_base", "hiera_base_224", num_classes, img_size)
