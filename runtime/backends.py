"""The encoder backends now live in :mod:`geolink_edge.backends`; the runtime's many call sites
keep importing them from here."""

from geolink_edge.backends import OnnxEmbedder, TensorRTEmbedder, TorchEmbedder, load_embedder
from geolink_edge.backends.embedder import Embedder
from geolink_edge.backends.metadata import CARD_KEY as ONNX_CARD_KEY
from geolink_edge.backends.metadata import PRECISION_KEY as ONNX_PRECISION_KEY

__all__ = [
    "ONNX_CARD_KEY",
    "ONNX_PRECISION_KEY",
    "Embedder",
    "OnnxEmbedder",
    "TensorRTEmbedder",
    "TorchEmbedder",
    "load_embedder",
]
