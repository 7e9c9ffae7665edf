"""``geolink-edge info``: what this machine offers the toolkit (the first command on a new Jetson)."""

from __future__ import annotations

import importlib
import platform

import typer


def _version(module_name: str) -> tuple[str, object | None]:
    try:
        module = importlib.import_module(module_name)
    except Exception:  # a broken install is as good as missing here
        return "missing", None
    return str(getattr(module, "__version__", getattr(module, "VERSION", "present"))), module


def _opencv_row() -> tuple[str, str]:
    version, cv2 = _version("cv2")
    if cv2 is None:
        return version, ""
    build = cv2.getBuildInformation()
    gst = next((ln.split(":", 1)[1].strip() for ln in build.splitlines() if "GStreamer" in ln), "NO")
    return version, f"GStreamer: {'yes' if gst.upper().startswith('YES') else 'no'}"


def _onnxruntime_row() -> tuple[str, str]:
    version, ort = _version("onnxruntime")
    if ort is None:
        return version, ""
    return version, "providers: " + ", ".join(ort.get_available_providers())


def _torch_devices() -> list[str]:
    _, torch = _version("torch")
    if torch is None or not torch.cuda.is_available():
        return []
    devices = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        devices.append(
            f"cuda:{i} {props.name} sm_{props.major}{props.minor} {props.total_memory / 2**30:.1f} GiB"
        )
    return devices


def _pycuda_devices() -> list[str]:
    try:
        import pycuda.driver as cuda

        cuda.init()
        return [f"cuda:{i} {cuda.Device(i).name()}" for i in range(cuda.Device.count())]
    except Exception:
        return []


def collect() -> list[tuple[str, str, str]]:
    """(component, version or 'missing', detail) rows."""
    import numpy

    rows = [("python", platform.python_version(), platform.machine()), ("numpy", numpy.__version__, "")]
    rows.append(("opencv", *_opencv_row()))
    for name, module in [("faiss", "faiss"), ("torch", "torch"), ("timm", "timm"), ("onnx", "onnx")]:
        rows.append((name, _version(module)[0], ""))
    rows.append(("onnxruntime", *_onnxruntime_row()))
    for name, module in [("tensorrt", "tensorrt"), ("pycuda", "pycuda"), ("pymavlink", "pymavlink")]:
        rows.append((name, _version(module)[0], ""))
    devices = _torch_devices() or _pycuda_devices()
    rows.append(("cuda devices", str(len(devices)), "; ".join(devices) or "none seen"))
    return rows


def info() -> None:
    """Show the versions of every library the toolkit can use and the CUDA devices seen."""
    from rich.console import Console
    from rich.table import Table

    from geolink_edge import __version__

    table = Table(title=f"geolink-edge {__version__}")
    for column in ("component", "version", "detail"):
        table.add_column(column)
    for name, version, detail in collect():
        style = "red" if version == "missing" else None
        table.add_row(name, version, detail, style=style)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command()(info)
