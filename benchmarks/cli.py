"""``python -m benchmarks``: the command line, mapped onto :class:`BenchConfig` in one place."""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from engines import BACKENDS, PRECISIONS
from export.errors import UserError

from .errors import BenchmarkError
from .offline import parse_variants
from .settings import DEFAULT_OUT_DIR, BenchConfig

#: Backends a row can name, simplest first (``auto`` picks one of them, so it is not a row of
#: its own).
ROW_BACKENDS = tuple(b for b in reversed(BACKENDS) if b not in ("auto", "remote"))
#: Engine rows by default: each fixed precision (auto is one of them, per machine).
ROW_PRECISIONS = tuple(p for p in PRECISIONS if p != "auto")

EPILOG = """\
examples:
  python -m benchmarks                                   # every backend, vox-256, random weights
  python -m benchmarks --backends torch,onnxruntime --precisions fp32 \\
      --warmup 2 --iterations 15 --batches 1,4          # a few minutes on 2 CPU cores
  python -m benchmarks --checkpoint vox-adv-cpk.pth.tar --config vox-256
  python -m benchmarks --compare old.json               # run, then compare with old.json
  python -m benchmarks --compare old.json new.json      # compare two runs, no measurement
  python -m benchmarks --streams 1,2,4 --backends torch # many streams on a local avatar server
  python -m benchmarks --server ws://gpu-box:8765 --streams 1,2,4,8   # ... on a running one
  python -m benchmarks --precisions fp32,int8 --checkpoint CK   # int8 quality vs fp32
  python -m benchmarks --offline                        # also time run_live.py itself

Backends and precisions that cannot run here (no GPU, package missing) are listed with the
reason in the results instead of failing the run. Outputs go to --out: NAME.json, NAME.md and
NAME.png (the plot needs matplotlib: pip install 'avatarcam[bench]').
"""


def _names(text: str, allowed: Sequence[str], option: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise BenchmarkError(
            f"{option} {text!r}: unknown {', '.join(map(repr, unknown)) or 'empty list'}. "
            f"Expected a comma-separated list of {', '.join(allowed)}."
        )
    return names


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        values = []
    if not values or values[0] < 1:
        raise BenchmarkError(
            f"--batches {text!r} is not a list of positive whole numbers. Expected e.g. 1,4,16."
        )
    return tuple(values)


def _cuda_usable() -> bool:
    import torch

    if torch.cuda.is_available():
        return True
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def _device(name: str, option: str) -> str:
    valid = name == "cpu" or name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())
    if not valid:
        raise BenchmarkError(
            f"{option} {name!r} is not a device. Expected cpu, cuda, cuda:N or auto."
        )
    return name


def _devices(text: str) -> tuple[str, ...]:
    devices: list[str] = []
    for name in (n.strip() for n in text.split(",") if n.strip()):
        if name == "auto":
            devices += ["cpu", "cuda"] if _cuda_usable() else ["cpu"]
        else:
            devices.append(_device(name, "--devices"))
    if not devices:
        raise BenchmarkError("--devices is empty. Expected e.g. cpu, cuda or auto.")
    return tuple(dict.fromkeys(devices))


def _baseline_device(text: str) -> str:
    if text == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return _device(text, "--baseline-device")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure per-frame latency, per-stage time, batched throughput, peak memory "
        "and accuracy of every inference backend against the original eager PyTorch FOMM loop.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_argument_group("what to measure")
    what.add_argument(
        "--backends",
        default=",".join(ROW_BACKENDS),
        help=f"comma-separated engine backends (default: {','.join(ROW_BACKENDS)})",
    )
    what.add_argument(
        "--precisions",
        default=",".join(ROW_PRECISIONS),
        help=f"comma-separated precisions (default: {','.join(ROW_PRECISIONS)})",
    )
    what.add_argument(
        "--devices",
        default="auto",
        help="comma-separated devices: cpu, cuda, cuda:N, auto = cpu plus cuda when a GPU is "
        "usable (default: auto)",
    )
    what.add_argument(
        "--batches", default="1,4,16", help="frames per call, comma-separated (default: 1,4,16)"
    )
    what.add_argument("--warmup", type=int, default=3, help="untimed calls per row (default: 3)")
    what.add_argument(
        "--iterations", type=int, default=30, help="timed calls per row (default: 30)"
    )
    what.add_argument(
        "--no-stages",
        action="store_true",
        help="skip the per-stage timing of torch backends (saves one loop per torch row)",
    )
    what.add_argument(
        "--baseline-device",
        default="auto",
        help="device of the eager fp32 baseline: cpu, cuda, cuda:N or auto (default: auto = "
        "cuda when PyTorch sees a GPU)",
    )
    what.add_argument(
        "--cuda-graph",
        action="store_true",
        help="ask engines to capture frame calls in a CUDA graph",
    )
    model = parser.add_argument_group("model and inputs")
    model.add_argument(
        "--config",
        default="vox-256",
        help="preset name or FOMM YAML file (default: vox-256)",
    )
    model.add_argument(
        "--checkpoint",
        type=Path,
        help="FOMM checkpoint (.pth.tar); default: random weights with the config's shapes, "
        "He-normal with FOMM's identity jacobian head and batch-norm scales measured on the "
        "inputs, so int8 runs as on a trained network",
    )
    model.add_argument("--resolution", type=int, help="frame size (default: the config's, 256)")
    model.add_argument(
        "--seed", type=int, default=0, help="seed of random weights and synthetic frames"
    )
    model.add_argument(
        "--source",
        type=Path,
        help="avatar image (default: the shared sample avatar, else a synthetic image)",
    )
    model.add_argument(
        "--driving",
        type=Path,
        help="driving GIF, image folder or image (default: the shared sample clip, else "
        "synthetic frames)",
    )
    model.add_argument(
        "--max-frames", type=int, default=16, help="distinct driving frames to cycle (default: 16)"
    )
    model.add_argument(
        "--cache-dir", type=Path, help="engine artifact cache (default: the engines' own)"
    )
    what.add_argument(
        "--pipeline",
        nargs="?",
        const="sample",
        metavar="VIDEO",
        help="also run the end-to-end live loop (decode, face detection, crop, engine, "
        "compose, null virtual camera) on VIDEO played at its frame rate (default: the shared "
        "talking-head clip), once per backend at the first precision",
    )
    _add_streams_flags(parser)
    what.add_argument(
        "--offline",
        nargs="?",
        const="sample",
        metavar="VIDEO",
        help="also time the offline command itself (run_live.py VIDEO -> PNG folder, as a "
        "child process) for each --offline-variants, interleaved (default VIDEO: the shared "
        "talking-head clip)",
    )
    what.add_argument(
        "--offline-variants",
        default="torch:fp32,auto:fp32,auto:int8",
        help="BACKEND:PRECISION list for --offline; the first is the reference of the "
        "speed-ups (default: %(default)s)",
    )
    what.add_argument(
        "--offline-rounds",
        type=int,
        default=2,
        help="interleaved timed runs per offline variant (default: %(default)s)",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT_DIR,
        help=f"folder for the results (default: {DEFAULT_OUT_DIR}/)",
    )
    output.add_argument(
        "--name", help="file stem of the results (default: bench-YYYYmmdd-HHMMSS, UTC)"
    )
    output.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    output.add_argument(
        "--compare",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="OLD: run, then show the per-row change from OLD; OLD NEW: compare two results "
        "files without running",
    )
    return parser


def _add_streams_flags(parser: argparse.ArgumentParser) -> None:
    """Many streams on an avatar server (benchmarks.streams)."""
    group = parser.add_argument_group(
        "avatar server (many streams): with --streams, only this is measured, beside the local "
        "engine (the first of --backends); --iterations frames per stream, --warmup untimed"
    )
    group.add_argument(
        "--server",
        metavar="URL",
        default="local",
        help="ws://HOST:PORT of a running server, or local (default): start one here",
    )
    group.add_argument("--streams", help="stream counts, comma-separated, e.g. 1,2,4,8")
    group.add_argument("--server-token", help="the server's --token")
    group.add_argument("--transport", choices=("raw", "png", "jpeg"), default="png")
    group.add_argument("--jpeg-quality", type=int, default=90)
    group.add_argument("--replicas", type=int, default=1, help="local server replicas (1)")
    group.add_argument("--max-batch", type=int, default=4, help="local server max batch (4)")
    group.add_argument("--batch-wait-ms", type=float, default=2.0, help="local server (2 ms)")
    group.add_argument(
        "--hostile",
        type=int,
        default=0,
        help="also measure every point with this many hostile clients attacking (0)",
    )


def _streams_config(args: argparse.Namespace, argv: Sequence[str]):
    from .streams import StreamsConfig

    cfg = config_from_args(args, argv)
    return StreamsConfig(
        server=None if args.server == "local" else args.server,
        token=args.server_token,
        streams=_batches(args.streams),
        frames=cfg.iterations,
        warmup=cfg.warmup,
        transport=args.transport,
        jpeg_quality=args.jpeg_quality,
        config=cfg.config,
        checkpoint=cfg.checkpoint,
        resolution=cfg.resolution,
        seed=cfg.seed,
        cache_dir=cfg.cache_dir,
        backend=cfg.backends[0],
        device=cfg.devices[0],
        replicas=args.replicas,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        out_dir=cfg.out_dir,
        name=args.name or cfg.name.replace("bench-", "streams-", 1),
        plot=cfg.plot,
        command=cfg.command,
        pipeline=cfg.pipeline,
        hostile=args.hostile,
    )


def config_from_args(args: argparse.Namespace, argv: Sequence[str]) -> BenchConfig:
    """The one place where command-line options become a :class:`BenchConfig`."""
    if args.iterations < 1:
        raise BenchmarkError(f"--iterations {args.iterations}: expected at least 1 timed call.")
    if args.warmup < 0:
        raise BenchmarkError(f"--warmup {args.warmup}: expected 0 or more warm-up calls.")
    if args.offline_rounds < 1:
        raise BenchmarkError(f"--offline-rounds {args.offline_rounds}: expected at least 1.")
    if args.max_frames < 1:
        raise BenchmarkError(f"--max-frames {args.max_frames}: expected at least 1 frame.")
    name = args.name or dt.datetime.now(dt.timezone.utc).strftime("bench-%Y%m%d-%H%M%S")
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise BenchmarkError(
            f"--name {name!r} must be a plain file stem (no folders); use --out for the folder."
        )
    return BenchConfig(
        backends=_names(args.backends, ROW_BACKENDS, "--backends"),
        precisions=_names(args.precisions, PRECISIONS, "--precisions"),
        devices=_devices(args.devices),
        batches=_batches(args.batches),
        warmup=args.warmup,
        iterations=args.iterations,
        config=args.config,
        checkpoint=args.checkpoint,
        resolution=args.resolution,
        seed=args.seed,
        source=args.source,
        driving=args.driving,
        max_frames=args.max_frames,
        baseline_device=_baseline_device(args.baseline_device),
        stages=not args.no_stages,
        cuda_graph=args.cuda_graph,
        cache_dir=args.cache_dir,
        out_dir=args.out,
        name=name,
        plot=not args.no_plot,
        command="python -m benchmarks" + (" " + shlex.join(argv) if argv else ""),
        pipeline=_pipeline_video(args.pipeline),
        offline=_pipeline_video(args.offline, "--offline"),
        offline_variants=parse_variants(args.offline_variants),
        offline_rounds=args.offline_rounds,
    )


def _pipeline_video(value: str | None, option: str = "--pipeline") -> Path | None:
    if value is None:
        return None
    from .inputs import SAMPLE_DRIVING, shared_dir

    path = shared_dir() / SAMPLE_DRIVING if value == "sample" else Path(value)
    if not path.exists():
        raise BenchmarkError(
            f"{option} {path}: no such video. Pass a video file, GIF or folder of frames, "
            "or put the shared test media beside the checkout."
        )
    return path


def _compare_only(old_path: Path, new_path: Path, out_dir: Path) -> int:
    from .compare import compare_markdown, compare_text
    from .report import read_json

    old, new = read_json(old_path), read_json(new_path)
    print(compare_text(old, new, str(old_path), str(new_path)))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"compare-{old_path.stem}-vs-{new_path.stem}.md"
    path.write_text(compare_markdown(old, new, str(old_path), str(new_path)), encoding="utf-8")
    print(f"\nwrote {path}")
    return 0


def _run(cfg: BenchConfig, old_path: Path | None) -> int:
    from .report import markdown_report, read_json, terminal_report, write_json
    from .runner import Benchmark

    old = read_json(old_path) if old_path else None  # fail before measuring, not after
    benchmark = Benchmark(cfg)
    results = benchmark.run()
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    stem = cfg.out_dir / cfg.name
    written = [stem.with_suffix(".json"), stem.with_suffix(".md")]
    write_json(results, written[0])
    written[1].write_text(markdown_report(results), encoding="utf-8")
    print(terminal_report(results))
    plot_error: UserError | None = None
    if cfg.plot:
        from .plot import write_plot

        if results["rows"]:
            try:
                write_plot(results, stem.with_suffix(".png"))
                written.append(stem.with_suffix(".png"))
            except UserError as exc:  # matplotlib missing: the numbers are still written
                plot_error = exc
    if old is not None and old_path is not None:
        from .compare import compare_markdown, compare_text

        print()
        print(compare_text(old, results, str(old_path), str(written[0])))
        compare_path = cfg.out_dir / f"{cfg.name}-vs-{old_path.stem}.md"
        compare_path.write_text(
            compare_markdown(old, results, str(old_path), str(written[0])), encoding="utf-8"
        )
        written.append(compare_path)
    print("\nwrote " + ", ".join(str(p) for p in written))
    if plot_error is not None:
        print(f"error: {plot_error}", file=sys.stderr)
        return plot_error.exit_code
    if benchmark.failed:
        print(
            "error: some variants failed with an unexpected error (see 'not measured' above); "
            "this is a bug in that backend, please report it with the JSON file.",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: sys.argv[1:]); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        compare = args.compare or []
        if len(compare) > 2:
            raise BenchmarkError(
                f"--compare takes one or two results files, got {len(compare)}: OLD to run and "
                "compare with OLD, or OLD NEW to compare two earlier runs."
            )
        if len(compare) == 2:
            return _compare_only(compare[0], compare[1], args.out)
        if args.streams:
            from .streams import run as run_streams

            return run_streams(_streams_config(args, argv))
        cfg = config_from_args(args, argv)
        return _run(cfg, compare[0] if compare else None)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
