"""Explicit INT8 quantization (Q/DQ) of the encoder ONNX, made on the desktop and built on the target.

By default only the Linear layers inside the backbone's blocks or stages are quantized (their
MatMul/Gemm with a constant weight); a backbone made only of convolutions (ResNet) is refused. The
attention products (QKᵀ and softmax·V), LayerNorm, Softmax, GELU, residual Adds, the patch
embedding, MixVPR and the normalisation stay in floating point: quantizing all of those collapses a
ViT's accuracy. ``attention=True`` also quantizes the two
attention products (both inputs, per tensor), an option for CPUs and GPUs where they are a large
share of the time; the fidelity report decides whether a model made so may ship. Scales are
symmetric (every zero point 0) because TensorRT accepts nothing else, and weights are quantized
per output channel.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geolink_edge.atomic import atomic_path
from geolink_edge.backends.metadata import CARD_KEY, PRECISION_KEY
from geolink_edge.errors import GeolinkError, require
from geolink_edge.registry import check_name, choose

METHODS = ("entropy", "percentile", "minmax")
LINEAR_OPS = ("MatMul", "Gemm")
# Node names of a traced encoder carry each layer's module path: "/blocks/blocks.3/mlp/fc1/MatMul" (ViT),
# "/stages/stages.1/blocks/blocks.0/mlp/fc1/MatMul" (ConvNeXt), "/layer2/layer2.0/conv1/Conv" (ResNet).
# A block or stage is item N of one of the backbone's numbered containers; MixVPR's items are not.
BLOCK_SCOPE = re.compile(r"^/(?!aggregator/)([^/]+)/\1\.\d+/")
_ORT_HINT = "pip install 'geolink-edge[export]'"


def constant_names(model) -> set[str]:
    """Names of the graph's initializers and Constant-node outputs (the weights)."""
    names = {init.name for init in model.graph.initializer}
    names.update(out for node in model.graph.node if node.op_type == "Constant" for out in node.output)
    return names


def select_block_linears(model) -> tuple[list[str], list[str]]:
    """Split the graph's MatMul/Gemm nodes into (block Linears, everything else).

    A block Linear sits in a block or stage of the backbone (see ``BLOCK_SCOPE``) and multiplies by
    a constant weight; the attention matmuls (activation × activation), the stem's and MixVPR's
    MatMul/Gemm fall in the second list.
    """
    constants = constant_names(model)
    chosen, excluded = [], []
    for node in model.graph.node:
        if node.op_type not in LINEAR_OPS:
            continue
        has_weight = any(name in constants for name in node.input[1:2])
        (chosen if has_weight and BLOCK_SCOPE.search(node.name) else excluded).append(node.name)
    return chosen, excluded


def select_attention_products(model) -> list[str]:
    """The MatMuls inside the backbone's blocks whose two inputs are both activations: QKᵀ and AV."""
    constants = constant_names(model)
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul"
        and BLOCK_SCOPE.search(node.name)
        and not any(name in constants for name in node.input[:2])
    ]


def copy_metadata(source, target, precision: str) -> None:
    """Give ``target`` the model card of ``source`` and record its own precision."""
    meta = {p.key: p.value for p in source.metadata_props}
    if CARD_KEY not in meta:
        raise GeolinkError("the source ONNX has no geolink model card (export it with geolink-edge export)")
    meta[PRECISION_KEY] = precision
    del target.metadata_props[:]
    for key, value in meta.items():
        entry = target.metadata_props.add()
        entry.key, entry.value = key, value


# Images per calibrator pass. ORT's calibrators keep every output of the MatMuls they watch,
# attention maps included (~1.2 GB per image for a ViT-B at 448 px), until the pass ends.
CALIB_CHUNK = 4


def _reader(images: np.ndarray, input_name: str):
    """A calibration reader over ``images`` cut into chunks of ``CALIB_CHUNK``, which quantize_static
    walks one chunk per pass (its strided mode), merging the ranges as it goes."""
    quantization = require("onnxruntime.quantization", _ORT_HINT)
    chunks = [images[i : i + CALIB_CHUNK] for i in range(0, len(images), CALIB_CHUNK)]

    class _ChunkReader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self._pending: Iterator[np.ndarray] = iter(())

        def __len__(self) -> int:
            return len(chunks)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._pending = iter(chunks[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self._pending, None)
            return None if chunk is None else {input_name: np.ascontiguousarray(chunk)}

    return _ChunkReader()


@dataclass(frozen=True)
class Calibration:
    """What a quantizer is asked: the nodes to put in INT8 (the others named to leave out), the
    calibration images for the model's input, the calibration method, INT8 attention or not."""

    images: np.ndarray
    input_name: str
    nodes: list[str]
    excluded: list[str]
    method: str
    attention: bool


def _quantize_ort(prepared: Path, out: Path, job: Calibration) -> None:
    """ONNX Runtime's static Q/DQ quantization of ``nodes`` (the others are left out by name)."""
    q = require("onnxruntime.quantization", _ORT_HINT)
    calibration = {
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
        "minmax": q.CalibrationMethod.MinMax,
    }[job.method]
    with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print their progress
        q.quantize_static(
            str(prepared),
            str(out),
            _reader(job.images, job.input_name),
            quant_format=q.QuantFormat.QDQ,
            activation_type=q.QuantType.QInt8,  # QUInt8 would put the symmetric zero point at 128
            weight_type=q.QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=list(LINEAR_OPS),
            nodes_to_quantize=job.nodes,
            calibrate_method=calibration,
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "CalibTensorRangeSymmetric": True,
                "CalibStridedMinMax": 1,  # one chunk per pass, for every method despite the name
                # the attention products multiply two activations; without them every quantized
                # MatMul has a constant weight
                "MatMulConstBOnly": not job.attention,
                # Q/DQ on the inputs only: the product and its bias Add stay in floating point.
                "OpTypesToExcludeOutputQuantization": list(LINEAR_OPS),
                "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},  # (K, N) weight: one scale per output
            },
        )


def _quantize_modelopt(prepared: Path, out: Path, job: Calibration) -> None:
    """NVIDIA ModelOpt's ONNX PTQ, when installed: same node selection, its own calibrator (no INT8
    attention products: ``attention`` is refused before)."""
    mo = require("modelopt.onnx.quantization", "pip install nvidia-modelopt (optional INT8 path)")
    if job.method == "percentile":
        raise GeolinkError("--quantizer modelopt supports --calib-method entropy or minmax, not percentile")
    mo.quantize(
        onnx_path=str(prepared),
        quantize_mode="int8",
        calibration_data={job.input_name: job.images},
        calibration_method="entropy" if job.method == "entropy" else "max",
        op_types_to_quantize=list(LINEAR_OPS),
        nodes_to_quantize=job.nodes,
        nodes_to_exclude=job.excluded,
        output_path=str(out),
        high_precision_dtype="fp32",  # the rest stays FP32 as in the ONNX Runtime path; --fp16 is separate
        use_zero_point=False,  # symmetric, as TensorRT requires
    )


# quantizer name → the function that writes the Q/DQ model
QUANTIZERS = {"ort": _quantize_ort, "modelopt": _quantize_modelopt}


def zero_points(model) -> dict[str, np.ndarray]:
    """Zero-point initializers of every Q/DQ node, by name (all must be 0 for TensorRT)."""
    numpy_helper = require("onnx.numpy_helper", _ORT_HINT)
    inits = {init.name: init for init in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            found[node.input[2]] = numpy_helper.to_array(inits[node.input[2]])
    return found


def quantized_linears(model) -> list[str]:
    """MatMul/Gemm nodes fed by a DequantizeLinear: the ones that run in INT8 on TensorRT."""
    from_dq = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [
        n.name for n in model.graph.node if n.op_type in LINEAR_OPS and any(i in from_dq for i in n.input)
    ]


def _infer_shapes(shape_inference, source: Path, prepared: Path) -> str:
    """Shape-inference pre-processing so the quantizer knows every tensor's type; returns what ran.

    No graph rewrites (they would rename nodes and could split LayerNorm). ORT's symbolic pass
    rejects some Reshape patterns; ONNX's own inference alone is then enough for MatMul/Gemm inputs.
    """
    try:
        shape_inference.quant_pre_process(str(source), str(prepared), skip_optimization=True)
        return "symbolic+onnx"
    except Exception:  # the symbolic pass raises bare assertions on shapes it cannot follow
        shape_inference.quant_pre_process(
            str(source), str(prepared), skip_optimization=True, skip_symbolic_shape=True
        )
        return "onnx"


def quantize_int8(
    fp32_onnx: str | Path,
    out: str | Path,
    batches: Iterable[np.ndarray],
    method: str = "entropy",
    quantizer: str = "ort",
    attention: bool = False,
) -> dict[str, Any]:
    """Write the Q/DQ INT8 model of ``fp32_onnx`` to ``out``; return the calibration report's core.

    ``batches`` yields preprocessed float32 (N, 3, H, W) calibration batches. ``attention`` also
    quantizes the attention products QKᵀ and AV (default: they stay FP32).
    """
    onnx = require("onnx", _ORT_HINT)
    check_name("calibration method", method, METHODS)
    quantize = choose("quantizer", quantizer, QUANTIZERS)
    fp32_onnx, out = Path(fp32_onnx), Path(out)
    source = onnx.load(str(fp32_onnx))
    nodes, excluded = select_block_linears(source)
    if not nodes:
        raise GeolinkError(
            f"{fp32_onnx}: no MatMul/Gemm with a weight in the backbone's blocks or stages to quantize "
            "(convolutions stay in floating point: use --fp16 for a ConvNet)"
        )
    if attention:
        products = select_attention_products(source)
        if not products:
            raise GeolinkError(f"{fp32_onnx}: no attention MatMul in the backbone's blocks to quantize")
        if quantizer != "ort":
            raise GeolinkError("INT8 attention is made with --quantizer ort only")
        nodes += products
        excluded = [name for name in excluded if name not in products]
    parts = list(batches)
    if not parts:
        raise GeolinkError("no calibration images were given")
    images = np.concatenate(parts, axis=0).astype(np.float32)
    job = Calibration(images, source.graph.input[0].name, nodes, excluded, method, attention)

    shape_inference = require("onnxruntime.quantization.shape_inference", _ORT_HINT)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="geolink-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        shapes = _infer_shapes(shape_inference, fp32_onnx, prepared)
        raw = Path(tmp) / "int8.onnx"
        quantize(prepared, raw, job)
        model = onnx.load(str(raw))
    copy_metadata(source, model, "int8")
    bad = {name: value for name, value in zero_points(model).items() if np.any(value != 0)}
    if bad:
        raise GeolinkError(
            f"quantizer produced non-zero zero points ({next(iter(bad))}); TensorRT needs symmetric"
        )
    with atomic_path(out) as tmp_out:
        onnx.save(model, str(tmp_out))
    return {
        "quantizer": quantizer,
        "method": method,
        "images": len(images),
        "shape_inference": shapes,
        "calibration_s": round(time.perf_counter() - start, 2),
        "quantized_nodes": quantized_linears(model),
        "excluded_nodes": excluded,
        "tensors_quantized": sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear"),
        "weights_quantized": sum(1 for n in model.graph.node if n.op_type == "DequantizeLinear")
        - sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear"),
        "activation": "int8 symmetric per-tensor",
        "attention": "int8 (QKᵀ and AV)" if attention else "fp32",
        "weights": "int8 symmetric per-channel",
    }
