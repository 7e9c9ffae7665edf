"""ONNX export of the 2D encoder: fixed image size, dynamic batch, model card in the metadata."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import onnx
import torch

from geolink_edge.atomic import atomic_path
from geolink_edge.backends.metadata import CARD_KEY, PRECISION_KEY
from geolink_edge.errors import GeolinkError
from geolink_edge.models.encoder import ImageEncoder

INPUT_NAME = "images"
OUTPUT_NAME = "descriptors"


def export_onnx(
    encoder: ImageEncoder, path: str | os.PathLike, opset: int = 17, precision_label: str = "fp32"
) -> Path:
    """Write ``encoder`` as ONNX ``images (N,3,H,W) → descriptors (N,D)`` and return the path.

    Opset 17 or later keeps LayerNorm a single op (a decomposed one overflows in FP16 engines).
    The card (with the weights hash) goes to ``metadata_props`` so every runtime can check it.
    """
    if opset < 17:
        raise GeolinkError(f"ONNX opset {opset} is too old: LayerNorm needs opset >= 17")
    card = encoder.model_card()
    height, width = card.image_size
    example = torch.zeros(1, 3, height, width, device=next(encoder.parameters()).device)
    was_training = encoder.training
    encoder.eval()
    try:
        with atomic_path(path) as tmp:
            with torch.no_grad(), warnings.catch_warnings():
                # timm's static-size asserts are constants of the traced graph, as intended.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", DeprecationWarning)  # dynamo=False is deliberate
                torch.onnx.export(
                    encoder,
                    (example,),
                    str(tmp),
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    opset_version=opset,
                    do_constant_folding=True,
                    dynamo=False,
                )
            model = onnx.load(str(tmp))
            onnx.checker.check_model(model)
            model.metadata_props.add(key=CARD_KEY, value=card.to_json())
            model.metadata_props.add(key=PRECISION_KEY, value=precision_label)
            onnx.save(model, str(tmp))
    finally:
        encoder.train(was_training)
    return Path(path)
