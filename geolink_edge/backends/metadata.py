"""The string metadata geolink-edge records in an exported ONNX (``metadata_props``).

An engine built from that ONNX copies these entries into its JSON sidecar, so every backend
exposes the same ``metadata`` mapping.
"""

from __future__ import annotations

from pathlib import Path

from geolink_edge.errors import GeolinkError, first_line, require

CARD_KEY = "geolink_model_card"  # the encoder's model card (JSON)
PRECISION_KEY = "geolink_precision"  # fp32, fp16, int8
LOCAL_FEATURES_KEY = "geolink_local_features"  # what a learned extractor or matcher is (JSON)

ONNX_HINT = "pip install onnx (it reads and writes the metadata of an ONNX model)"


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, without loading its weights."""
    onnx = require("onnx", ONNX_HINT)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own decode errors
        raise GeolinkError(f"{path}: not an ONNX model ({first_line(exc, 120)})") from None
    return {p.key: p.value for p in model.metadata_props}


def write_onnx_metadata(path: str | Path, entries: dict[str, str]) -> None:
    """Add or replace ``entries`` in the ``metadata_props`` of an ONNX file, in place."""
    onnx = require("onnx", ONNX_HINT)
    model = onnx.load(str(path))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    for key, value in [*kept, *entries.items()]:
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
