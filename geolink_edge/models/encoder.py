"""The 2D image encoder shared by drone and satellite views: timm backbone → spatial map → MixVPR."""

from __future__ import annotations

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


def feature_shape(backbone: nn.Module, image_size: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """Channels and (h, w) of the spatial map the backbone gives for images of ``image_size``."""
    patch_embed = getattr(backbone, "patch_embed", None)
    if patch_embed is not None and hasattr(patch_embed, "grid_size"):
        return backbone.num_features, tuple(patch_embed.grid_size)
    # a ConvNet's padding rounds each stride up (ResNet-18 at 112 px: 4x4, not 112 / 32): measure it
    training = backbone.training
    backbone.eval()  # a dry run in training mode would move the batch-norm statistics
    with torch.no_grad():
        features = backbone.forward_features(torch.zeros(1, 3, *image_size))
    backbone.train(training)
    return features.shape[1], tuple(features.shape[2:])


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
        channels, hw = feature_shape(self.backbone, card.image_size)
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
        """Stop gradients through the stem and the first ``blocks`` blocks (ViT) or stages (ConvNet).

        Uses timm's own coarse grouping of each backbone: group 0 is the stem (patch embedding,
        class token, position embedding), then one group per block or stage.
        """
        groups = group_parameters(self.backbone, self.backbone.group_matcher(coarse=True))
        if not 0 <= blocks <= len(groups) - 1:
            raise GeolinkError(
                f"cannot freeze {blocks} blocks of {self.card.backbone} (it has {len(groups) - 1})"
            )
        if blocks == 0:
            return
        names = {name for group in range(blocks + 1) for name in groups[group]}
        for name, param in self.backbone.named_parameters():
            if name in names:
                param.requires_grad_(False)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's spatial map (B, C, h, w); a ViT's class/register tokens are dropped."""
        features = self.backbone.forward_features(images)
        if features.ndim == 3:
            patches = features[:, self.prefix_tokens :]
            features = patches.transpose(1, 2).unflatten(2, tuple(self.card.feature_size))
        return features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.aggregator(self.feature_map(images))

    @property
    def descriptor_dim(self) -> int:
        return self.aggregator.out_dim

    def model_card(self) -> ModelCard:
        """The card with the hash of the current weights."""
        return self.card.model_copy(update={"weights_hash": hash_state_dict(self.state_dict())})
