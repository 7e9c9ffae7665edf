"""TensorRT engine: sidecar, compatibility, profile shapes, timing cache; build and run where TensorRT is."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from geolink_edge.backends import load_embedder
from geolink_edge.card import ModelCard
from geolink_edge.errors import GeolinkError, MissingDependency
from geolink_edge.export.engine import EngineConf, keypoint_profile, profile_shapes, read_timing_cache
from geolink_edge.export.sidecar import (
    check_compatible,
    make_sidecar,
    read_sidecar,
    sha256_file,
    sidecar_path,
    write_sidecar,
)

HAS_TENSORRT = (
    importlib.util.find_spec("tensorrt") is not None and importlib.util.find_spec("pycuda") is not None
)
CARD = ModelCard(
    backbone="vit_tiny_patch16_224",
    image_size=(112, 112),
    feature_dim=192,
    feature_size=(7, 7),
    weights_hash="ab" * 32,
)


def _sidecar(**over):
    fields = dict(
        tensorrt_version="10.3.0",
        gpu_name="Orin",
        compute_capability="8.7",
        source_onnx_sha256="cd" * 32,
        precision="int8",
        inputs=[{"name": "images", "shape": [-1, 3, 112, 112], "dtype": "float"}],
        outputs=[{"name": "descriptors", "shape": [-1, 256], "dtype": "float"}],
        profile={"min": 1, "opt": 1, "max": 8},
        model_card=CARD,
    )
    fields.update(over)
    return make_sidecar(**fields)


def test_sidecar_round_trip(tmp_path):
    engine = tmp_path / "encoder.int8.engine"
    path = write_sidecar(engine, _sidecar(build_s=12.5))
    assert path == sidecar_path(engine) and path.name == "encoder.int8.engine.json"
    again = read_sidecar(engine)
    assert again["profile"] == {"min": 1, "opt": 1, "max": 8} and again["build_s"] == 12.5
    assert ModelCard.from_dict(again["model_card"]) == CARD


def test_sidecar_missing_field_or_not_json_is_one_line(tmp_path):
    engine = tmp_path / "e.engine"
    data = _sidecar()
    del data["gpu_name"]
    write_sidecar(engine, data)
    with pytest.raises(GeolinkError, match="lacks gpu_name"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(GeolinkError, match="not JSON"):
        read_sidecar(engine)
    sidecar_path(engine).unlink()
    with pytest.raises(GeolinkError, match="sidecar not found"):
        read_sidecar(engine)


def test_compatibility_names_both_versions_and_gpus():
    sidecar = _sidecar()
    check_compatible(sidecar, "10.3.0", "Orin", "8.7")
    with pytest.raises(GeolinkError, match=r"TensorRT 10\.3\.0 .* TensorRT 10\.16\.1"):
        check_compatible(sidecar, "10.16.1", "Orin", "8.7")
    with pytest.raises(GeolinkError, match=r"Orin \(sm 8\.7\) .* NVIDIA H100 \(sm 9\.0\)"):
        check_compatible(sidecar, "10.3.0", "NVIDIA H100", "9.0")


def test_profile_shapes_for_dynamic_batch():
    conf = EngineConf(min_batch=1, opt_batch=2, max_batch=8)
    assert profile_shapes((-1, 3, 112, 112), conf) == ((1, 3, 112, 112), (2, 3, 112, 112), (8, 3, 112, 112))
    with pytest.raises(GeolinkError, match="static C×H×W"):
        profile_shapes((-1, 3, -1, -1), conf)
    with pytest.raises(GeolinkError, match="fixed batch of 1"):
        profile_shapes((1, 3, 112, 112), conf)
    assert profile_shapes((4, 3, 8, 8), EngineConf(min_batch=4, opt_batch=4, max_batch=4))[2] == (4, 3, 8, 8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"workspace_gb": 0}, "--workspace"),
        ({"workspace_gb": -1}, "--workspace"),
        ({"min_batch": 2, "opt_batch": 1}, "batch profile"),
        ({"max_batch": 0}, "batch profile"),
    ],
)
def test_engine_conf_rejects_absurd_values(kwargs, message):
    with pytest.raises(GeolinkError, match=message):
        EngineConf(**kwargs)


def test_timing_cache_file_handling(tmp_path):
    cache = tmp_path / "trt.cache"
    assert read_timing_cache(None) == b"" and read_timing_cache(cache) == b""
    cache.write_bytes(b"\x01\x02cache")
    assert read_timing_cache(cache) == b"\x01\x02cache"
    with pytest.raises(GeolinkError, match="not a file"):
        read_timing_cache(tmp_path)


def test_sha256_matches_hashlib(tmp_path):
    import hashlib

    data = np.random.default_rng(0).bytes(3_000_000)  # spans several read chunks
    (tmp_path / "m.onnx").write_bytes(data)
    assert sha256_file(tmp_path / "m.onnx") == hashlib.sha256(data).hexdigest()


@pytest.mark.skipif(HAS_TENSORRT, reason="checks the message shown where TensorRT is absent")
def test_engine_without_tensorrt_names_what_is_missing(tmp_path):
    engine = tmp_path / "encoder.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(GeolinkError, match="sidecar not found"):
        load_embedder(engine)
    write_sidecar(engine, _sidecar())
    with pytest.raises(MissingDependency, match="tensorrt is not available.*JetPack"):
        load_embedder(engine)


def test_tensorrt_backend_imports_without_tensorrt_pycuda_torch():
    code = (
        "import sys\n"
        "for m in ('torch', 'timm', 'tensorrt', 'pycuda', 'pycuda.driver', 'onnx'): sys.modules[m] = None\n"
        "import geolink_edge.backends.tensorrt_engine, geolink_edge.export.engine\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.skipif(not HAS_TENSORRT, reason="TensorRT and pycuda are only on the target")
def test_build_and_run_engine_matches_onnxruntime(tiny_onnx, tmp_path):
    from geolink_edge.backends import OnnxEmbedder, TensorRTEmbedder
    from geolink_edge.export.engine import build_engine

    cache = tmp_path / "timing.cache"
    engine = build_engine(tiny_onnx, tmp_path / "encoder.engine", EngineConf(max_batch=4, timing_cache=cache))
    sidecar = json.loads(sidecar_path(engine).read_text())
    assert sidecar["source_onnx_sha256"] == sha256_file(tiny_onnx) and cache.stat().st_size > 0
    images = [np.random.default_rng(i).integers(0, 256, (90, 120, 3), dtype=np.uint8) for i in range(6)]
    with TensorRTEmbedder(engine) as trt_embedder:
        got = trt_embedder.embed(images)  # 6 images: two chunks of the max batch 4
    want = OnnxEmbedder(tiny_onnx, providers=["CPUExecutionProvider"]).embed(images)
    assert got.shape == want.shape and np.sum(got * want, axis=1).min() > 0.999


def test_matcher_engines_profile_the_keypoint_counts():
    """A matcher's dynamic keypoint counts span 1..max_keypoints; an extractor (all static) needs none."""
    conf = EngineConf(max_keypoints=1024)
    matcher = [("keypoints0", (1, -1, 2)), ("descriptors1", (1, -1, 128)), ("size0", (1, 2))]
    assert keypoint_profile(matcher, conf) == {
        "keypoints0": ((1, 1, 2), (1, 512, 2), (1, 1024, 2)),
        "descriptors1": ((1, 1, 128), (1, 512, 128), (1, 1024, 128)),
    }
    assert keypoint_profile([("image", (1, 3, 640, 640))], conf) == {}
    with pytest.raises(GeolinkError, match="--max-keypoints"):
        EngineConf(max_keypoints=0)


def test_sidecar_of_a_local_feature_engine_has_no_model_card(tmp_path):
    engine = tmp_path / "xfeat-lighterglue.engine"
    metadata = {"geolink_local_features": '{"kind": "matcher", "name": "lighterglue", "features": "xfeat"}'}
    write_sidecar(
        engine, _sidecar(model_card=None, profile={"min": 1, "opt": 512, "max": 1024}, metadata=metadata)
    )
    again = read_sidecar(engine)
    assert again["model_card"] is None and again["metadata"] == metadata
