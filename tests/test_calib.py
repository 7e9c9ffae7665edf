"""INT8 Q/DQ quantization, FP16 conversion, the calibration set and the fidelity report."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from _dataset_fixtures import write_sues200
from onnx import TensorProto, helper, numpy_helper

from geolink_edge.backends import OnnxEmbedder
from geolink_edge.calib.dataset import calibration_set, iter_batches
from geolink_edge.calib.fp16 import convert_fp16
from geolink_edge.calib.quantize import quantize_int8, quantized_linears, select_block_linears, zero_points
from geolink_edge.calib.report import (
    HeldOut,
    centred_cosine,
    cosine_between_images,
    fidelity_report,
    held_out_set,
    neighbour_agreement,
    top1_changes,
    view_centres,
)
from geolink_edge.card import MixVPRConfig
from geolink_edge.data.datasets import open_dataset
from geolink_edge.errors import GeolinkError

TINY_DEPTH = 12  # vit_tiny blocks; 4 Linears each (qkv, proj, fc1, fc2)


@pytest.fixture(scope="module")
def u1652(u1652_root):
    return open_dataset(u1652_root)


@pytest.fixture(scope="module")
def int8(tiny_onnx, u1652, tmp_path_factory):
    card = OnnxEmbedder(tiny_onnx).card
    chosen = calibration_set(u1652, 16)
    out = tmp_path_factory.mktemp("int8") / "encoder.int8.onnx"
    report = quantize_int8(tiny_onnx, out, iter_batches(chosen.paths, card, 8), method="minmax")
    return out, report


def _graph_with(nodes, inits):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=inits,
    )
    return helper.make_model(graph)


def test_selection_keeps_only_block_linears_with_a_weight():
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="/blocks/blocks.0/mlp/fc1/MatMul"),
        helper.make_node("MatMul", ["a", "a"], ["b"], name="/blocks/blocks.0/attn/MatMul"),  # act × act
        helper.make_node("Gemm", ["b", "w"], ["c"], name="/blocks/blocks.1/attn/proj/Gemm"),
        helper.make_node("MatMul", ["c", "w"], ["y"], name="/aggregator/channel_proj/MatMul"),
    ]
    chosen, excluded = select_block_linears(_graph_with(nodes, [w]))
    assert chosen == ["/blocks/blocks.0/mlp/fc1/MatMul", "/blocks/blocks.1/attn/proj/Gemm"]
    assert excluded == ["/blocks/blocks.0/attn/MatMul", "/aggregator/channel_proj/MatMul"]


def test_selection_finds_the_blocks_and_stages_of_other_backbones():
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    inside = [
        "/stages/stages.1/blocks/blocks.0/mlp/fc1/MatMul",  # ConvNeXt, Swin-like
        "/stages/stages.2/stages.2.1/transformer/transformer.0/mlp/fc1/MatMul",  # MobileViT
        "/layer3/layer3.1/fc/Gemm",  # ResNet-style
    ]
    outside = ["/aggregator/mixers/mixers.0/mix/mix.1/MatMul", "/head/fc/Gemm", "/stage_x/fc/MatMul"]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], [f"o{i}"], name=n) for i, n in enumerate(inside + outside)
    ]
    assert select_block_linears(_graph_with(nodes, [w])) == (inside, outside)


def _export_backbone(name: str, out_dir) -> str:
    from geolink_edge.export.onnx_export import export_onnx
    from geolink_edge.models import ImageEncoder, card_for_backbone

    card = card_for_backbone(name, (64, 64), MixVPRConfig(out_channels=8, out_rows=2))
    return export_onnx(ImageEncoder(card).eval(), out_dir / f"{name}.onnx")


def test_int8_of_a_convnet_quantizes_its_stages_or_refuses_one_made_of_convolutions(u1652, tmp_path):
    # MobileViT: convolution stages with transformer layers inside, under stages.N (no "blocks" scope)
    source = _export_backbone("mobilevit_xxs", tmp_path)
    card = OnnxEmbedder(source).card
    out = tmp_path / "int8.onnx"
    report = quantize_int8(
        source, out, iter_batches(calibration_set(u1652, 8).paths, card, 8), method="minmax"
    )
    names = report["quantized_nodes"]
    assert len(names) == 36 and all(n.startswith("/stages/stages.") and "/transformer/" in n for n in names)
    batch = next(iter_batches(held_out_set(u1652).paths, card, 8))
    cosine = np.sum(OnnxEmbedder(source).run(batch) * OnnxEmbedder(out).run(batch), axis=1)
    assert cosine.min() > 0.999
    resnet = _export_backbone("resnet18", tmp_path)
    with pytest.raises(
        GeolinkError, match="resnet18.onnx: no MatMul/Gemm with a weight in the backbone's blocks"
    ):
        quantize_int8(resnet, tmp_path / "resnet.int8.onnx", iter([]))
    assert not (tmp_path / "resnet.int8.onnx").exists()


def test_int8_quantizes_exactly_the_block_linears(int8, tiny_onnx):
    out, report = int8
    model = onnx.load(str(out))
    names = quantized_linears(model)
    assert len(names) == 4 * TINY_DEPTH == len(report["quantized_nodes"])
    assert all("/blocks/blocks." in n and n.rsplit("/", 2)[1] in ("qkv", "proj", "fc1", "fc2") for n in names)
    assert not any("aggregator" in n or n.endswith("attn/MatMul") or n.endswith("MatMul_1") for n in names)
    # one activation Q per quantized Linear; weights only go through DequantizeLinear
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["QuantizeLinear"] == 4 * TINY_DEPTH and ops["DequantizeLinear"] == 8 * TINY_DEPTH
    source_ops = Counter(n.op_type for n in onnx.load(str(tiny_onnx)).graph.node)
    # two per block, the final norm, one per MixVPR mixer (depth 2): each still a single op
    assert ops["LayerNormalization"] == source_ops["LayerNormalization"] == 2 * TINY_DEPTH + 1 + 2
    assert ops["ReduceMean"] == source_ops["ReduceMean"]  # no LayerNorm was decomposed
    assert ops["Conv"] == source_ops["Conv"] == 1  # patch embedding untouched


def test_int8_zero_points_are_zero_and_weights_per_channel(int8):
    model = onnx.load(str(int8[0]))
    points = zero_points(model)
    assert len(points) == 8 * TINY_DEPTH and all(np.all(v == 0) for v in points.values())
    assert all(v.dtype == np.int8 for v in points.values())
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qkv = next(n for n in model.graph.node if n.name == "/blocks/blocks.0/attn/qkv/MatMul")
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == qkv.input[1])
    assert inits[dq.input[0]].dtype == np.int8 and inits[dq.input[1]].shape == (
        3 * 192,
    )  # per output channel


def test_int8_runs_in_ort_close_to_fp32(int8, tiny_onnx, u1652):
    fp32, q = OnnxEmbedder(tiny_onnx), OnnxEmbedder(int8[0])
    assert q.precision == "int8" and q.card == fp32.card
    batch = next(iter_batches(held_out_set(u1652).paths, fp32.card, 8))
    cosine = np.sum(fp32.run(batch) * q.run(batch), axis=1)
    assert cosine.min() > 0.99


def test_calibration_set_spreads_over_locations_and_heights(tmp_path, u1652):
    chosen = calibration_set(u1652, 8)
    assert len(chosen.satellite) == 4 and len(chosen.drone) == 4
    assert len({p.parent.name for p in chosen.drone}) == 4  # four different locations
    assert chosen.warnings and "fewer than 300" in chosen.warnings[0]
    sues = open_dataset(write_sues200(tmp_path / "sues", per_height=2))
    picked = calibration_set(sues, 8)
    assert len(picked.satellite) == 2  # two training locations, one tile each
    heights = Counter((p.parent.parent.name, p.parent.name) for p in picked.drone)
    assert len(picked.drone) == 6 and len(heights) == 6  # 3 heights per location, none repeated


def test_calibration_set_rejects_bad_count(u1652):
    with pytest.raises(GeolinkError, match="--calib-images must be >= 1"):
        calibration_set(u1652, 0)


def test_fp16_keeps_io_and_normalisation_fp32(tiny_onnx, tmp_path, u1652):
    out = tmp_path / "encoder.fp16.onnx"
    kept = convert_fp16(tiny_onnx, out)["kept_fp32_nodes"]
    assert kept[0].endswith("ReduceL2")
    embedder = OnnxEmbedder(out)
    assert embedder.precision == "fp16"
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert sum(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer) > 50
    batch = next(iter_batches(held_out_set(u1652).paths, embedder.card, 8))
    cosine = np.sum(OnnxEmbedder(tiny_onnx).run(batch) * embedder.run(batch), axis=1)
    assert cosine.min() > 0.999


def test_centred_cosine_neighbour_agreement_and_shared_component_by_hand():
    centre = np.array([[1.0, 0.0, 0.0]])
    ref = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    cand = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0]])
    # centred: (0,1,0)·(0,1,1) = 1/√2; (0,0,1)·(0,0,−1) = −1, although the raw cosines are ≥ 0
    assert np.allclose(centred_cosine(cand, ref, centre), [1 / np.sqrt(2), -1.0])
    gallery = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    ref_desc = np.vstack([[1.0, 0.0], gallery])  # query scores 1, 0.8, 0: top-2 {g0, g1}
    cand_desc = np.vstack([[0.6, 0.8], gallery])  # query scores 0.6, 0.96, 0.8: top-2 {g1, g2}
    assert neighbour_agreement(ref_desc, ref_desc, n_queries=1, k=2) == 1.0
    assert neighbour_agreement(cand_desc, ref_desc, n_queries=1, k=1) == 0.0
    assert neighbour_agreement(cand_desc, ref_desc, n_queries=1, k=2) == 0.5
    assert neighbour_agreement(cand_desc, ref_desc, n_queries=1, k=3) == 1.0
    rows = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])  # pairwise cosines 0.6, 0, 0.8
    assert np.isclose(cosine_between_images(rows), (0.6 + 0.0 + 0.8) / 3)


def test_drone_and_satellite_rows_are_centred_on_their_own_fp32_mean():
    # drone descriptors share one common component, tiles another: one centre for both would leave
    # each view's own component in, the cosine flattered
    reference = np.array([[1.0, 0.1, 0.0], [1.0, -0.1, 0.0], [0.0, 0.1, 1.0], [0.0, -0.1, 1.0]])
    centres = view_centres(reference, n_queries=2)
    assert np.allclose(centres[:2], [1.0, 0.0, 0.0]) and np.allclose(centres[2:], [0.0, 0.0, 1.0])
    candidate = reference + np.array([[0.0, 0.0, 0.1]] * 2 + [[0.1, 0.0, 0.0]] * 2)
    # per view the shifts are along the other view's direction: 1/√2 once centred, ≈0.995 raw
    assert np.allclose(centred_cosine(candidate, reference, centres), 0.1 / np.sqrt(0.02))
    gallery_centred = centred_cosine(candidate, reference, reference[2:].mean(axis=0))
    assert gallery_centred[0] > 0.99  # centring the queries on the gallery's mean hides it


def test_top1_agreement_and_the_queries_whose_hit_flips_by_hand(tmp_path):
    held = HeldOut(
        [tmp_path / f"q{i}.jpg" for i in range(4)],
        ["a", "b", "a", "b"],
        [tmp_path / "ga", tmp_path / "gb"],
        ["a", "b"],
    )
    gallery = np.array([[1.0, 0.0], [0.0, 1.0]])
    # FP32: queries 0, 1 right, 2, 3 wrong; candidate: 0 right, 1 wrong (lost), 2 right (gained), 3 wrong
    ref = np.vstack([[[0.9, 0.1], [0.1, 0.9], [0.2, 0.8], [0.8, 0.2]], gallery])
    cand = np.vstack([[[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.8, 0.2]], gallery])
    changes = top1_changes(cand, ref, held)
    assert changes == {"top1_agreement": 0.5, "r1_lost": ["b/q1.jpg"], "r1_gained": ["a/q2.jpg"]}


def test_fidelity_of_a_model_with_itself_is_exact(tiny_onnx, u1652):
    held = held_out_set(u1652)
    report = fidelity_report(tiny_onnx, {"int8": tiny_onnx}, held, max_r1_drop=0.0)
    row = report["models"]["int8"]
    assert row["R@1_drop"] == 0.0 and row["AP_drop"] == 0.0 and row["cosine_min"] > 0.99999
    assert row["centred_cosine_min"] > 0.9999 and row["top5_agreement"] == 1.0
    assert row["top1_agreement"] == 1.0 and row["r1_lost"] == row["r1_gained"] == []
    assert row["centred_cosine_p1"] > 0.9999 and report["min_centred_cosine_p1"] == 0.95
    assert report["passed"] and report["held_out"]["queries"] == 9 and report["held_out"]["gallery"] == 4
    assert 0 < report["models"]["fp32"]["cosine_between_images"] < 1


def test_fidelity_fails_when_drop_exceeds_limit(tiny_onnx, u1652):
    held = held_out_set(u1652)
    report = fidelity_report(tiny_onnx, {"int8": tiny_onnx}, held, max_r1_drop=-0.5)
    assert not report["passed"] and report["failures"] == [
        "INT8 R@1 drop 0.00 points exceeds --max-r1-drop -0.5"
    ]
    # an FP16 candidate never gates the export, only INT8 does
    assert fidelity_report(tiny_onnx, {"fp16": tiny_onnx}, held, max_r1_drop=-0.5)["passed"]
    with pytest.raises(GeolinkError, match="--fidelity-queries"):
        held_out_set(u1652, 0)


def test_centred_cosine_is_stricter_than_raw_and_gates(int8, tiny_onnx, u1652):
    held = held_out_set(u1652)
    report = fidelity_report(
        tiny_onnx, {"int8": int8[0]}, held, max_r1_drop=100.0, min_centred_cosine=0.99999
    )
    row = report["models"]["int8"]
    assert row["centred_cosine_mean"] < row["cosine_mean"] and row["centred_cosine_min"] < row["cosine_min"]
    assert not report["passed"] and report["failures"][0].startswith("INT8 centred cosine 0.")
    assert "below --min-centred-cosine 0.99999" in report["failures"][0]
    assert row["centred_cosine_min"] <= row["centred_cosine_p1"] <= row["centred_cosine_mean"]
    # the low percentile gates on its own, the mean passing
    low = fidelity_report(
        tiny_onnx,
        {"int8": int8[0]},
        held,
        max_r1_drop=100.0,
        min_centred_cosine=-1.0,
        min_centred_cosine_low=row["centred_cosine_p1"] + 1e-6,
    )
    assert low["failures"] == [
        f"INT8 centred cosine's 1st percentile {row['centred_cosine_p1']:.4f} is below "
        f"{row['centred_cosine_p1'] + 1e-6:g}"
    ]


def test_calibrator_sees_the_images_a_chunk_at_a_time():
    """ORT keeps every watched tensor of a pass in memory: a pass must cover CALIB_CHUNK images only."""
    from geolink_edge.calib.quantize import CALIB_CHUNK, _reader

    images = np.arange(9 * 3, dtype=np.float32).reshape(9, 3, 1, 1)
    reader = _reader(images, "image")
    assert len(reader) == -(-9 // CALIB_CHUNK)
    seen = []
    for start in range(len(reader)):
        reader.set_range(start, start + 1)
        while (feed := reader.get_next()) is not None:
            seen.append(feed["image"])
    assert [len(c) for c in seen] == [CALIB_CHUNK] * (9 // CALIB_CHUNK) + [9 % CALIB_CHUNK]
    np.testing.assert_array_equal(np.concatenate(seen), images)
