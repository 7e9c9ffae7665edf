"""FP16 ONNX of the encoder: on some GPUs an INT8 ViT is no faster than FP16, so both are offered.

Inputs and outputs stay float32 (every backend feeds the same preprocessed batch); the final L2
normalisation stays float32 too, because a sum of squares of a 4096-d descriptor can overflow FP16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geolink_edge.atomic import atomic_path
from geolink_edge.calib.quantize import copy_metadata
from geolink_edge.errors import require

NORMALISATION_OPS = ("ReduceL2",)


def normalisation_tail(model) -> list[str]:
    """Names of the last L2-norm node and every node after it (graph order is topological)."""
    nodes = list(model.graph.node)
    starts = [i for i, node in enumerate(nodes) if node.op_type in NORMALISATION_OPS]
    return [node.name for node in nodes[starts[-1] :]] if starts else []


def _drop_repeated_casts(model) -> None:
    """Remove repeated identical nodes: the converter adds one Cast per blocked consumer of a tensor,
    all with the same name and output, which makes the graph invalid when two consumers are blocked."""
    seen, unique = set(), []
    for node in model.graph.node:
        key = (node.name, node.op_type, tuple(node.input), tuple(node.output))
        if key not in seen:
            seen.add(key)
            unique.append(node)
    del model.graph.node[:]
    model.graph.node.extend(unique)


def convert_fp16(fp32_onnx: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the FP16 model of ``fp32_onnx`` to ``out``; return what was kept in FP32."""
    onnx = require("onnx", "pip install 'geolink-edge[export]'")
    float16 = require("onnxruntime.transformers.float16", "pip install 'geolink-edge[export]'")
    source = onnx.load(str(fp32_onnx))
    kept = normalisation_tail(source)
    model = float16.convert_float_to_float16(
        source,
        keep_io_types=True,
        node_block_list=kept,
        op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *NORMALISATION_OPS],
    )
    _drop_repeated_casts(model)
    copy_metadata(source, model, "fp16")
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
    return {"kept_fp32_nodes": kept}
