"""Named encoder configurations: the paper's model and a tiny one for CPU tests and demos."""

from __future__ import annotations

from geolink_edge.card import IMAGENET_MEAN, IMAGENET_STD, MixVPRConfig, ModelCard
from geolink_edge.errors import GeolinkError

PRESETS: dict[str, ModelCard] = {
    # DINOv2-B/14 at 448 px gives a 32x32 map of 768 channels; MixVPR 1024 x 4 rows = 4096-d.
    "geolink": ModelCard(
        backbone="vit_base_patch14_dinov2",
        image_size=(448, 448),
        feature_dim=768,
        feature_size=(32, 32),
        aggregator=MixVPRConfig(out_channels=1024, out_rows=4, mix_depth=2, mlp_ratio=1.0),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ),
    # Same family (plain ViT, LayerNorm, GELU) so the export and INT8 paths see DINOv2's structure,
    # but 49 tokens of 192 channels: a training step on a CPU takes a fraction of a second.
    "tiny": ModelCard(
        backbone="vit_tiny_patch16_224",
        image_size=(112, 112),
        feature_dim=192,
        feature_size=(7, 7),
        aggregator=MixVPRConfig(out_channels=64, out_rows=4, mix_depth=2, mlp_ratio=1.0),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    ),
}


def card_for_preset(name: str) -> ModelCard:
    """A fresh (unhashed) card of a named configuration."""
    if name not in PRESETS:
        raise GeolinkError(f"unknown model preset {name!r} (choose from {', '.join(sorted(PRESETS))})")
    return PRESETS[name].model_copy(deep=True)
