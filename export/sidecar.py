"""The JSON sidecar of a TensorRT engine: what it was built from, on which GPU, by which TensorRT.

Engines are tied to the GPU and the TensorRT version that built them, so the runtime reads the
sidecar first and refuses a mismatched engine with a message naming both sides. Only the
standard library and the core are imported here: the runtime uses this module on a machine
without torch or onnx.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from geolink_edge.atomic import read_json, write_json
from geolink_edge.card import ModelCard
from geolink_edge.errors import GeolinkError, require

SIDECAR_FORMAT = "geolink-edge/engine-sidecar/1"
REQUIRED = (
    "tensorrt_version",
    "gpu_name",
    "compute_capability",
    "source_onnx_sha256",
    "precision",
    "inputs",
    "outputs",
    "profile",
    "model_card",
)
_PYCUDA_HINT = "pip install 'geolink-edge[jetson]' (pycuda) on the target"


def sidecar_path(engine_path: str | Path) -> Path:
    """``encoder.engine`` → ``encoder.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def gpu_identity(device: int = 0) -> tuple[str, str]:
    """(name, compute capability "major.minor") of a CUDA device, through pycuda."""
    cuda = require("pycuda.driver", _PYCUDA_HINT)
    cuda.init()
    if device >= cuda.Device.count():
        raise GeolinkError(f"CUDA device {device} not found ({cuda.Device.count()} present)")
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return dev.name(), f"{major}.{minor}"


def make_sidecar(
    *,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: str,
    source_onnx_sha256: str,
    precision: str,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    profile: dict[str, int],
    model_card: ModelCard | None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "format": SIDECAR_FORMAT,
        "tensorrt_version": tensorrt_version,
        "gpu_name": gpu_name,
        "compute_capability": compute_capability,
        "source_onnx_sha256": source_onnx_sha256,
        "precision": precision,
        "inputs": inputs,
        "outputs": outputs,
        "profile": profile,
        "model_card": None if model_card is None else model_card.to_dict(),  # None: a local-feature model
        **extra,
    }


def write_sidecar(engine_path: str | Path, sidecar: dict[str, Any]) -> Path:
    return write_json(sidecar_path(engine_path), sidecar)


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """The sidecar of ``engine_path``, checked for every field the runtime relies on."""
    path = sidecar_path(engine_path)
    data = read_json(path, "engine sidecar", "build the engine with geolink-edge export --engine")
    if not isinstance(data, dict):
        raise GeolinkError(f"{path}: engine sidecar is not a JSON object")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise GeolinkError(f"{path}: engine sidecar lacks {', '.join(missing)}")
    profile = data["profile"]
    if not (
        isinstance(profile, dict) and all(isinstance(profile.get(k), int) for k in ("min", "opt", "max"))
    ):
        raise GeolinkError(f"{path}: engine sidecar profile must hold integer min/opt/max sizes")
    if data["model_card"] is not None:
        data["model_card"] = ModelCard.from_dict(data["model_card"], source=str(path)).to_dict()
    return data


def check_compatible(
    sidecar: dict[str, Any],
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: str,
    where: str = "engine",
) -> None:
    """Refuse an engine built by another TensorRT or for another GPU, naming both sides."""
    if sidecar["tensorrt_version"] != tensorrt_version:
        raise GeolinkError(
            f"{where} was built with TensorRT {sidecar['tensorrt_version']} but this machine runs TensorRT "
            f"{tensorrt_version}: rebuild it here with geolink-edge export ONNX --engine"
        )
    if (sidecar["gpu_name"], str(sidecar["compute_capability"])) != (gpu_name, compute_capability):
        raise GeolinkError(
            f"{where} was built for {sidecar['gpu_name']} (sm {sidecar['compute_capability']}) "
            "but this GPU is "
            f"{gpu_name} (sm {compute_capability}): rebuild it here with geolink-edge export ONNX --engine"
        )
