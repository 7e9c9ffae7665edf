"""The INT8-attention option of the Q/DQ quantizer: which nodes, a valid symmetric model, close to FP32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from geolink_edge.calib.dataset import calibration_set, iter_batches
from geolink_edge.calib.quantize import quantize_int8, select_attention_products, zero_points
from geolink_edge.calib.report import centred_cosine, held_out_set
from geolink_edge.data.datasets import open_dataset
from geolink_edge.errors import GeolinkError
from geolink_edge.runtime.backends import OnnxEmbedder

TINY_DEPTH = 12  # vit_tiny blocks: QKᵀ and AV in each


@pytest.fixture(scope="module")
def u1652(u1652_root):
    return open_dataset(u1652_root)


@pytest.fixture(scope="module")
def int8_attention(tiny_onnx, u1652, tmp_path_factory):
    card = OnnxEmbedder(tiny_onnx).card
    out = tmp_path_factory.mktemp("int8att") / "encoder.int8.onnx"
    batches = iter_batches(calibration_set(u1652, 16).paths, card, 8)
    return out, quantize_int8(tiny_onnx, out, batches, method="minmax", attention=True)


def test_attention_products_are_the_activation_matmuls_of_the_blocks():
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="/blocks/blocks.0/attn/qkv/MatMul"),
        helper.make_node("MatMul", ["a", "a"], ["b"], name="/blocks/blocks.0/attn/MatMul"),
        helper.make_node("MatMul", ["b", "a"], ["c"], name="/blocks/blocks.0/attn/MatMul_1"),
        helper.make_node("MatMul", ["c", "c"], ["y"], name="/aggregator/mix/MatMul"),  # outside the blocks
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
        initializer=[w],
    )
    names = select_attention_products(helper.make_model(graph))
    assert names == ["/blocks/blocks.0/attn/MatMul", "/blocks/blocks.0/attn/MatMul_1"]


def test_int8_attention_quantizes_both_inputs_of_qk_and_av(int8_attention):
    out, report = int8_attention
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    produced_by = {o: n for n in model.graph.node for o in n.output}
    products = [n for n in model.graph.node if n.name.endswith(("attn/MatMul", "attn/MatMul_1"))]
    assert len(products) == 2 * TINY_DEPTH
    for node in products:
        assert [produced_by[i].op_type for i in node.input] == ["DequantizeLinear"] * 2, node.name
    assert report["attention"] == "int8 (QKᵀ and AV)"
    assert len(report["quantized_nodes"]) == 6 * TINY_DEPTH  # qkv, proj, fc1, fc2 + the two products
    assert not any(name.endswith("attn/MatMul") for name in report["excluded_nodes"])
    points = zero_points(model)
    assert points and all(np.all(v == 0) and v.dtype == np.int8 for v in points.values())


def test_int8_attention_stays_close_to_fp32_in_ort(int8_attention, tiny_onnx, u1652):
    fp32, q = OnnxEmbedder(tiny_onnx), OnnxEmbedder(int8_attention[0])
    assert q.precision == "int8"
    held = held_out_set(u1652)
    images = np.concatenate(list(iter_batches(held.paths, fp32.card, 8)))
    ref, desc = fp32.run(images), q.run(images)
    assert np.sum(ref * desc, axis=1).min() > 0.99
    centre = ref[len(held.query_paths) :].mean(axis=0)
    assert centred_cosine(desc, ref, centre).mean() > 0.9


def test_int8_attention_refuses_modelopt(tiny_onnx, tmp_path):
    images = [np.zeros((1, 3, 112, 112), np.float32)]
    with pytest.raises(GeolinkError, match="INT8 attention is made with --quantizer ort only"):
        quantize_int8(tiny_onnx, tmp_path / "x.onnx", images, attention=True, quantizer="modelopt")
