"""The PyTorch backend: the exportable graphs run eagerly or compiled, on CPU or CUDA.

fp16 (CUDA only) runs :func:`export.onnx_export.mixed_precision_model`, the same mixed
precision as the exported fp16 graphs: convolution stacks in half, keypoints and motion math in
float32, I/O float32. Float32 layers never use TF32, in fp32 and fp16 alike (as the other
backends): TF32 convolutions would cost about 1e-3 of accuracy. With ``cuda_graph`` the frame
call is captured once in a CUDA graph over static input/output buffers and replayed per frame;
a capture that fails falls back to eager calls, with a warning.

With ``compile`` the graphs run through ``torch.compile`` (inductor, static shapes): CUDA
graphs on the GPU (``mode="reduce-overhead"``), ``"max-autotune-no-cudagraphs"`` on the CPU.
Compiling happens once, at creation (a warm-up call of each graph); inductor's own cache lives
in the engine cache folder, so later starts reuse the generated kernels.

On the CPU the weights and 4-D inputs are channels-last (oneDNN's native layout: no
reorders around each convolution) and the intra-op threads follow
:func:`export.threads.inference_threads`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.config import ModelConfig
from export.graphs import AvatarGraph, FrameGraph
from export.iospec import GraphSpec, ModelIO, model_io
from export.model import FOMM
from export.threads import inference_threads

from .base import Engine
from .device import Device, resolve
from .errors import EngineWarning

log = logging.getLogger(__name__)

COMPILE_MODES = {"cuda": "reduce-overhead", "cpu": "max-autotune-no-cudagraphs"}


@contextlib.contextmanager
def tf32_off(backends: Any = None) -> Iterator[None]:
    """No TF32 in float32 convolutions and matrix products while the block runs; the
    process-wide flags are restored on exit. Works on every torch the project allows
    (``torch>=2.2``): the ``fp32_precision`` API where this torch has it (2.9+; the legacy
    ``allow_tf32`` flags are then never read, since reading them raises once anything in the
    process has used the new API), else the legacy flags. ``backends``: ``torch.backends``
    (a stand-in in tests)."""
    backends = backends if backends is not None else torch.backends
    cudnn = backends.cudnn
    conv = getattr(cudnn, "conv", None)
    matmul = backends.cuda.matmul
    if conv is not None and hasattr(conv, "fp32_precision"):
        holders = [conv, matmul]
        rnn = getattr(cudnn, "rnn", None)
        if rnn is not None and hasattr(rnn, "fp32_precision"):
            holders.append(rnn)
        saved = [(holder, holder.fp32_precision) for holder in holders]
        for holder in holders:
            holder.fp32_precision = "ieee"
        try:
            yield
        finally:
            for holder, value in saved:
                holder.fp32_precision = value
        return
    saved_legacy = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32 = False
    matmul.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved_legacy


@contextlib.contextmanager
def cudnn_settings() -> Iterator[None]:
    """cuDNN autotuning on (static shapes), and no TF32 in float32 convolutions and matrix
    products (fp32 engines and the float32 parts of fp16 engines; :func:`tf32_off`). The
    process-wide flags are restored on exit."""
    cudnn = torch.backends.cudnn
    saved_benchmark = cudnn.benchmark
    cudnn.benchmark = True
    try:
        with tf32_off():
            yield
    finally:
        cudnn.benchmark = saved_benchmark


class TorchEngine(Engine):
    """Runs :class:`export.graphs.AvatarGraph` and :class:`~export.graphs.FrameGraph` in
    PyTorch. ``device`` must be a valid device (see :func:`engines.device.resolve`)."""

    backend = "torch"

    def __init__(
        self,
        model: FOMM,
        io: ModelIO | None = None,
        precision: str = "fp32",
        device: str | Device = "cpu",
        cuda_graph: bool = False,
        compile: bool = False,
        strict_compile: bool = False,
    ):
        """``strict_compile``: a failing torch.compile raises (for measuring it) instead of
        falling back to the eager graphs with a warning."""
        dev = Device.parse(str(device))
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"unknown precision '{precision}': expected fp32 or fp16")
        if precision == "fp16" and not dev.is_cuda:
            raise ValueError(
                "the torch backend runs fp16 on CUDA only (half-precision convolutions are slow "
                "or unsupported on CPU); selection refuses this combination"
            )
        io = io or model_io(model.config)
        super().__init__(io, precision, str(dev))
        self._dev = torch.device(str(dev))
        self.compiled = compile  # graphs run through torch.compile
        # Inductor's reduce-overhead mode captures CUDA graphs itself.
        self.cuda_graph = cuda_graph and dev.is_cuda and not compile
        if cuda_graph and not dev.is_cuda:
            log.info("cuda_graph ignored: the torch engine runs on the CPU")
        if cuda_graph and dev.is_cuda and compile:
            self.notes.append("CUDA graphs captured by torch.compile (mode=reduce-overhead)")
        if precision == "fp16":
            from export.onnx_export import mixed_precision_model

            model = mixed_precision_model(model)
        self._model = model.to(device=self._dev).eval()
        # CPU: oneDNN convolutions run in NHWC; channels-last weights and inputs avoid reorders.
        self._memory_format = torch.preserve_format if dev.is_cuda else torch.channels_last
        if not dev.is_cuda:
            self._model = self._model.to(memory_format=torch.channels_last)
            threads = inference_threads()
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        eager: dict[str, torch.nn.Module] = {
            io.avatar.name: AvatarGraph(self._model, io),
            io.frame.name: FrameGraph(self._model, io),
        }
        self._graphs = eager
        if compile:
            mode = COMPILE_MODES[dev.kind]
            self._graphs = {
                name: torch.compile(module, mode=mode, dynamic=False)
                for name, module in eager.items()
            }
        # CUDA graph state: static inputs/outputs of the frame call and the captured graph.
        self._static: dict[str, torch.Tensor] = {}
        self._static_out: tuple[torch.Tensor, ...] = ()
        self._graph: Any = None
        if self.cuda_graph:
            self._static = {
                t.name: torch.zeros(t.shape, dtype=torch.float32, device=self._dev)
                for t in io.frame.inputs
            }
        if compile:
            try:
                self.warm_up()  # compiles
            except Exception as exc:
                if strict_compile:
                    raise
                self._compile_failed(exc, eager, cuda_graph and dev.is_cuda)
            else:
                self.notes.append(f"torch.compile (inductor, mode={mode}, static shapes)")

    def _compile_failed(
        self, exc: Exception, eager: dict[str, torch.nn.Module], cuda_graph: bool
    ) -> None:
        """torch.compile failed (no C++ compiler, an inductor or Triton error, ...): run the
        eager graphs, with a warning."""
        message = (
            f"torch.compile failed on {self.device} ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); running eagerly"
        )
        warnings.warn(message, EngineWarning, stacklevel=3)
        self.notes.append(message)
        self.compiled = False
        self._graphs = eager
        self.cuda_graph = cuda_graph
        if cuda_graph:
            self._static = {
                t.name: torch.zeros(t.shape, dtype=torch.float32, device=self._dev)
                for t in self.io.frame.inputs
            }

    def _settings(self) -> contextlib.AbstractContextManager[None]:
        if self._dev.type != "cuda":
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.cuda.device(self._dev))
        stack.enter_context(cudnn_settings())
        return stack

    def warm_up(self, calls: int = 3) -> float:
        """Run both graphs on zeros (compiling them in compiled mode); return the seconds
        the last frame call took."""
        feeds = {
            t.name: torch.zeros(t.shape, dtype=torch.float32, device=self._dev)
            for t in (*self.io.avatar.inputs, *self.io.frame.inputs)
        }
        seconds = 0.0
        with self._settings(), torch.no_grad():
            self._graphs[self.io.avatar.name](*(feeds[n] for n in self.io.avatar.input_names))
            frame = self._graphs[self.io.frame.name]
            for _ in range(calls):
                start = time.perf_counter()
                frame(*(feeds[n] for n in self.io.frame.input_names))
                if self._dev.type == "cuda":
                    torch.cuda.synchronize(self._dev)
                seconds = time.perf_counter() - start
        return seconds

    def describe(self) -> str:
        modes = [
            m for m, on in (("compiled", self.compiled), ("CUDA graph", self.cuda_graph)) if on
        ]
        return f"{self.backend} ({', '.join([self.precision, self.device, *modes])})"

    # --- backend hooks -------------------------------------------------------------------------

    def _to_device(self, name: str, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.cuda_graph and name in self._static:
            # The captured graph reads these addresses: update them in place.
            return self._static[name].copy_(tensor, non_blocking=False)
        return self._fresh_input(tensor)

    def _fresh_input(self, tensor: torch.Tensor) -> torch.Tensor:
        """A copy on the engine's device in its layout (a copy on the CPU too: the engine never
        keeps a buffer its caller owns)."""
        tensor = tensor.to(device=self._dev, dtype=torch.float32, copy=True)
        if tensor.dim() == 4 and self._memory_format is torch.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def _to_host(self, name: str, handle: torch.Tensor) -> np.ndarray:
        # Eager and compiled outputs are fresh tensors (CUDA ones are cloned in _call when
        # compiled); static CUDA-graph outputs are copied by .to("cpu").
        host = handle.detach().to(device="cpu", dtype=torch.float32)
        return np.ascontiguousarray(host.numpy())  # NCHW, whatever the engine's layout

    def _call(self, graph: GraphSpec, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        module = self._graphs[graph.name]
        if self.compiled:
            with torch.no_grad():
                outputs = tuple(module(*inputs))
            # reduce-overhead outputs live in memory the next replay overwrites.
            return tuple(o.clone() for o in outputs) if self._dev.type == "cuda" else outputs
        with torch.inference_mode():
            return tuple(module(*inputs))

    def _execute(self, graph: GraphSpec, feeds: Mapping[str, Any]) -> dict[str, Any]:
        with self._settings():
            if self.cuda_graph and graph.name == self.io.frame.name:
                outputs = self._replay(feeds)
                if outputs is not None:
                    return dict(zip(graph.output_names, outputs, strict=True))
            outputs = self._call(graph, [feeds[name] for name in graph.input_names])
            if self.cuda_graph and graph.name == self.io.avatar.name:
                # The avatar state goes into the frame graph's static buffers.
                with torch.no_grad():
                    for name, value in zip(graph.output_names, outputs, strict=True):
                        self._static[name].copy_(value)
                outputs = tuple(self._static[name] for name in graph.output_names)
        return dict(zip(graph.output_names, outputs, strict=True))

    def _run_once(self, graph: GraphSpec, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        inputs = [self._fresh_input(torch.from_numpy(feeds[name])) for name in graph.input_names]
        with self._settings():
            outputs = self._call(graph, inputs)
        return {
            name: self._to_host(name, value)
            for name, value in zip(graph.output_names, outputs, strict=True)
        }

    def _replay(self, feeds: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Replay the captured frame call (capturing it on first use); None when capture
        failed and the engine now runs eagerly."""
        with torch.no_grad():
            for name in self.io.frame.input_names:
                if feeds[name] is not self._static[name]:
                    self._static[name].copy_(feeds[name])
            if self._graph is None and not self._capture():
                return None
            self._graph.replay()
        return self._static_out

    def _capture(self) -> bool:
        """Warm up on a side stream, then capture one frame call (PyTorch's recipe), on this
        engine's GPU. On failure: warn, drop the CUDA graph and run eagerly from now on."""
        module = self._graphs[self.io.frame.name]
        inputs = [self._static[name] for name in self.io.frame.input_names]
        try:
            with torch.cuda.device(self._dev):
                side = torch.cuda.Stream(device=self._dev)
                side.wait_stream(torch.cuda.current_stream(self._dev))
                with torch.cuda.stream(side), torch.no_grad():
                    for _ in range(3):
                        module(*inputs)
                torch.cuda.current_stream(self._dev).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph), torch.no_grad():
                    outputs = tuple(module(*inputs))
        except Exception as exc:
            message = (
                f"CUDA graph capture of the torch frame call on {self.device} failed "
                f"({type(exc).__name__}: {exc}); running without a CUDA graph"
            )
            warnings.warn(message, EngineWarning, stacklevel=2)
            self.notes.append(message)
            self.cuda_graph = False
            self._static.clear()
            return False
        self._static_out = outputs
        self._graph = graph
        log.info("captured the frame call in a CUDA graph on %s", self.device)
        return True

    def _release(self) -> None:
        self._graphs.clear()
        self._graph = None
        self._static.clear()
        self._static_out = ()


def _inductor_cache(cache: Any) -> None:
    """Keep inductor's generated kernels in the engine cache (unless the user chose a folder);
    set before anything is compiled, the measurement included."""
    if cache is not None and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache.root) / "torch-inductor")


def create_torch_engine(
    checkpoint: str | Path,
    config: ModelConfig,
    io: ModelIO,
    precision: str,
    device: str,
    cuda_graph: bool = False,
    compile: bool | None = False,
    cache: Any = None,
    remeasure: bool = False,
) -> TorchEngine:
    """Load the checkpoint and wrap it in a :class:`TorchEngine`.

    ``compile=None`` (``--backend auto``) compiles only where a measurement (made once and
    kept in the engine cache, see :mod:`engines.compile_choice`; ``remeasure`` redoes it) found
    it faster. A compile that fails runs eagerly, with a warning.
    """
    from export.checkpoint import load_model

    from .compile_choice import choose_compile, measure_variants

    dev = resolve(device)
    model = load_model(checkpoint, config)
    _inductor_cache(cache)
    why = ""
    if compile is None:

        def make(compiled: bool) -> TorchEngine:
            # Like with like: reduce-overhead replays CUDA graphs, so eager captures one too.
            return TorchEngine(
                model,
                io,
                precision,
                dev,
                cuda_graph=not compiled,
                compile=compiled,
                strict_compile=True,
            )

        compile, why = choose_compile(
            io, precision, dev, cache, checkpoint, lambda: measure_variants(make), remeasure
        )
    engine = TorchEngine(model, io, precision, dev, cuda_graph, compile)
    if why:
        engine.notes.append(why)
    return engine
