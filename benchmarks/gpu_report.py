"""The reports of ``benchmarks.gpu_check``: Markdown for the results folder (and the README) and
a short table for the terminal."""

from __future__ import annotations

import math
from typing import Any


def _num(value: float | None, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, spec)


def _where(results: dict[str, Any]) -> str:
    gpu = results.get("gpu")
    if gpu:
        return f"{gpu['name']} ({gpu['memory_gib']} GiB, {gpu['capability']})"
    return f"{results['machine']['cpu']} ({results['device']})"


def _versions(results: dict[str, Any]) -> str:
    v = results["versions"]
    parts = [f"torch {v['torch']} (CUDA {v['cuda'] or '-'}, cuDNN {v['cudnn'] or '-'})"]
    for name in ("onnxruntime", "tensorrt", "onnx"):
        if v.get(name):
            label = v["onnxruntime_distribution"] if name == "onnxruntime" else name
            parts.append(f"{label} {v[name]}")
    return ", ".join(parts)


def _verdict(results: dict[str, Any]) -> str:
    count = len(results["problems"])
    verdict = "all results right" if results["ok"] else f"{count} problem(s)"
    rows = [*results["contract"], *results["latency"]]
    late = sum("time budget" in (row.get("reason") or "") for row in rows)
    if late:
        verdict += f"; {late} check(s) not run for lack of time (raise --budget-s)"
    if results.get("stopped"):
        verdict += (
            f"; {results['stopped']}, {len(results.get('not_reached', []))} step(s) not reached"
        )
    return verdict


def _latency_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    batches = results["settings"]["batches"]
    cells: dict[str, dict[int, dict[str, Any]]] = {}
    for cell in results["latency"]:
        cells.setdefault(cell["variant"], {})[cell["batch"]] = cell
    first = batches[0]
    header = [
        "variant",
        f"p50 ms b{first}",
        f"p99 ms b{first}",
        *(f"frames/s b{b}" for b in batches),
        f"speedup b{first}",
        "max abs vs baseline",
    ]
    rows = []
    for variant, by_batch in cells.items():
        base = by_batch.get(first, {})
        ok = base.get("status") == "ok"
        fps = []
        for batch in batches:
            cell = by_batch.get(batch, {})
            status = cell.get("status")
            fps.append(_num(cell["fps"], ".1f") if status == "ok" else (status or "-"))
        worst = max(
            (c["max_abs_vs_baseline"] for c in by_batch.values() if "max_abs_vs_baseline" in c),
            default=None,
        )
        rows.append(
            [
                variant,
                _num(base.get("p50_ms"), ".2f") if ok else "-",
                _num(base.get("p99_ms"), ".2f") if ok else "-",
                *fps,
                _num(base.get("speedup"), ".2f") + "x" if ok and base.get("speedup") else "-",
                _num(worst, ".1e"),
            ]
        )
    return header, rows


def _evidence(evidence: dict[str, Any] | None) -> str:
    """``12/40 half`` (half-precision kernels or layers of all), or "-"."""
    if not evidence:
        return "-"
    return f"{evidence['half']}/{evidence['total']} half" + ("" if evidence["ran_fp16"] else " (!)")


def _contract_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for row in results["contract"]:
        passed = row["status"] in ("pass", "fail") and "max_abs" in row
        rows.append(
            [
                row["golden"],
                row["variant"],
                row["status"],
                _num(row.get("max_abs"), ".2e") if passed else "-",
                _num(row.get("mean_abs"), ".2e") if passed else "-",
                _num(row.get("psnr_db"), ".1f") if passed else "-",
                _num(row.get("psnr_vs_fp32_db"), ".1f"),
                _num(row.get("vs_eager_max_abs"), ".1e"),
                (row.get("reason") or row.get("engine") or "").replace("|", "/"),
                _evidence(row.get("fp16_evidence")),
            ]
        )
    return rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    settings = results["settings"]
    tol = results["tolerances"]
    lines = [
        f"# GPU check: {_where(results)}",
        "",
        f"{results['timestamp']}, {results['duration_s']} s: `{results['command']}`",
        "",
        f"Versions: {_versions(results)}.",
        "",
        f"**Verdict: {_verdict(results)}.**",
        "",
        "## Golden contract",
        "",
        f"Max and mean absolute error against the reference implementation's arrays (frames "
        f"in [0, 1], keypoints in [-1, 1]); bounds: fp32 max {tol['fp32_max_abs']:.0e}"
        + (f" and mean {tol['fp32_mean_abs']:.0e}" if tol.get("fp32_mean_abs") else "")
        + f", fp16 "
        f"max {tol['fp16_max_abs']:.3f} and mean {tol['fp16_mean_abs']:.4f}. PSNR of the "
        "frames against the reference; fp16 PSNR also against the same backend's fp32 frames; "
        "CUDA-graph and compiled modes also against their eager run. fp16 kernels: the "
        "half-precision CUDA kernels (torch), float16 nodes (ONNX Runtime) or layers (TensorRT "
        "inspector) of all; an fp16 row with none fails.",
        "",
        *_markdown_table(
            [
                "golden",
                "variant",
                "status",
                "max abs",
                "mean abs (frames)",
                "PSNR dB",
                "fp16 PSNR vs fp32 dB",
                "vs eager max abs",
                "engine or reason",
                "fp16 kernels",
            ],
            _contract_rows(results),
        ),
        "",
        f"## Latency: {settings['latency_golden']} ({settings['resolution']}x"
        f"{settings['resolution']})",
        "",
        "One call = one batch through Engine.animate (host frames in, host prediction out), "
        "synchronized; baseline = the original FOMM demo loop in eager PyTorch fp32 (unsplit "
        "generator, no TF32), measured in this run. frames/s = 1000 x batch / p50; speedup = "
        "baseline p50 / p50.",
        "",
        *_markdown_table(*_latency_table(results)),
        "",
    ]
    skipped = [c for c in results["latency"] if c["status"] not in ("ok",)]
    if skipped:
        lines += ["Latency cells not measured or wrong:", ""]
        lines += [
            f"- {c['variant']} batch {c['batch']}: {c['status']}: {c.get('reason', '')}"
            for c in skipped
        ]
        lines.append("")
    if results["problems"]:
        lines += ["## Problems", ""] + [f"- {p}" for p in results["problems"]] + [""]
    if results.get("not_reached"):
        title = "Stopped" if results.get("stopped") else "Not reached yet (run in progress)"
        lines += [f"## {title}: steps not reached", ""]
        lines += [f"- {name}" for name in results["not_reached"]] + [""]
    return "\n".join(lines)


def _text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in [header, *rows]
    ]


def summary(results: dict[str, Any]) -> str:
    """A short table for the terminal: the contract per variant and golden, then latency."""
    goldens = results["settings"]["goldens"]
    by_variant: dict[str, dict[str, dict[str, Any]]] = {}
    for row in results["contract"]:
        by_variant.setdefault(row["variant"], {})[row["golden"]] = row
    rows = []
    for variant, by_golden in by_variant.items():
        cells = []
        for golden in goldens:
            row = by_golden.get(golden, {})
            status = row.get("status", "-")
            cells.append(
                f"{status} {_num(row.get('max_abs'), '.1e')}" if "max_abs" in row else status
            )
        rows.append([variant, *cells])
    header, latency = _latency_table(results)
    lines = [
        f"GPU check on {_where(results)}: {_verdict(results)}",
        "contract (status, max abs error):",
        *_text_table(["variant", *goldens], rows),
        f"latency ({results['settings']['latency_golden']}):",
        *_text_table(header[:-1], [row[:-1] for row in latency]),
    ]
    lines += [f"problem: {p}" for p in results["problems"]]
    return "\n".join(lines)
