"""The export stage: a checkpoint (or an ONNX) in, a folder of deployable models out.

``DIR/encoder.onnx`` (from a checkpoint, with a torch-vs-ONNX parity check), optionally
``encoder.int8.onnx`` + ``calibration.json`` + ``fidelity.json``, ``encoder.fp16.onnx``, and a
TensorRT engine with its sidecar, plus ``export.json`` listing what was made. Given an ONNX,
torch is never imported, so the engine can be built on a Jetson from what the desktop exported.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from geolink_edge.atomic import atomic_dir, check_new_dir, write_json
from geolink_edge.calib.dataset import DEFAULT_IMAGES
from geolink_edge.calib.quantize import METHODS, QUANTIZERS
from geolink_edge.calib.report import DEFAULT_MAX_QUERIES, DEFAULT_MIN_CENTRED_COSINE
from geolink_edge.errors import GeolinkError
from geolink_edge.export.engine import EngineConf

EXPORT_FORMAT = "geolink-edge/export/1"
PRECISION_FILES = {"fp32": "encoder.onnx", "int8": "encoder.int8.onnx", "fp16": "encoder.fp16.onnx"}


@dataclass
class ExportConf:
    int8: bool = False
    fp16: bool = False
    engine: bool = False
    calib_data: Path | None = None
    calib_images: int = DEFAULT_IMAGES
    calib_method: str = "entropy"
    quantizer: str = "ort"
    int8_attention: bool = False  # also QKᵀ and AV in INT8 (default FP32); the fidelity gates decide
    max_r1_drop: float = 1.0
    min_centred_cosine: float = DEFAULT_MIN_CENTRED_COSINE
    fidelity_queries: int | None = DEFAULT_MAX_QUERIES
    engine_conf: EngineConf = field(default_factory=EngineConf)
    opset: int = 17
    force: bool = False

    def __post_init__(self) -> None:
        if self.calib_method not in METHODS:
            raise GeolinkError(
                f"--calib-method must be one of {', '.join(METHODS)}, got {self.calib_method!r}"
            )
        if self.quantizer not in QUANTIZERS:
            raise GeolinkError(f"--quantizer must be one of {', '.join(QUANTIZERS)}, got {self.quantizer!r}")
        if not 1 <= self.calib_images <= 100_000:
            raise GeolinkError(f"--calib-images must be in [1, 100000], got {self.calib_images}")
        if not 0 <= self.max_r1_drop <= 100:
            raise GeolinkError(f"--max-r1-drop must be in [0, 100] points, got {self.max_r1_drop}")
        if not -1 <= self.min_centred_cosine <= 1:
            raise GeolinkError(f"--min-centred-cosine must be in [-1, 1], got {self.min_centred_cosine}")
        if self.fidelity_queries is not None and self.fidelity_queries < 1:
            raise GeolinkError(f"--fidelity-queries must be >= 1, got {self.fidelity_queries}")
        if not 17 <= self.opset <= 23:
            raise GeolinkError(f"--opset must be in [17, 23] (LayerNorm needs 17), got {self.opset}")
        if self.int8 and self.calib_data is None:
            raise GeolinkError(
                "--int8 needs --calib-data DATA (a dataset root with drone frames and satellite tiles)"
            )


def _console():
    from rich.console import Console

    return Console(file=sys.stderr)


def _source_kind(source: Path) -> str:
    if not source.is_file():
        raise GeolinkError(f"{source}: file not found")
    suffix = source.suffix.lower()
    if suffix not in (".pt", ".onnx"):
        raise GeolinkError(
            f"{source}: expected a checkpoint (.pt) or an encoder ONNX (.onnx), got {suffix!r}"
        )
    return suffix[1:]


def _is_local_features(source: Path) -> bool:
    from geolink_edge.backends.metadata import LOCAL_FEATURES_KEY, read_onnx_metadata

    return LOCAL_FEATURES_KEY in read_onnx_metadata(source)


def _local_features_engine(conf: ExportConf, source: Path, out_dir: Path) -> Path:
    """The engine of an extractor or matcher from ``geolink-edge export-matching`` (built on the target)."""
    from geolink_edge.export.engine import build_engine, require_tensorrt

    if conf.int8 or conf.fp16 or not conf.engine:
        raise GeolinkError(f"{source} is an exported local-feature model: only --engine applies to it")
    require_tensorrt()
    check_new_dir(out_dir, conf.force)
    engine_name = f"{source.stem}.engine"
    with atomic_dir(out_dir, force=conf.force) as tmp:
        build_engine(source, tmp / engine_name, conf.engine_conf)
        write_json(
            tmp / "export.json",
            {"format": EXPORT_FORMAT, "source": str(source), "files": {"engine": engine_name}},
        )
    return out_dir


def _export_checkpoint(source: Path, tmp: Path, conf: ExportConf, data, console) -> dict[str, Any]:
    from geolink_edge.export.onnx_export import export_onnx
    from geolink_edge.export.parity import check_parity, parity_images
    from geolink_edge.models.checkpoint import load_encoder

    encoder, card = load_encoder(source)
    onnx_path = export_onnx(encoder, tmp / PRECISION_FILES["fp32"], opset=conf.opset)
    parity = check_parity(encoder, onnx_path, parity_images(data) if data is not None else None)
    console.print(
        f"parity torch vs ONNX: cosine mean {parity['cosine_mean']:.6f} min {parity['cosine_min']:.6f}, "
        f"max |diff| {parity['max_abs_diff']:.2e} ({parity['images']})"
    )
    write_json(tmp / "parity.json", parity)
    return {"model_hash": card.weights_hash, "parity": parity}


def _quantize(fp32: Path, tmp: Path, conf: ExportConf, data, console) -> Path:
    from rich.progress import track

    from geolink_edge.calib.dataset import calibration_set, iter_batches
    from geolink_edge.calib.quantize import quantize_int8
    from geolink_edge.calib.report import calibration_report
    from geolink_edge.export.engine import onnx_metadata
    from geolink_edge.export.sidecar import sha256_file

    card, precision = onnx_metadata(fp32)
    if precision != "fp32":
        raise GeolinkError(f"{fp32}: --int8/--fp16 start from the FP32 encoder ONNX, this one is {precision}")
    chosen = calibration_set(data, conf.calib_images)
    for warning in chosen.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    paths = chosen.paths
    batches = track(
        iter_batches(paths, card),
        total=-(-len(paths) // 16),
        description="calibrating",
        console=console,
        transient=True,
    )
    out = tmp / PRECISION_FILES["int8"]
    quantized = quantize_int8(
        fp32, out, batches, conf.calib_method, conf.quantizer, attention=conf.int8_attention
    )
    write_json(
        tmp / "calibration.json", calibration_report(quantized, chosen.summary(), fp32, sha256_file(fp32))
    )
    console.print(
        f"INT8: {len(quantized['quantized_nodes'])} block MatMul/Gemm quantized "
        f"({conf.calib_method}, {quantized['images']} images), {len(quantized['excluded_nodes'])} kept float"
    )
    return out


def _fidelity(fp32: Path, candidates: dict[str, Path], tmp: Path, conf: ExportConf, data, console) -> dict:
    from geolink_edge.calib.report import fidelity_report, fidelity_table, held_out_set

    held_out = held_out_set(data, conf.fidelity_queries)
    report = fidelity_report(fp32, candidates, held_out, conf.max_r1_drop, conf.min_centred_cosine)
    write_json(tmp / "fidelity.json", report)
    console.print(fidelity_table(report))
    return report


def _engine_source(made: dict[str, Path]) -> tuple[str, Path]:
    """The engine is built from the most reduced precision made: INT8, else FP16, else FP32."""
    for precision in ("int8", "fp16", "fp32"):
        if precision in made:
            return precision, made[precision]
    raise AssertionError("no ONNX to build from")


def _check_request(conf: ExportConf, source: Path, kind: str) -> None:
    """Refuse, before any work, what this source cannot give or this machine cannot build."""
    if kind == "onnx" and not (conf.int8 or conf.fp16 or conf.engine):
        raise GeolinkError(f"{source} is already an ONNX: ask for --int8, --fp16 or --engine")
    if conf.engine:
        from geolink_edge.export.engine import require_tensorrt

        require_tensorrt()  # the engine can only be built where TensorRT is


def _calibration_data(conf: ExportConf):
    if conf.calib_data is None:
        return None
    from geolink_edge.data.datasets import open_dataset

    return open_dataset(conf.calib_data)


def _fp32_model(source: Path, kind: str, tmp: Path, conf: ExportConf, data, console) -> tuple[dict, dict]:
    """({precision: ONNX path}, summary entries) of the model the other precisions start from."""
    if kind == "pt":
        summary = _export_checkpoint(source, tmp, conf, data, console)
        return {"fp32": tmp / PRECISION_FILES["fp32"]}, summary
    from geolink_edge.export.engine import onnx_metadata

    card, precision = onnx_metadata(source)
    return {precision: source}, {"model_hash": card.weights_hash}


def _reduced_precisions(fp32: Path, tmp: Path, conf: ExportConf, data, console) -> dict[str, Path]:
    """The INT8 and FP16 models asked for."""
    made = {}
    if conf.int8:
        made["int8"] = _quantize(fp32, tmp, conf, data, console)
    if conf.fp16:
        from geolink_edge.calib.fp16 import convert_fp16

        made["fp16"] = tmp / PRECISION_FILES["fp16"]
        convert_fp16(fp32, made["fp16"])
    return made


def _build_engine(made: dict[str, Path], tmp: Path, conf: ExportConf) -> str:
    from geolink_edge.export.engine import build_engine

    precision, onnx_path = _engine_source(made)
    engine_name = PRECISION_FILES[precision].replace(".onnx", ".engine")
    build_engine(onnx_path, tmp / engine_name, conf.engine_conf)
    return engine_name


def _plain(values: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}


def _conf_record(conf: ExportConf) -> dict:
    """The options as written into export.json (paths as text)."""
    return {**_plain(asdict(conf)), "engine_conf": _plain(asdict(conf.engine_conf))}


def main(conf: ExportConf, source: str | Path, out_dir: str | Path) -> Path:
    """Run the export stage from ``source`` into ``out_dir``; return ``out_dir``."""
    source, out_dir = Path(source), Path(out_dir)
    kind = _source_kind(source)
    if kind == "onnx" and _is_local_features(source):
        return _local_features_engine(conf, source, out_dir)
    _check_request(conf, source, kind)
    check_new_dir(out_dir, conf.force)
    data = _calibration_data(conf)
    console = _console()
    summary: dict[str, Any] = {"format": EXPORT_FORMAT, "source": str(source), "files": {}}
    fidelity = None
    with atomic_dir(out_dir, force=conf.force) as tmp:
        made, found = _fp32_model(source, kind, tmp, conf, data, console)
        summary.update(found)
        fp32 = next(iter(made.values()))
        made.update(_reduced_precisions(fp32, tmp, conf, data, console))
        candidates = {p: made[p] for p in ("int8", "fp16") if p in made}
        if data is not None and candidates:
            fidelity = _fidelity(fp32, candidates, tmp, conf, data, console)
        if conf.engine and (fidelity is None or fidelity["passed"]):
            summary["files"]["engine"] = _build_engine(made, tmp, conf)
        summary["files"].update(
            {p: path.name if path.parent == tmp else str(path) for p, path in made.items()}
        )
        summary["conf"] = _conf_record(conf)
        write_json(tmp / "export.json", summary)
    if fidelity is not None and not fidelity["passed"]:
        raise GeolinkError(
            f"{'; '.join(fidelity['failures'])} "
            f"(reports in {out_dir}; try another --calib-method or more --calib-images)"
        )
    return out_dir
