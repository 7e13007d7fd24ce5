"""Export the avatar and frame graphs (:mod:`export.graphs`) to ONNX, checked before use.

Every export is: the graph module in eval mode -> ``torch.onnx.export`` (the torch.export-based
"dynamo" exporter, static shapes, inputs and outputs named from the I/O spec, opset
:data:`OPSET`, constant folding by its ONNX optimizer) -> a check of the interface against the
:class:`~export.iospec.GraphSpec` -> ``onnx.checker.check_model(full_check=True)`` -> a parity
check against the float32 PyTorch graph on golden-like inputs (smooth random images, the avatar
state the avatar graph computes, a relative motion transfer) with ONNX Runtime on the CPU when
it is installed. Only then is the file moved into place; on any failure the partial file is
deleted and :class:`ExportError` says what went wrong.

The dynamo exporter was picked over the TorchScript one: its graph is fully static (the
TorchScript exporter leaves Shape/Gather chains for the coordinate grids), its optimizer folds
constants, and it is the maintained path in torch 2.9+. Both export ``GridSample`` (opset 16+).

fp16 ("mixed precision") design, measured with ONNX Runtime on the CPU against the goldens
(vox-small256, max abs error on the frame in 1/255 units):

- the whole network in fp16 (I/O cast to float32): frame 4.2, keypoints off by up to 1e-2
  (1.3 px at 256), jacobians by 1e-3;
- the generator's convolution stacks in fp16, the keypoint detector and all keypoint/motion
  math in float32: frame 0.8, keypoints and jacobians exact to 1e-6.

The second is what :func:`mixed_precision_model` builds: the encoder (``first``,
``down_blocks``), ``bottleneck``, ``up_blocks``, ``final`` and the dense motion hourglass run
in fp16 (about 97% of the FLOPs at 256x256); the keypoint detector (2.6 of 110 GFLOP), the
softmaxes, keypoint sums, 2x2 inverses, jacobians, coordinate grids, gaussians, grid-sample
coordinates, the warps, mask/occlusion heads and the final sigmoid stay float32. Graph inputs
and outputs are float32 in both precisions, as the I/O spec requires.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig
from .errors import MissingDependencyError, UserError
from .graphs import AvatarGraph, FrameGraph
from .iospec import AVATAR_GRAPH, FRAME_GRAPH, GraphSpec, ModelIO, model_io
from .model import FOMM
from .motion import relative_motion

log = logging.getLogger(__name__)

#: ONNX opset of the exported graphs (GridSample needs 16; TensorRT 10 parses up to 20+).
OPSET = 18
#: Bump when the exported graphs change in a way the inputs of the cache key do not capture.
EXPORT_FORMAT = 1
#: Max abs difference allowed between an fp32 ONNX graph and PyTorch, on every output.
FP32_TOLERANCE = 1e-4
#: fp32 fallback when PyTorch fp32 itself is far from float64 (see :func:`_parity`): ONNX may be
#: this many times farther from float64 than PyTorch fp32 is. Measured ratios: up to 2.6 on the
#: check inputs, 8.6 on other random images.
FP32_NOISE_FACTOR = 10.0
#: fp16 graphs against float32 PyTorch: max abs difference <= FP16_TOLERANCE * max(1, max|ref|)
#: on every output. Measured on the goldens: 3e-3 on the frame, 1.5e-3 on the encoder features,
#: 1e-6 on keypoints (those stay float32); 2e-2 is about 5/255 on the frame.
FP16_TOLERANCE = 2e-2
PRECISIONS = ("fp32", "fp16")
GRAPHS = (AVATAR_GRAPH, FRAME_GRAPH)
# Modules whose source defines the exported graphs: their bytes are part of the cache key.
_GRAPH_SOURCES = (
    "blocks.py",
    "config.py",
    "dense_motion.py",
    "generator.py",
    "graphs.py",
    "iospec.py",
    "keypoint_detector.py",
    "model.py",
    "motion.py",
    "onnx_export.py",
)


class ExportError(UserError):
    """An export failed or produced a graph that does not match PyTorch."""


@dataclass(frozen=True)
class GraphReport:
    """What the export of one graph checked."""

    graph: str  # "avatar" or "frame"
    path: Path  # the ONNX file
    precision: str  # fp32 or fp16 inside the graph
    max_abs_error: dict[str, float] = field(default_factory=dict)  # per output, vs PyTorch fp32
    tolerance: dict[str, float] = field(default_factory=dict)  # the bound each was checked with
    parity_checked: bool = False  # False when onnxruntime is not installed


@dataclass(frozen=True)
class ExportResult:
    """The exported graphs of one model, resolution, batch size and precision."""

    io: ModelIO  # the I/O spec the files follow
    precision: str  # fp32 or fp16
    graphs: dict[str, GraphReport]  # by graph name

    @property
    def paths(self) -> dict[str, Path]:
        return {name: report.path for name, report in self.graphs.items()}


# --- mixed precision --------------------------------------------------------------------------


class HalfPrecision(nn.Module):
    """Runs ``module`` in fp16 inside a float32 network.

    ``cast_input`` converts the incoming tensor to fp16 (the first module of an fp16 run),
    ``cast_output`` converts the result back to float32 (the last one); modules in between
    pass fp16 tensors along without casts.
    """

    def __init__(self, module: nn.Module, cast_input: bool = True, cast_output: bool = True):
        super().__init__()
        self.module = module.half()
        self.cast_input = cast_input
        self.cast_output = cast_output

    def forward(self, x: Tensor) -> Tensor:
        if self.cast_input:
            x = x.half()
        y = self.module(x)
        return y.float() if self.cast_output else y


def mixed_precision_model(model: FOMM) -> FOMM:
    """A copy of ``model`` whose heavy convolution stacks run in fp16 (see the module doc).

    Inputs and outputs stay float32; keypoints and motion math stay float32. The wrappers sit
    inside :class:`~export.model.FOMM`, so its eval-mode lock covers them.
    """
    mixed = copy.deepcopy(model).float().eval()
    gen = mixed.generator
    down = list(gen.down_blocks)
    if down:
        gen.first = HalfPrecision(gen.first, cast_input=True, cast_output=False)
        for block in down[:-1]:
            block.half()
        gen.down_blocks[len(down) - 1] = HalfPrecision(down[-1], cast_input=False)
    else:
        gen.first = HalfPrecision(gen.first)
    up = list(gen.up_blocks)
    gen.bottleneck = HalfPrecision(gen.bottleneck, cast_input=True, cast_output=False)
    for block in up:
        block.half()
    # ``final`` follows the last up block: it ends the fp16 run (sigmoid is float32).
    gen.final = HalfPrecision(gen.final, cast_input=False, cast_output=True)
    dense = gen.dense_motion_network
    dense.hourglass = HalfPrecision(dense.hourglass)
    return mixed.eval()  # the new wrappers too


def graph_module(model: FOMM, io: ModelIO, graph: str, precision: str = "fp32") -> nn.Module:
    """The eval-mode module of ``graph`` ("avatar" or "frame") at ``precision``."""
    _check_precision(precision)
    if graph not in GRAPHS:
        raise ExportError(f"no graph named '{graph}': expected one of {GRAPHS}")
    net = mixed_precision_model(model) if precision == "fp16" else model
    module = AvatarGraph(net, io) if graph == AVATAR_GRAPH else FrameGraph(net, io)
    return module.eval()


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision '{precision}': expected one of {PRECISIONS}")


# --- golden-like inputs -----------------------------------------------------------------------


def _smooth_images(generator: torch.Generator, shape: Sequence[int]) -> Tensor:
    """Photo-like random images: low-frequency colour blobs plus a little noise, in [0, 1]."""
    b, c, h, w = shape
    coarse = torch.rand((b, c, max(2, h // 16), max(2, w // 16)), generator=generator)
    image = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    noise = torch.rand((b, c, h, w), generator=generator) - 0.5
    return (image + 0.05 * noise).clamp(0, 1)


def sample_inputs(model: FOMM, io: ModelIO, seed: int = 0) -> dict[str, tuple[Tensor, ...]]:
    """Golden-like inputs of both graphs, in spec order.

    The avatar, driving and reference frames are smooth random images; the avatar state is
    what the float32 avatar graph computes; the motion transfer is the relative motion from
    the reference frame's keypoints to the avatar's (adapt-scale on), as in the live loop,
    with a small jacobian offset.
    """
    generator = torch.Generator().manual_seed(seed)
    shape = io.avatar.inputs[0].shape
    avatar, driving, reference = (_smooth_images(generator, shape) for _ in range(3))
    model = model.float().eval()
    with torch.inference_mode():
        state = AvatarGraph(model, io)(avatar)
        ref_kp, ref_jac = model.kp_detector(reference)
    src_kp = state[2]
    src_jac = state[3] if io.jacobian else None
    motion = relative_motion(
        src_kp.numpy(),
        None if src_jac is None else src_jac.numpy(),
        ref_kp.numpy(),
        None if ref_jac is None else ref_jac.numpy(),
        adapt_scale=True,
    )
    motion_inputs = [torch.from_numpy(motion.scale), torch.from_numpy(motion.offset)]
    if io.jacobian and motion.jacobian is not None:
        motion_inputs.append(torch.from_numpy(motion.jacobian))
        # Non-zero (as while smoothing), so a check of the exported graph sees the addition.
        offset = 0.05 * torch.randn(motion.jacobian.shape, generator=generator)
        motion_inputs.append(offset.to(torch.float32))
    frame = (driving, *(t.clone() for t in state), *motion_inputs)
    if len(frame) != len(io.frame.inputs):
        raise ExportError(
            f"internal error: built {len(frame)} frame inputs, the I/O spec has "
            f"{len(io.frame.inputs)}"
        )
    return {AVATAR_GRAPH: (avatar,), FRAME_GRAPH: frame}


# --- export -----------------------------------------------------------------------------------


def model_slug(config: ModelConfig) -> str:
    """The config's name, file-name safe and without a .yaml suffix."""
    stem = re.sub(r"\.ya?ml$", "", Path(config.name).name)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "model"


def onnx_filename(config: ModelConfig, io: ModelIO, graph: str, precision: str) -> str:
    """``fomm-<config>-<res>px-b<batch>-<precision>.<graph>.onnx`` (graph as in the I/O spec)."""
    return f"fomm-{model_slug(config)}-{io.resolution}px-b{io.batch}-{precision}.{graph}.onnx"


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter (missing torchvision ops, optimizer passes, deprecation
    notes): export problems surface as exceptions."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _to_onnx(module: nn.Module, inputs: tuple[Tensor, ...], spec: GraphSpec):
    """Export ``module`` with the dynamo exporter; return the in-memory ModelProto."""
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                module,
                inputs,
                dynamo=True,
                input_names=spec.input_names,
                output_names=spec.output_names,
                opset_version=OPSET,
                optimize=True,
                verbose=False,
                external_data=False,
            )
    except Exception as exc:
        raise ExportError(
            f"torch.onnx.export failed for the {spec.name} graph: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}\nRun with --backend torch meanwhile. "
            "This is a bug in the exportable graph or an exporter incompatibility (torch "
            f"{torch.__version__}), unless your --config is one this project does not support; "
            "please report it with this message and the config."
        ) from exc
    if program is None:
        raise ExportError(f"torch.onnx.export returned no program for the {spec.name} graph")
    return program.model_proto


def _onnx_shape(value_info) -> tuple[int | str, ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


def check_interface(proto, spec: GraphSpec) -> None:
    """Raise ExportError unless ``proto``'s inputs/outputs are exactly ``spec``'s, in order,
    float32 with static shapes, and its opset is at least :data:`OPSET`."""
    import onnx

    problems = []
    opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    if opsets.get("ai.onnx", 0) < OPSET:
        problems.append(f"opset {opsets.get('ai.onnx')} < {OPSET}")
    for kind, have, want in (
        ("input", list(proto.graph.input), spec.inputs),
        ("output", list(proto.graph.output), spec.outputs),
    ):
        names = [v.name for v in have]
        if names != [t.name for t in want]:
            problems.append(f"{kind}s are {names}, expected {[t.name for t in want]}")
            continue
        for value, tensor in zip(have, want, strict=True):
            elem = value.type.tensor_type.elem_type
            if elem != onnx.TensorProto.FLOAT:
                problems.append(f"{kind} '{value.name}' has ONNX type {elem}, expected float32")
            shape = _onnx_shape(value)
            if shape != tensor.shape:
                problems.append(f"{kind} '{value.name}' has shape {shape}, expected {tensor.shape}")
    if problems:
        raise ExportError(
            f"the exported {spec.name} graph does not match the I/O spec: " + "; ".join(problems)
        )


def _load_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def _parity(
    path: Path,
    model: FOMM,
    io: ModelIO,
    spec: GraphSpec,
    inputs: tuple[Tensor, ...],
    precision: str,
) -> tuple[dict[str, float], dict[str, float], bool]:
    """Run ``path`` with ONNX Runtime (CPU) and compare with PyTorch; return the max abs
    error and the bound of every output, and whether the check ran (onnxruntime installed).

    fp32: |ONNX - PyTorch fp32| <= FP32_TOLERANCE. Both are float32, and a network whose
    random weights amplify rounding (the goldens: keypoint softmax logits of +-200, perturbed
    batch-norm statistics) can put two correct float32 implementations 3e-4 apart on random
    images (measured; 1.5e-5 on the golden photos). For an output over the bound, the check
    falls back to the float64 PyTorch result: ONNX must be within
    max(FP32_TOLERANCE, FP32_NOISE_FACTOR * |PyTorch fp32 - float64|) of it, i.e. about as
    accurate as PyTorch itself. A wrong op or warp shows up as 1e-2 or worse either way.

    fp16: |ONNX - PyTorch fp32| <= FP16_TOLERANCE * max(1, max |PyTorch|).
    """
    ort = _load_onnxruntime()
    if ort is None:
        log.warning(
            "onnxruntime is not installed: the %s graph was checked by onnx.checker only, not "
            "against PyTorch (pip install 'avatarcam[cpu]' to enable the parity check)",
            spec.name,
        )
        return {}, {}, False
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {name: t.numpy() for name, t in zip(spec.input_names, inputs, strict=True)}
    outputs = dict(zip(spec.output_names, session.run(spec.output_names, feeds), strict=True))
    with torch.inference_mode():
        ref32 = graph_module(model, io, spec.name, "fp32")(*inputs)
    reference = {n: t.numpy() for n, t in zip(spec.output_names, ref32, strict=True)}
    errors = {n: _max_abs(outputs[n], reference[n]) for n in spec.output_names}
    if precision == "fp16":
        bounds = {
            n: FP16_TOLERANCE * max(1.0, float(np.abs(reference[n]).max()))
            for n in spec.output_names
        }
        return errors, bounds, True
    bounds = dict.fromkeys(spec.output_names, FP32_TOLERANCE)
    over = [n for n in spec.output_names if not errors[n] <= FP32_TOLERANCE]
    if over:
        model64 = copy.deepcopy(model).double()
        with torch.inference_mode():
            ref64 = graph_module(model64, io, spec.name, "fp32")(*(t.double() for t in inputs))
        exact = {n: t.numpy() for n, t in zip(spec.output_names, ref64, strict=True)}
        for n in over:
            noise = _max_abs(reference[n], exact[n])
            bounds[n] = max(FP32_TOLERANCE, FP32_NOISE_FACTOR * noise)
            float32_gap, errors[n] = errors[n], _max_abs(outputs[n], exact[n])
            _say_float64_check(spec.name, n, float32_gap, errors[n], noise, bounds[n])
    return errors, bounds, True


def _say_float64_check(
    graph: str, output: str, gap: float, error: float, noise: float, bound: float
) -> None:
    """Explain the float64 comparison: fine (info), or the export is wrong (warning)."""
    compared = (
        f"ONNX export check, {graph} graph, output '{output}': the exported graph and PyTorch, "
        f"both in float32, differ by up to {gap:.2g} (more than {FP32_TOLERANCE:.0e}), so both "
        f"were compared with PyTorch in float64: the export is {error:.2g} from it, PyTorch's "
        f"own float32 result {noise:.2g}"
    )
    if error <= bound:
        log.info(
            "%s. The export is about as exact as PyTorch itself (float32 rounding that these "
            "weights amplify): nothing is wrong.",
            compared,
        )
    else:
        log.warning(
            "%s, more than the %.2g allowed: the exported graph computes something else.",
            compared,
            bound,
        )


def export_graph(
    model: FOMM,
    io: ModelIO,
    graph: str,
    path: str | Path,
    precision: str = "fp32",
    verify: bool = True,
    seed: int = 0,
) -> GraphReport:
    """Export one graph of ``model`` to ``path`` and check it (see the module doc).

    The file appears at ``path`` only once every check passed; a failed export leaves nothing.
    """
    import onnx

    _check_precision(precision)
    path = Path(path)
    spec = io.graph(graph)
    model = model.float().eval()
    inputs = sample_inputs(model, io, seed)[graph]
    module = graph_module(model, io, graph, precision)
    log.info("exporting the %s graph (%s) to %s", graph, precision, path)
    proto = _to_onnx(module, inputs, spec)
    check_interface(proto, spec)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the exported {graph} graph: {exc}") from exc
    data = proto.SerializeToString()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        errors: dict[str, float] = {}
        bounds: dict[str, float] = {}
        checked = False
        if verify:
            errors, bounds, checked = _parity(tmp, model, io, spec, inputs, precision)
            failed = {n: e for n, e in errors.items() if not e <= bounds[n]}
            if failed:
                detail = ", ".join(f"{n}: {e:.3g} > {bounds[n]:.3g}" for n, e in failed.items())
                raise ExportError(
                    f"the exported {graph} graph ({precision}) does not match PyTorch (max abs "
                    f"difference {detail}), so it was deleted rather than used. Run with "
                    "--backend torch meanwhile. With an official checkpoint this is a bug in "
                    "the export or in ONNX Runtime: please report it with this message. With "
                    "a checkpoint of your own, check its weights first: values so large that "
                    "float32 loses their precision make any export differ."
                )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return GraphReport(graph, path, precision, errors, bounds, checked)


def export_onnx(
    model: FOMM,
    output_dir: str | Path,
    resolution: int | None = None,
    batch: int = 1,
    precision: str = "fp32",
    graphs: Sequence[str] = GRAPHS,
    verify: bool = True,
    filenames: Mapping[str, str] | None = None,
) -> ExportResult:
    """Export ``graphs`` of ``model`` at ``resolution`` (default: the config's) and ``batch``
    to ``output_dir``, each checked (see :func:`export_graph`). ``filenames`` overrides the
    default names of :func:`onnx_filename`, by graph."""
    _check_precision(precision)
    if batch < 1:
        raise ExportError(f"batch must be at least 1, got {batch}")
    io = model_io(model.config, resolution, batch)
    output_dir = Path(output_dir)
    reports = {}
    for graph in graphs:
        if graph not in GRAPHS:
            raise ExportError(f"unknown graph '{graph}': expected one of {GRAPHS}")
        name = (filenames or {}).get(graph) or onnx_filename(model.config, io, graph, precision)
        reports[graph] = export_graph(model, io, graph, output_dir / name, precision, verify)
    return ExportResult(io, precision, reports)


def export_fingerprint() -> dict[str, str]:
    """Everything besides the model that determines the exported files: exporter and
    dependency versions, and a digest of the source files that define the graphs."""
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    source = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in _GRAPH_SOURCES:
        source.update(name.encode())
        source.update((here / name).read_bytes())
    return {
        "export_format": str(EXPORT_FORMAT),
        "opset": str(OPSET),
        "exporter": "torch.onnx.export(dynamo=True)",
        "avatarcam": version("avatarcam"),
        "torch": torch.__version__,
        "onnx": version("onnx"),
        "onnxscript": version("onnxscript"),
        "graph_sources": source.hexdigest(),
    }


def require_onnx() -> None:
    """Raise a MissingDependencyError unless the onnx package is importable."""
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "exporting to ONNX needs the Python packages 'onnx' and 'onnxscript', which are "
            "dependencies of avatarcam: reinstall it with  pip install avatarcam"
        ) from exc
