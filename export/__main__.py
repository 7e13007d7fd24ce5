"""``python -m export``: export a FOMM checkpoint to checked ONNX files (and TensorRT engines).

Example::

    python -m export --checkpoint vox-adv-cpk.pth.tar --precision fp16 --output-dir exported
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .threads import passive_openmp

passive_openmp()  # OMP_WAIT_POLICY=PASSIVE before torch loads (export.threads)

from .errors import UserError  # noqa: E402
from .onnx_export import (  # noqa: E402
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    GRAPHS,
    OPSET,
    PRECISIONS,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export",
        description=(
            "Export the avatar and frame graphs of a FOMM checkpoint to ONNX (opset "
            f"{OPSET}, static shapes), check each file with onnx.checker and against PyTorch "
            f"with ONNX Runtime (max abs error {FP32_TOLERANCE:g} for fp32, "
            f"{FP16_TOLERANCE:g} x output scale for fp16), and optionally build TensorRT "
            "engines from them."
        ),
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="FOMM checkpoint (.pth.tar); default: vox-adv-cpk.pth.tar or vox-cpk.pth.tar in "
        "./checkpoints or the avatarcam checkpoint folder",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="download a missing checkpoint without asking (see the README's catalog)",
    )
    p.add_argument(
        "--allow-insecure-catalog",
        action="store_true",
        help="accept an $AVATARCAM_CATALOG fetched over plain http://",
    )
    p.add_argument(
        "--config",
        default=None,
        help="preset name (default vox-256) or the checkpoint's FOMM YAML config",
    )
    p.add_argument(
        "--resolution", type=int, default=None, help="frame size in pixels (default: config's)"
    )
    p.add_argument("--batch", type=int, default=1, help="frames per call (default 1)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32, or fp16 convolutions with float32 keypoints and I/O (default fp32)",
    )
    p.add_argument(
        "--graph",
        choices=(*GRAPHS, "all"),
        default="all",
        help="which graph to export (default all)",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        default=Path("exported"),
        help="folder for the files (default ./exported)",
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the ONNX Runtime parity check (onnx.checker still runs)",
    )
    p.add_argument(
        "--tensorrt",
        action="store_true",
        help="also build TensorRT engines (.engine) next to the ONNX files; needs an NVIDIA "
        "GPU and pip install 'avatarcam[gpu]'",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log each step")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    try:
        return _run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .config import load_config
    from .obtain import obtain_checkpoint
    from .onnx_export import export_onnx

    if args.tensorrt:
        from .tensorrt_build import import_tensorrt

        import_tensorrt()  # fail before a long export, with the install instructions
    choice = obtain_checkpoint(
        args.checkpoint,
        args.config,
        download=args.download,
        allow_insecure_catalog=args.allow_insecure_catalog,
    )
    checkpoint = choice.checkpoint
    config = load_config(choice.config, args.resolution)
    model = load_model(checkpoint, config)
    graphs = GRAPHS if args.graph == "all" else (args.graph,)
    print(
        f"exporting {checkpoint} ({config.name}, {config.resolution}px, batch {args.batch}, "
        f"{args.precision}) to {args.output_dir}/"
    )
    result = export_onnx(
        model,
        args.output_dir,
        config.resolution,
        args.batch,
        args.precision,
        graphs,
        verify=not args.no_verify,
    )
    for report in result.graphs.values():
        print(f"  {report.path}")
        if report.parity_checked:
            worst = max(report.max_abs_error, key=lambda n: report.max_abs_error[n])
            print(
                f"    parity vs PyTorch: max abs error {report.max_abs_error[worst]:.2e} "
                f"({worst}; bound {report.tolerance[worst]:.2e})"
            )
        elif not args.no_verify:
            print("    parity not checked: onnxruntime is not installed (avatarcam[cpu])")
    if args.tensorrt:
        from .tensorrt_build import BuildSettings, build_engine

        settings = BuildSettings(precision=args.precision)
        timing = args.output_dir / "tensorrt-timing.cache"
        for report in result.graphs.values():
            engine = report.path.with_suffix(".engine")
            build_engine(report.path, engine, settings, timing)
            print(f"  {engine}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
