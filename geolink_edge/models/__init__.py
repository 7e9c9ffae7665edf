"""The GeoLink networks: 2D image encoder (timm backbone + MixVPR) and the 3D branch."""

from geolink_edge.models.checkpoint import CHECKPOINT_FORMAT, load_encoder, read_checkpoint, save_checkpoint
from geolink_edge.models.club import CLUBEstimator
from geolink_edge.models.encoder import ImageEncoder
from geolink_edge.models.mixvpr import MixVPR
from geolink_edge.models.mme import MixtureOfExperts
from geolink_edge.models.pointnn import PointNN
from geolink_edge.models.presets import MODEL_PRESETS, card_for_backbone, card_for_preset

__all__ = [
    "CHECKPOINT_FORMAT",
    "MODEL_PRESETS",
    "CLUBEstimator",
    "ImageEncoder",
    "MixVPR",
    "MixtureOfExperts",
    "PointNN",
    "card_for_backbone",
    "card_for_preset",
    "load_encoder",
    "read_checkpoint",
    "save_checkpoint",
]
