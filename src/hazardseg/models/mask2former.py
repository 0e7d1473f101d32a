"""Mask2Former (Cheng et al., CVPR 2022): mask classification with a set of queries, built on
the Hugging Face ``transformers`` implementation (``Mask2FormerForUniversalSegmentation`` from
a config: random init, nothing downloaded; the ``mask2former`` extra).

Each query predicts a class distribution (K classes + "no object") and a mask. The family
returns, as every hazardseg model, per-class maps under ``"out"``: the semantic map the RbA
authors compute (NazirNayal8/RbA ``maskformer_model.semantic_inference``),
``s_c(x) = sum_q softmax(class_q)[c] * sigmoid(mask_q(x))`` with the mask logits bilinearly
upsampled to the input size first, so mIoU, every anomaly method, TTA, calibration, export
and reports work on it unchanged (``rba`` reads it as RbA does). In training mode it also
returns the queries (``"queries"``) for the set-prediction loss (:meth:`query_loss`:
Hungarian matching, mask and dice losses on sampled points, class loss with the no-object
weight, deep supervision; the library's ``Mask2FormerLoss``), which the trainer uses in
place of the per-pixel cross-entropy.

Variants: ``mask2former_tiny`` (a 4-stage basic-block ResNet of 32..256 channels, 64-d pixel
and transformer decoders, 16 queries, one deformable encoder layer, 2 masked-attention
layers: 1.4 M parameters, trains on 2 CPU cores at about LR-ASPP's speed) and
``mask2former_swin_b`` (Swin-B backbone, 256-d decoders, 100 queries, 6 encoder layers, 9
masked-attention layers: the paper's semantic-segmentation model, for a GPU; its ImageNet-22k
backbone is opt-in from the local Hugging Face cache). ``num_queries`` and
``decoder_layers`` (the library's count: masked-attention layers + 1; RbA's light decoder is
2) are build options (``model.num_queries`` / ``model.decoder_layers`` in the config).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from hazardseg.errors import HazardsegError
from hazardseg.models.base import SegmentationModel, check_input
from hazardseg.models.pretrained import WeightsSource, check_state_keys, read_state_dict
from hazardseg.models.registry import register_model
from hazardseg.optional import require

SWIN_B_IN22K = WeightsSource(
    filename="model.safetensors",
    url="https://huggingface.co/microsoft/swin-base-patch4-window12-384-in22k",
    repo_id="microsoft/swin-base-patch4-window12-384-in22k",
)
"""Swin-B (window 12, 384 px, ImageNet-22k) in the Hugging Face cache."""

_STAGES = ["stage1", "stage2", "stage3", "stage4"]


@functools.cache
def _transformers() -> Any:
    mod = require("transformers", "the mask2former models", "mask2former")
    mod.logging.set_verbosity_error()  # its notice that a ResNet backbone is not Swin
    return mod


def semantic_map(class_logits: Tensor, mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """``(N, K, H, W)`` per-class maps from ``(N, Q, K+1)`` class logits and ``(N, Q, h, w)``
    mask logits: the mask logits bilinearly resized to ``size``, then
    ``einsum(softmax(class)[..., :K], sigmoid(mask))`` (RbA's ``semantic_inference``)."""
    probs = class_logits.float().softmax(dim=-1)[..., :-1]
    masks = mask_logits.float()
    if tuple(masks.shape[-2:]) != tuple(size):
        masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
    return torch.einsum("nqc,nqhw->nchw", probs, masks.sigmoid())


def mask_targets(target: Tensor, num_classes: int) -> tuple[list[Tensor], list[Tensor]]:
    """Per image, the binary masks and class ids of the known classes present in a semantic
    label map (ignored, anomaly and pasted-outlier pixels are in no mask)."""
    masks, classes = [], []
    for t in target:
        present = torch.unique(t)
        present = present[(present >= 0) & (present < num_classes)]
        masks.append((t[None] == present[:, None, None]).float())
        classes.append(present.long())
    return masks, classes


class Mask2FormerModel(SegmentationModel):
    """A Mask2Former network (module docstring); ``features`` is the pixel decoder's last map
    (``mask_feature_size`` channels at stride 4), the map the query masks are read from."""

    has_aux = False
    feature_stride = 4

    def __init__(self, name: str, num_classes: int, options: dict[str, Any]) -> None:
        super().__init__()
        tf = _transformers()
        self.name = name
        self.num_classes = num_classes
        self.options = dict(options)
        config = _config(tf, name, num_classes, options)
        self.feature_dim = int(config.mask_feature_size)
        self.net = tf.Mask2FormerForUniversalSegmentation(config)
        if options.get("attention") == "eager":
            self.net.set_attn_implementation("eager")
        # the Swin backbone keeps its classifier's final norm, which no backbone output reaches:
        # frozen, so that DDP (which needs a gradient for every trained parameter) and the
        # optimizer skip it; its weights still load from a Swin checkpoint
        for key, param in self.net.model.pixel_level_module.encoder.named_parameters():
            if key.startswith("swin.layernorm."):
                param.requires_grad_(False)

    @property
    def build_options(self) -> dict[str, Any]:
        return dict(self.options)

    def forward(self, x: Tensor, return_features: bool = False) -> dict[str, Tensor]:  # type: ignore[override]
        check_input(x, self.name)
        out = self.net(pixel_values=x, output_auxiliary_logits=self.training)
        result: dict[str, Any] = {
            "out": semantic_map(out.class_queries_logits, out.masks_queries_logits, x.shape[-2:])
        }
        if self.training:
            result["queries"] = {
                "class": out.class_queries_logits,
                "masks": out.masks_queries_logits,
                "aux": out.auxiliary_logits,
            }
        if return_features:
            result["features"] = out.pixel_decoder_last_hidden_state
        return result

    def query_loss(self, queries: dict[str, Any], target: Tensor) -> Tensor:
        """The set-prediction loss of the queries against a semantic label map (the library's
        weighted mask, dice and class losses, auxiliary layers included)."""
        masks, classes = mask_targets(target, self.num_classes)
        losses = self.net.get_loss_dict(
            queries["masks"], queries["class"], masks, classes, queries["aux"]
        )
        return sum(losses.values())

    def load_backbone_weights(self, path: Path) -> None:
        """Load a Hugging Face Swin checkpoint (``swin.*`` keys) into the backbone."""
        if not self.name.startswith("mask2former_swin"):
            raise HazardsegError(f"{self.name}: has no pretrained backbone; use pretrained=None")
        encoder = self.net.model.pixel_level_module.encoder

        def rename(key: str) -> str | None:  # the backbone holds the checkpoint's ``swin``
            return key if key.startswith("swin.") and not key.startswith("swin.pooler") else None

        mapped = {}
        for key, value in read_state_dict(path).items():
            new = rename(key)
            if new is not None:
                mapped[new] = value
        own = {k: v for k, v in encoder.state_dict().items() if "hidden_states_norms" not in k}
        check_state_keys(
            own, mapped, f"{path}: backbone weights do not match", f"{path}: backbone weight"
        )
        encoder.load_state_dict(mapped, strict=False)  # the stage norms keep their init


VARIANTS: dict[str, dict[str, Any]] = {
    "mask2former_tiny": {
        "backbone": "resnet",
        "hidden_sizes": [32, 64, 128, 256],
        "hidden_dim": 64,
        "num_queries": 16,
        "decoder_layers": 3,
        "encoder_layers": 1,
        "num_attention_heads": 4,
        "train_num_points": 1024,
    },
    "mask2former_swin_b": {
        "backbone": "swin",
        "swin": {
            "embed_dim": 128,
            "depths": [2, 2, 18, 2],
            "num_heads": [4, 8, 16, 32],
            "window_size": 12,
            "image_size": 384,
            "drop_path_rate": 0.3,
        },
        "hidden_dim": 256,
        "num_queries": 100,
        "decoder_layers": 10,
        "encoder_layers": 6,
        "num_attention_heads": 8,
        "train_num_points": 12544,
    },
}


def _config(tf: Any, name: str, num_classes: int, options: dict[str, Any]) -> Any:
    v = {**VARIANTS[name], **{k: o for k, o in options.items() if o is not None}}
    q, layers, hidden = v["num_queries"], v["decoder_layers"], v["hidden_dim"]
    for key, value, low in (("num_queries", q, 1), ("decoder_layers", layers, 2)):
        if not isinstance(value, int) or value < low or value > 1000:
            raise HazardsegError(
                f"{name}: {key}={value!r}; expected an integer in {low}..1000 "
                "(decoder_layers counts the masked-attention layers + 1)"
            )
    if v["backbone"] == "resnet":
        backbone = tf.ResNetConfig(
            embedding_size=v["hidden_sizes"][0],
            hidden_sizes=v["hidden_sizes"],
            depths=[1, 1, 1, 1],
            layer_type="basic",
            out_features=_STAGES,
        )
    else:
        backbone = tf.SwinConfig(**v["swin"], out_features=_STAGES)
    return tf.Mask2FormerConfig(
        backbone_config=backbone,
        num_labels=num_classes,
        num_queries=q,
        decoder_layers=layers,
        hidden_dim=hidden,
        feature_size=hidden,
        mask_feature_size=hidden,
        encoder_layers=v["encoder_layers"],
        encoder_feedforward_dim=4 * hidden if v["backbone"] == "swin" else 2 * hidden,
        dim_feedforward=8 * hidden if v["backbone"] == "swin" else 2 * hidden,
        num_attention_heads=v["num_attention_heads"],
        train_num_points=v["train_num_points"],
    )


@register_model(family="mask2former")
def mask2former_tiny(
    num_classes: int = 13, num_queries: int | None = None, decoder_layers: int | None = None
) -> Mask2FormerModel:
    """Mask2Former with a small ResNet backbone (1.4 M parameters), for the CPU."""
    options = {"num_queries": num_queries, "decoder_layers": decoder_layers}
    return Mask2FormerModel("mask2former_tiny", num_classes, options)


@register_model(family="mask2former", weights=SWIN_B_IN22K)
def mask2former_swin_b(
    num_classes: int = 13,
    num_queries: int | None = None,
    decoder_layers: int | None = None,
    attention: str | None = None,
) -> Mask2FormerModel:
    """Mask2Former with a Swin-B backbone (the paper's semantic model), for a GPU."""
    options = {"num_queries": num_queries, "decoder_layers": decoder_layers, "attention": attention}
    return Mask2FormerModel("mask2former_swin_b", num_classes, options)
