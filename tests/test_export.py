"""``geolink-edge export``: checkpoint → ONNX + INT8 Q/DQ + reports; ONNX in without torch; clean failures."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from geolink_edge.backends import OnnxEmbedder
from geolink_edge.calib.quantize import zero_points


@pytest.fixture(scope="module")
def dataset(u1652_root):
    return u1652_root


@pytest.fixture(scope="module")
def exported(cli, tiny_checkpoint, dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "models"
    result = cli(
        "export",
        str(tiny_checkpoint),
        "--out",
        str(out),
        "--int8",
        "--calib-data",
        str(dataset),
        "--calib-images",
        "20",
        "--fp16",
    )
    assert result.returncode == 0, result.stderr
    return out, result


def test_export_writes_every_artifact(exported):
    out, result = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "calibration.json",
        "encoder.fp16.onnx",
        "encoder.int8.onnx",
        "encoder.onnx",
        "export.json",
        "fidelity.json",
        "parity.json",
    ]
    assert "fidelity vs FP32" in result.stderr and "int8" in result.stderr  # the printed table
    summary = json.loads((out / "export.json").read_text())
    card = OnnxEmbedder(out / "encoder.onnx").card
    assert summary["model_hash"] == card.weights_hash and summary["files"]["int8"] == "encoder.int8.onnx"


def test_exported_onnx_is_checked_static_and_matches_torch(exported):
    out, _ = exported
    model = onnx.load(str(out / "encoder.onnx"))
    onnx.checker.check_model(model)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 112, 112]
    assert model.opset_import[0].version >= 17
    parity = json.loads((out / "parity.json").read_text())
    assert (
        parity["cosine_min"] >= 0.9999
        and parity["max_abs_diff"] < 1e-3
        and "dataset images" in parity["images"]
    )


def test_int8_model_runs_with_zero_points_zero_and_reports(exported):
    out, _ = exported
    int8 = OnnxEmbedder(out / "encoder.int8.onnx")
    desc = int8.embed([np.full((60, 80, 3), 120, np.uint8)])
    assert desc.shape == (1, 256) and abs(float(np.linalg.norm(desc)) - 1.0) < 1e-5
    points = zero_points(onnx.load(str(out / "encoder.int8.onnx")))
    assert points and all(np.all(v == 0) for v in points.values())
    calib = json.loads((out / "calibration.json").read_text())
    # the default entropy calibrator, fed 16 + 4 images: re-cut into equal batches, none lost
    assert calib["method"] == "entropy" and calib["images"] == 20 and len(calib["quantized_nodes"]) == 48
    # half tiles asked, but the 6 training locations have one tile each: drone frames fill the rest
    assert calib["calibration_set"]["satellite"] == 6 and calib["calibration_set"]["drone"] == 14
    fidelity = json.loads((out / "fidelity.json").read_text())
    row = fidelity["models"]["int8"]
    assert row["cosine_min"] > 0.99 and row["R@1_drop"] == fidelity["models"]["fp32"]["R@1"] - row["R@1"]
    assert 0 < row["top5_agreement"] <= 1 and row["centred_cosine_mean"] <= row["cosine_mean"]
    gates = row["R@1_drop"] <= 1.0 and row["centred_cosine_mean"] >= 0.99 and row["centred_cosine_p1"] >= 0.95
    assert fidelity["passed"] == gates and fidelity["min_centred_cosine"] == 0.99
    assert set(fidelity["models"]) == {
        "fp32",
        "int8",
        "fp16",
    }


def test_onnx_input_needs_no_torch(cli, tiny_onnx, tmp_path):
    out = tmp_path / "fp16"
    result = cli("export", str(tiny_onnx), "--out", str(out), "--fp16", block_torch=True)
    assert result.returncode == 0, result.stderr
    assert OnnxEmbedder(out / "encoder.fp16.onnx").precision == "fp16"
    assert json.loads((out / "export.json").read_text())["files"]["fp32"] == str(tiny_onnx)


def test_engine_without_tensorrt_fails_in_one_line_and_writes_nothing(cli, tiny_onnx, tmp_path):
    pytest.importorskip("onnx")
    if subprocess.run([sys.executable, "-c", "import tensorrt"], capture_output=True).returncode == 0:
        pytest.skip("TensorRT is installed here")
    out = tmp_path / "engine"
    result = cli("export", str(tiny_onnx), "--out", str(out), "--engine", block_torch=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "build the engine on the target, where JetPack provides TensorRT" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--int8"], "--int8 needs --calib-data"),
        (["--int8", "--calib-data", "D", "--calib-images", "-5"], "--calib-images must be in"),
        (["--fp16", "--max-r1-drop", "-1"], "--max-r1-drop must be in"),
        (["--fp16", "--min-centred-cosine", "1.5"], "--min-centred-cosine must be in"),
        (["--fp16", "--fidelity-queries", "0"], "--fidelity-queries must be >= 1"),
        (["--fp16", "--workspace", "0"], "--workspace must be in"),
        (["--int8", "--calib-data", "D", "--calib-method", "magic"], "--calib-method must be one of"),
        ([], "already an ONNX"),
    ],
)
def test_bad_options_exit_2_in_one_line(cli, tiny_onnx, tmp_path, args, message):
    result = cli("export", str(tiny_onnx), "--out", str(tmp_path / "o"), *args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, (
        result.stderr
    )
    assert not (tmp_path / "o").exists()


def test_bad_source_and_existing_folder(cli, tiny_onnx, tmp_path):
    (tmp_path / "m.txt").write_text("x")
    result = cli("export", str(tmp_path / "m.txt"), "--out", str(tmp_path / "o"), "--fp16")
    assert result.returncode == 2 and "expected a checkpoint (.pt) or an encoder ONNX" in result.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("x")
    result = cli("export", str(tiny_onnx), "--out", str(tmp_path / "full"), "--fp16")
    assert result.returncode == 2 and "use --force" in result.stderr
