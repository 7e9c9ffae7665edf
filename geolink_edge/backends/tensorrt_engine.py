"""TensorRT on the Jetson: a serialised engine plus its JSON sidecar, any number of named inputs
and outputs, shapes set per call within the engine's optimisation profile.

A CUDA context belongs to the thread that made it, so one worker thread owns the context and does
all CUDA work (deserialise, allocate, copy, execute, free); callers hand it arrays and wait for the
result. Device and pinned host buffers grow to the largest shape seen and are reused; copies are
asynchronous on one stream, with the TensorRT 10 tensor-address API (``set_tensor_address`` +
``execute_async_v3``). ``close()`` (or leaving a ``with`` block, or the interpreter's exit) frees
the buffers and pops the context on that thread. tensorrt and pycuda are imported only when an
engine is opened, so this module imports anywhere.
"""

from __future__ import annotations

import atexit
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from geolink_edge.backends.base import Backend
from geolink_edge.backends.metadata import CARD_KEY, PRECISION_KEY
from geolink_edge.errors import GeolinkError, require
from geolink_edge.export.sidecar import check_compatible, gpu_identity, read_sidecar

TENSORRT_HINT = "the .engine backend needs TensorRT, which JetPack provides (or use the .onnx model)"
PYCUDA_HINT = "the .engine backend needs pycuda: pip install 'geolink-edge[jetson]'"


class TensorRTBackend(Backend):
    def __init__(self, path: str | Path, device: int = 0):
        path = Path(path)
        if not path.is_file():
            raise GeolinkError(f"{path}: engine file not found")
        self.path = path
        self.sidecar = read_sidecar(path)
        self.metadata = dict(self.sidecar.get("metadata", {}))
        if self.sidecar["model_card"] is not None:
            self.metadata.setdefault(CARD_KEY, json.dumps(self.sidecar["model_card"]))
        self.metadata.setdefault(PRECISION_KEY, self.sidecar["precision"])
        trt = require("tensorrt", TENSORRT_HINT)
        cuda = require("pycuda.driver", PYCUDA_HINT)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geolink-tensorrt")
        self._state: dict[str, Any] = {}
        try:
            self._on_worker(self._open, trt, cuda, device)
        except BaseException:
            self._worker.shutdown(wait=True)
            raise
        atexit.register(self.close)
        self.name = f"tensorrt[{self._state['gpu']}] {self.sidecar['precision']}"

    def _on_worker(self, fn, *args):
        return self._worker.submit(fn, *args).result()

    # --- everything from here to close() runs on the worker thread ---

    def _open(self, trt, cuda, device: int) -> None:
        gpu, capability = gpu_identity(device)
        check_compatible(self.sidecar, trt.__version__, gpu, capability, where=str(self.path))
        context_cuda = cuda.Device(device).make_context()
        state = self._state
        state.update(cuda=cuda, trt=trt, ctx=context_cuda, gpu=gpu, buffers={})
        try:
            logger = trt.Logger(trt.Logger.WARNING)
            engine = trt.Runtime(logger).deserialize_cuda_engine(self.path.read_bytes())
            if engine is None:
                raise GeolinkError(f"{self.path}: TensorRT could not deserialize the engine")
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
            self.inputs = [n for n in names if is_input[n]]
            self.outputs = [n for n in names if not is_input[n]]
            state.update(
                engine=engine,
                context=engine.create_execution_context(),
                stream=cuda.Stream(),
                dtypes={n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names},
            )
        except BaseException:
            self._release()
            raise

    def _buffer(self, name: str, nbytes: int):
        """(pinned host, device) buffers of at least ``nbytes`` for one tensor, grown when needed."""
        s = self._state
        host, device = s["buffers"].get(name, (None, None))
        if host is None or host.nbytes < nbytes:
            if device is not None:
                device.free()
            host = s["cuda"].pagelocked_empty(max(nbytes, 1), np.uint8)
            device = s["cuda"].mem_alloc(max(nbytes, 1))
            s["buffers"][name] = (host, device)
            s["context"].set_tensor_address(name, int(device))
        return host, device

    def _execute(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        s = self._state
        cuda, stream, context = s["cuda"], s["stream"], s["context"]
        for name in self.inputs:
            array = np.ascontiguousarray(feeds[name], dtype=s["dtypes"][name])
            if not context.set_input_shape(name, tuple(array.shape)):
                raise GeolinkError(
                    f"{self.path}: input {name} of shape {tuple(array.shape)} is outside the engine's profile"
                )
            host, device = self._buffer(name, array.nbytes)
            host[: array.nbytes] = array.view(np.uint8).reshape(-1)
            cuda.memcpy_htod_async(device, host[: array.nbytes], stream)
        shapes = {name: tuple(context.get_tensor_shape(name)) for name in self.outputs}
        results = []
        for name in self.outputs:
            dtype = s["dtypes"][name]
            nbytes = int(np.prod(shapes[name])) * dtype.itemsize
            host, device = self._buffer(name, nbytes)
            results.append((host, device, nbytes, dtype, shapes[name]))
        if not context.execute_async_v3(stream.handle):
            raise GeolinkError(f"{self.path}: TensorRT execution failed")
        for host, device, nbytes, _, _ in results:
            cuda.memcpy_dtoh_async(host[:nbytes], device, stream)
        stream.synchronize()
        return [host[:nbytes].view(dtype).reshape(shape).copy() for host, _, nbytes, dtype, shape in results]

    def _release(self) -> None:
        state = self._state
        for _host, device in state.pop("buffers", {}).values():
            device.free()
        for key in ("context", "engine", "stream"):
            state.pop(key, None)
        ctx = state.pop("ctx", None)
        if ctx is not None:
            ctx.pop()
            ctx.detach()

    # --- caller side ---

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._on_worker(self._execute, feeds)

    def close(self) -> None:
        """Free the GPU memory and the CUDA context on the thread that owns them (idempotent)."""
        if self._state:
            self._on_worker(self._release)
            self._state.clear()
        self._worker.shutdown(wait=True)
        atexit.unregister(self.close)
