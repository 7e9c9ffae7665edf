"""The 2D image encoder shared by drone and satellite views: timm backbone → spatial map → MixVPR."""

from __future__ import annotations

import re
from pathlib import Path

import timm
import torch
from timm.models import group_parameters
from torch import nn

from geolink_edge.card import ModelCard, hash_state_dict
from geolink_edge.errors import GeolinkError
from geolink_edge.models.mixvpr import MixVPR


def error_summary(exc: Exception) -> str:
    """The telling line of a (multi-line) loading error: a size mismatch or missing key if named."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    telling = [line for line in lines if line.startswith(("size mismatch", "Missing key", "Unexpected key"))]
    return f"{type(exc).__name__}: {(telling or lines or [''])[0][:200]}"


def create_backbone(
    name: str, image_size: tuple[int, int] | None, pretrained: bool = False, weights: Path | None = None
) -> nn.Module:
    """The timm model ``name`` without its classifier; ``image_size`` None: timm's own input size."""
    kwargs: dict = {"pretrained": pretrained or weights is not None, "num_classes": 0}
    if weights is not None:
        if not Path(weights).is_file():
            raise GeolinkError(f"{weights}: backbone weights file not found")
        # timm's own loader reads safetensors or torch files (weights_only) and adapts ViT
        # position embeddings to the requested image size.
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights)}
    try:
        # ViTs are built for the card's size so the position embedding needs no interpolation at
        # run time (a static ONNX graph); ConvNets take any size and reject the argument.
        size = {} if image_size is None else {"img_size": image_size}
        try:
            return timm.create_model(name, **size, **kwargs)
        except TypeError:
            if not size:
                raise
            return timm.create_model(name, **kwargs)
    except Exception as exc:  # timm and the hub client raise many types; sort them for the user
        if isinstance(exc, RuntimeError) and "Unknown model" in str(exc):
            raise GeolinkError(f"unknown timm backbone {name!r}") from None
        if weights is not None:
            raise GeolinkError(
                f"{weights}: cannot load into backbone {name} ({error_summary(exc)})"
            ) from None
        if pretrained and isinstance(exc, OSError):
            raise GeolinkError(
                f"cannot download pretrained {name} from the timm hub ({type(exc).__name__}); "
                "offline, pass a local weights file instead"
            ) from None
        raise


def channels_last(backbone: nn.Module) -> bool:
    """Whether the backbone's map comes as (B, h, w, C) (Swin) rather than (B, C, h, w)."""
    return getattr(backbone, "output_fmt", "NCHW") == "NHWC"


def feature_shape(backbone: nn.Module, image_size: tuple[int, int], name: str) -> tuple[int, tuple[int, int]]:
    """Channels and (h, w) of the spatial map the backbone gives for images of ``image_size``."""
    patch_embed = getattr(backbone, "patch_embed", None)
    if hasattr(backbone, "num_prefix_tokens") and hasattr(patch_embed, "grid_size"):
        return backbone.num_features, tuple(patch_embed.grid_size)  # a ViT: one token per patch
    # a ConvNet's padding rounds each stride up (ResNet-18 at 112 px: 4x4, not 112 / 32): measure it
    training = backbone.training
    backbone.eval()  # a dry run in training mode would move the batch-norm statistics
    with torch.no_grad():
        device = next(backbone.parameters()).device  # the meta device when only shapes are wanted
        features = backbone.forward_features(torch.zeros(1, 3, *image_size, device=device))
    backbone.train(training)
    if features.ndim != 4:
        raise GeolinkError(
            f"{name} gives no spatial feature map (its features are {tuple(features.shape)}); "
            "MixVPR needs a ViT's patch tokens or a ConvNet's map"
        )
    if channels_last(backbone):
        return features.shape[3], tuple(features.shape[1:3])
    return features.shape[1], tuple(features.shape[2:])


def backbone_groups(backbone: nn.Module, name: str) -> list[list[str]]:
    """Parameter names of the stem, then of each block (ViT) or stage (ConvNet), in order.

    timm's coarse grouping of the model gives the stem and one group per block or stage, then
    one group of what its matcher leaves out (a ConvNet's final norm or head conv): that last one is
    dropped here. A model timm gives no grouping or no blocks is refused in one line.
    """
    try:
        matcher = backbone.group_matcher(coarse=True)
    except (AttributeError, NotImplementedError):
        matcher = None
    groups = [] if matcher is None else list(group_parameters(backbone, matcher).values())
    if isinstance(matcher, dict):  # {group: regex or [(regex, suffix), ...]}
        patterns = [
            entry[0] if isinstance(entry, tuple) else entry
            for spec in matcher.values()
            if spec is not None
            for entry in (spec if isinstance(spec, (list, tuple)) else [spec])
        ]
        while groups and not any(re.match(p, param) for p in patterns for param in groups[-1]):
            groups.pop()
    if len(groups) < 2:
        raise GeolinkError(
            f"{name}: timm describes no blocks or stages of it to freeze (use --freeze-blocks 0)"
        )
    return groups


class ImageEncoder(nn.Module):
    """Images (B, 3, H, W), preprocessed as the card says → L2-normalised descriptors (B, D)."""

    def __init__(
        self,
        card: ModelCard,
        pretrained: bool = False,
        weights: str | Path | None = None,
        freeze_blocks: int = 0,
    ):
        super().__init__()
        self.card = card.model_copy(update={"weights_hash": None})
        weights = Path(weights) if weights is not None else None
        self.backbone = create_backbone(card.backbone, card.image_size, pretrained, weights)
        channels, hw = feature_shape(self.backbone, card.image_size, card.backbone)
        if channels != card.feature_dim or hw != tuple(card.feature_size):
            raise GeolinkError(
                f"{card.backbone} at {card.image_size} gives a {hw[0]}x{hw[1]}x{channels} map, "
                f"but the model card says {card.feature_size[0]}x{card.feature_size[1]}x{card.feature_dim}"
            )
        self.prefix_tokens = getattr(self.backbone, "num_prefix_tokens", 0)
        agg = card.aggregator
        self.aggregator = MixVPR(channels, hw, agg.out_channels, agg.out_rows, agg.mix_depth, agg.mlp_ratio)
        self.freeze(freeze_blocks)

    def freeze(self, blocks: int) -> None:
        """Stop gradients through the stem and the first ``blocks`` blocks (ViT) or stages (ConvNet)."""
        if blocks == 0:
            return
        stem, *stages = backbone_groups(self.backbone, self.card.backbone)
        if blocks > len(stages):
            raise GeolinkError(
                f"cannot freeze {blocks} blocks of {self.card.backbone} (it has {len(stages)})"
            )
        names = {name for group in [stem, *stages[:blocks]] for name in group}
        for name, param in self.backbone.named_parameters():
            if name in names:
                param.requires_grad_(False)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's spatial map (B, C, h, w); a ViT's class/register tokens are dropped."""
        features = self.backbone.forward_features(images)
        if features.ndim == 3:
            patches = features[:, self.prefix_tokens :]
            features = patches.transpose(1, 2).unflatten(2, tuple(self.card.feature_size))
        elif channels_last(self.backbone):
            features = features.permute(0, 3, 1, 2)
        return features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.aggregator(self.feature_map(images))

    @property
    def descriptor_dim(self) -> int:
        return self.aggregator.out_dim

    def model_card(self) -> ModelCard:
        """The card with the hash of the current weights."""
        return self.card.model_copy(update={"weights_hash": hash_state_dict(self.state_dict())})
