"""Build a TensorRT engine from the encoder ONNX, on the machine that will run it.

The network is strongly typed: precision comes from the ONNX itself (Q/DQ nodes for INT8, FP16
tensors for FP16), which is the only mode TensorRT 11 keeps and the portable one on 10.x. For the
encoder one optimisation profile covers the batch dimension (H×W are static); for an exported
local-feature model (``geolink-edge export-matching``) it covers the keypoint counts of a matcher
(an extractor's shapes are all static), and the sidecar keeps the ONNX metadata that says what it
is. A timing cache file, when given, is loaded before the build and saved after it, so rebuilds on
the same device are fast.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geolink_edge.atomic import write_bytes
from geolink_edge.backends.metadata import CARD_KEY, LOCAL_FEATURES_KEY, PRECISION_KEY, read_onnx_metadata
from geolink_edge.card import ModelCard
from geolink_edge.errors import GeolinkError, require
from geolink_edge.export.sidecar import gpu_identity, make_sidecar, sha256_file, write_sidecar

TENSORRT_HINT = "build the engine on the target, where JetPack provides TensorRT"


@dataclass(frozen=True)
class EngineConf:
    workspace_gb: float = 2.0
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    timing_cache: Path | None = None
    device: int = 0
    max_keypoints: int = 2048  # largest keypoint count a matcher engine accepts per image

    def __post_init__(self) -> None:
        if not 0 < self.workspace_gb <= 1024:
            raise GeolinkError(f"--workspace must be in (0, 1024] GB, got {self.workspace_gb}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch <= 4096:
            raise GeolinkError(
                f"batch profile must satisfy 1 <= min <= opt <= max <= 4096, got "
                f"{self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )
        if not 1 <= self.max_keypoints <= 65536:
            raise GeolinkError(f"--max-keypoints must be in [1, 65536], got {self.max_keypoints}")


def require_tensorrt():
    """The tensorrt module, or a one-line error saying where to build."""
    return require("tensorrt", TENSORRT_HINT)


def profile_shapes(input_shape: tuple[int, ...], conf: EngineConf) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) shapes for an input whose first dimension is the (dynamic) batch."""
    if len(input_shape) != 4:
        raise GeolinkError(f"encoder input must be (N, 3, H, W), got shape {tuple(input_shape)}")
    rest = tuple(int(d) for d in input_shape[1:])
    if any(d <= 0 for d in rest):
        raise GeolinkError(f"encoder input must have a static C×H×W, got {tuple(input_shape)}; re-export it")
    if input_shape[0] > 0 and not conf.min_batch == conf.max_batch == input_shape[0]:
        raise GeolinkError(
            f"encoder input has a fixed batch of {input_shape[0]}; re-export it with a dynamic batch"
        )
    return tuple((batch, *rest) for batch in (conf.min_batch, conf.opt_batch, conf.max_batch))


def keypoint_counts(conf: EngineConf) -> tuple[int, int, int]:
    """(min, opt, max) keypoint counts of a matcher engine's profile."""
    return 1, max(1, conf.max_keypoints // 2), conf.max_keypoints


def keypoint_profile(
    inputs: list[tuple[str, tuple[int, ...]]], conf: EngineConf
) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shapes of the inputs of a local-feature model that have a dynamic dimension
    (a keypoint count); an extractor, all static, has none."""
    return {
        name: tuple(tuple(int(d) if d > 0 else count for d in shape) for count in keypoint_counts(conf))
        for name, shape in inputs
        if any(d <= 0 for d in shape)
    }


def read_timing_cache(path: Path | None) -> bytes:
    """Bytes of an existing cache file; empty (a new cache) when there is none yet."""
    if path is None or not path.exists():
        return b""
    if not path.is_file():
        raise GeolinkError(f"{path}: timing cache path is not a file")
    return path.read_bytes()


def onnx_metadata(onnx_path: Path) -> tuple[ModelCard, str]:
    """(model card, precision) recorded in the ONNX by geolink-edge export."""
    meta = read_onnx_metadata(onnx_path)
    if CARD_KEY not in meta:
        raise GeolinkError(
            f"{onnx_path}: ONNX has no geolink model card (export it with geolink-edge export)"
        )
    return ModelCard.from_json(meta[CARD_KEY], source=str(onnx_path)), meta.get(PRECISION_KEY, "fp32")


def _network_flags(trt) -> int:
    major = int(trt.__version__.split(".")[0])
    if major < 10:
        raise GeolinkError(
            f"TensorRT {trt.__version__} is too old: explicit quantization needs TensorRT 10 or newer"
        )
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    # 11.x is always strongly typed and may drop the flag; 10.x needs it.
    return 0 if flag is None else 1 << int(flag)


def _parse(trt, builder, onnx_path: Path, logger):
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise GeolinkError(f"{onnx_path}: TensorRT could not parse the ONNX ({errors[:200]})")
    return network, parser


def _io_description(trt, plan: bytes, logger) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Names, shapes and dtypes of the engine's I/O tensors, read back from the plan itself."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise GeolinkError("TensorRT could not deserialize the engine it just built")
    inputs, outputs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        entry = {
            "name": name,
            "shape": [int(d) for d in engine.get_tensor_shape(name)],
            "dtype": str(engine.get_tensor_dtype(name)).split(".")[-1].lower(),
        }
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(entry)
    return inputs, outputs


def build_engine(onnx_path: str | Path, engine_path: str | Path, conf: EngineConf = EngineConf()) -> Path:
    """Parse ``onnx_path`` (the encoder or an exported local-feature model), build a serialised
    plan at ``engine_path`` and write its sidecar."""
    trt = require_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    metadata = read_onnx_metadata(onnx_path)
    local_features = LOCAL_FEATURES_KEY in metadata
    if local_features:
        card, precision = None, metadata.get(PRECISION_KEY, "fp32")
    else:
        card, precision = onnx_metadata(onnx_path)
    gpu_name, capability = gpu_identity(conf.device)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, onnx_path, logger)  # the parser must outlive the build
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(conf.workspace_gb * (1 << 30)))

    if local_features:
        network_inputs = [network.get_input(i) for i in range(network.num_inputs)]
        shapes = keypoint_profile([(i.name, tuple(i.shape)) for i in network_inputs], conf)
        profile_sizes = dict(zip(("min", "opt", "max"), keypoint_counts(conf), strict=True))
    else:
        image_input = network.get_input(0)
        shapes = {image_input.name: profile_shapes(tuple(image_input.shape), conf)}
        profile_sizes = {"min": conf.min_batch, "opt": conf.opt_batch, "max": conf.max_batch}
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)

    cache = config.create_timing_cache(read_timing_cache(conf.timing_cache))
    config.set_timing_cache(cache, ignore_mismatch=False)

    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise GeolinkError(f"{onnx_path}: TensorRT failed to build an engine (see the TensorRT log above)")
    plan = bytes(plan)
    build_s = time.perf_counter() - start
    if conf.timing_cache is not None:
        write_bytes(conf.timing_cache, bytes(config.get_timing_cache().serialize()))

    inputs, outputs = _io_description(trt, plan, logger)
    write_bytes(engine_path, plan)
    write_sidecar(
        engine_path,
        make_sidecar(
            tensorrt_version=trt.__version__,
            gpu_name=gpu_name,
            compute_capability=capability,
            source_onnx_sha256=sha256_file(onnx_path),
            precision=precision,
            inputs=inputs,
            outputs=outputs,
            profile=profile_sizes,  # batch sizes for the encoder, keypoint counts for a matcher
            model_card=card,
            metadata=metadata,
            workspace_gb=conf.workspace_gb,
            build_s=round(build_s, 1),
        ),
    )
    return engine_path
