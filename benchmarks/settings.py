"""What one benchmark run measures: a frozen configuration the command line maps onto."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Where results go unless --out says otherwise.
DEFAULT_OUT_DIR = Path("benchmark-results")

#: Version of the JSON layout; --compare refuses files of another major version.
SCHEMA = "avatarcam.benchmarks/1"


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run."""

    backends: tuple[str, ...]  # engine backends to measure, e.g. ("torch", "onnxruntime")
    precisions: tuple[str, ...]  # precisions inside the graph: "fp32", "fp16", "int8"
    devices: tuple[str, ...]  # "cpu", "cuda" or "cuda:N"; resolved, never "auto"
    batches: tuple[int, ...]  # frames per call, ascending; the smallest also gets stage timing
    warmup: int  # untimed calls before the timed ones, per row
    iterations: int  # timed calls per row
    config: str  # model config: a preset name (vox-256) or a FOMM YAML path
    checkpoint: Path | None  # FOMM checkpoint; None: random weights with the config's shapes
    resolution: int | None  # frame size; None: the config's own
    seed: int  # seed of the random weights (and of synthetic inputs)
    source: Path | None  # avatar image; None: the shared sample avatar, else synthetic
    driving: Path | None  # driving GIF, image folder or image; None: shared sample, else synthetic
    max_frames: int  # distinct driving frames cycled through (bounded by warmup + iterations)
    baseline_device: str  # device of the unsplit eager baseline: "cpu", "cuda" or "cuda:N"
    stages: bool  # time the keypoint and generator stages separately where the backend allows
    cuda_graph: bool  # ask engines to capture the frame call in a CUDA graph
    cache_dir: Path | None  # engine artifact cache (ONNX/TensorRT); None: the engines' default
    out_dir: Path  # folder for the JSON, Markdown and PNG files
    name: str  # file stem of this run's outputs in out_dir
    plot: bool  # write the PNG plot (needs matplotlib, the `bench` extra)
    command: str  # the command line as typed, recorded in the results
    pipeline: Path | None = None  # video for the end-to-end live-loop benchmark; None: skip it
    offline: Path | None = None  # video for the offline-command rows (run_live.py); None: skip
    offline_variants: tuple[tuple[str, str], ...] = ()  # (backend, precision); first = reference
    offline_rounds: int = 2  # interleaved timed runs of each offline variant
