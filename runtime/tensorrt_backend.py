"""TensorRT embedder for the Jetson: a serialised engine plus its JSON sidecar.

A CUDA context belongs to the thread that made it, so one worker thread owns the context and
does all CUDA work (deserialise, allocate, copy, execute, free); callers hand it preprocessed
batches and wait for the result. Host buffers are pinned and copies are asynchronous on one
stream, with the TensorRT 10 tensor-address API (``set_tensor_address`` + ``execute_async_v3``).
tensorrt and pycuda are imported only when an engine is opened, so this module imports anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from geolink_edge.card import ModelCard
from geolink_edge.errors import GeolinkError, require
from geolink_edge.export.sidecar import check_compatible, gpu_identity, read_sidecar
from geolink_edge.preprocess import preprocess

TENSORRT_HINT = "the .engine backend needs TensorRT, which JetPack provides (or use the .onnx model)"
PYCUDA_HINT = "the .engine backend needs pycuda: pip install 'geolink-edge[jetson]'"


class TensorRTEmbedder:
    """Runs ``encoder.engine`` after checking its sidecar against this TensorRT and this GPU."""

    def __init__(self, path: str | Path, device: int = 0, warmup_runs: int = 3):
        path = Path(path)
        if not path.is_file():
            raise GeolinkError(f"{path}: engine file not found")
        self.path = path
        self.sidecar = read_sidecar(path)
        self.card = ModelCard.from_dict(self.sidecar["model_card"], source=str(path))
        self.precision = self.sidecar["precision"]
        self.max_batch = int(self.sidecar["profile"]["max"])
        trt = require("tensorrt", TENSORRT_HINT)
        cuda = require("pycuda.driver", PYCUDA_HINT)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geolink-tensorrt")
        self._state: dict[str, Any] = {}
        try:
            self._on_worker(self._open, trt, cuda, device, warmup_runs)
        except BaseException:
            self._worker.shutdown(wait=True)
            raise
        self.name = f"tensorrt[{self._state['gpu']}] {self.precision}"

    def _on_worker(self, fn, *args):
        return self._worker.submit(fn, *args).result()

    # --- everything from here to close() runs on the worker thread ---

    def _open(self, trt, cuda, device: int, warmup_runs: int) -> None:
        gpu, capability = gpu_identity(device)
        check_compatible(self.sidecar, trt.__version__, gpu, capability, where=str(self.path))
        context_cuda = cuda.Device(device).make_context()
        state = self._state
        state.update(cuda=cuda, ctx=context_cuda, gpu=gpu)
        try:
            logger = trt.Logger(trt.Logger.WARNING)
            engine = trt.Runtime(logger).deserialize_cuda_engine(self.path.read_bytes())
            if engine is None:
                raise GeolinkError(f"{self.path}: TensorRT could not deserialize the engine")
            context = engine.create_execution_context()
            stream = cuda.Stream()
            buffers = {}
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                shape = tuple(int(d) for d in engine.get_tensor_shape(name))
                shape = (self.max_batch, *shape[1:])
                host = cuda.pagelocked_empty(shape, trt.nptype(engine.get_tensor_dtype(name)))
                device_mem = cuda.mem_alloc(host.nbytes)
                context.set_tensor_address(name, int(device_mem))  # fixed for the engine's lifetime
                is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                buffers[name] = (host, device_mem, is_input)
            inputs = [n for n, b in buffers.items() if b[2]]
            outputs = [n for n, b in buffers.items() if not b[2]]
            if len(inputs) != 1 or len(outputs) != 1:
                raise GeolinkError(
                    f"{self.path}: expected one input and one output, found {inputs} → {outputs}"
                )
            state.update(
                engine=engine,
                context=context,
                stream=stream,
                buffers=buffers,
                input=inputs[0],
                output=outputs[0],
            )
            height, width = self.card.image_size
            warm = np.zeros((1, 3, height, width), np.float32)
            for _ in range(warmup_runs):  # first runs pay for lazy kernel loading
                self._execute(warm)
        except BaseException:
            self._release()
            raise

    def _execute(self, batch: np.ndarray) -> np.ndarray:
        s = self._state
        cuda, stream, context = s["cuda"], s["stream"], s["context"]
        host_in, dev_in, _ = s["buffers"][s["input"]]
        host_out, dev_out, _ = s["buffers"][s["output"]]
        n = len(batch)
        if not context.set_input_shape(s["input"], tuple(batch.shape)):
            raise GeolinkError(
                f"{self.path}: input shape {tuple(batch.shape)} is outside the engine's profile"
            )
        host_in[:n] = batch
        cuda.memcpy_htod_async(dev_in, host_in[:n], stream)
        if not context.execute_async_v3(stream.handle):
            raise GeolinkError(f"{self.path}: TensorRT execution failed")
        cuda.memcpy_dtoh_async(host_out[:n], dev_out, stream)
        stream.synchronize()
        return np.array(host_out[:n], dtype=np.float32)

    def _release(self) -> None:
        state = self._state
        for _host, device_mem, _ in state.pop("buffers", {}).values():
            device_mem.free()
        for key in ("context", "engine", "stream"):
            state.pop(key, None)
        ctx = state.pop("ctx", None)
        if ctx is not None:
            ctx.pop()
            ctx.detach()

    # --- caller side ---

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Descriptors of an already preprocessed (N, 3, H, W) batch, in chunks of the profile's max."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        parts = [
            self._on_worker(self._execute, batch[i : i + self.max_batch])
            for i in range(0, len(batch), self.max_batch)
        ]
        out = np.concatenate(parts, axis=0) if parts else np.zeros((0, self.card.descriptor_dim), np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def embed(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        return self.run(preprocess(images_bgr, self.card))

    def close(self) -> None:
        """Free the GPU memory and the CUDA context on the thread that owns them."""
        if self._state:
            self._on_worker(self._release)
        self._worker.shutdown(wait=True)

    def __enter__(self) -> TensorRTEmbedder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
