"""Results as a terminal table, a Markdown file and a JSON file."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import BenchmarkError
from .settings import SCHEMA

HEADERS = (
    "row",
    "batch",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "FPS",
    "speed-up",
    "kp p50 ms",
    "gen p50 ms",
    "wm p50 ms",
    "max abs err",
    "mean abs err",
    "host peak MB",
    "GPU peak MB",
    "load 1m",
    "CPU got",
    "contended",
)


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _err(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def _num(value: float | None, spec: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    return format(value, spec)


def _load(contention: dict[str, Any] | None) -> str:
    if not contention or contention.get("load_1m_start") is None:
        return "-"
    return f"{contention['load_1m_start']:.1f}/{contention['load_1m_end']:.1f}"


def _cpu_got(contention: dict[str, Any] | None) -> str:
    """Cores this process got during the row and its share of the busy CPU time."""
    if not contention or contention.get("row_own_cores") is None:
        return "-"
    share = contention.get("row_share")
    text = f"{contention['row_own_cores']:.2f}"
    return text + (f" ({share:.0%})" if share is not None else "")


def _contended(contention: dict[str, Any] | None) -> str:
    if not contention or "sample_flags" not in contention:
        return "-"
    text = f"{contention['samples_contended']}/{len(contention['sample_flags'])}"
    return text + (" rep" if contention.get("repeated") else "")


def row_label(row: dict[str, Any]) -> str:
    """E.g. ``onnxruntime fp16 cuda`` or ``baseline fp32 cpu``."""
    return f"{row['label']} {row['precision']} {row['device']}"


def table_cells(results: dict[str, Any]) -> list[list[str]]:
    """One list of cells per row, in HEADERS order."""
    cells = []
    for row in results["rows"]:
        latency = row["latency_ms"]
        frame = latency["frame"]
        memory = row["memory"]
        keypoints, generator = latency.get("keypoints"), latency.get("generator")
        marking = latency.get("watermark")
        cells.append(
            [
                row_label(row),
                str(row["batch"]),
                _ms(frame["p50"]),
                _ms(frame["p90"]),
                _ms(frame["p99"]),
                _ms(frame["max"]),
                _num(row["fps"], ".2f"),
                "-" if row["speedup"] is None else f"{row['speedup']:.2f}x",
                _ms(keypoints["p50"]) if keypoints else "-",
                _ms(generator["p50"]) if generator else "-",
                _ms(marking["p50"]) if marking else "-",
                _err(row["error"]["max_abs"]),
                _err(row["error"]["mean_abs"]),
                _num(memory.get("host_peak_rss_mb"), ".0f"),
                _num(memory.get("device_peak_mb"), ".0f"),
                _load(row.get("contention")),
                _cpu_got(row.get("contention")),
                _contended(row.get("contention")),
            ]
        )
    return cells


def text_table(headers: Sequence[str], cells: list[list[str]]) -> str:
    """An aligned plain-text table: text columns left, numbers right."""
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def markdown_table(headers: Sequence[str], cells: list[list[str]]) -> str:
    """A GitHub Markdown table: text columns left-aligned, numbers right-aligned."""
    align = ["---" if i == 0 else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in cells]
    return "\n".join(lines)


def one_line(text: str) -> str:
    """A multi-line message on one line (engine errors list their reasons on several)."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def skipped_lines(results: dict[str, Any]) -> list[str]:
    """One line per variant that could not be measured, with the reason."""
    lines = []
    for item in results["skipped"]:
        reason = one_line(item["reason"] or "") or "no reason given"
        lines.append(
            f"{item['label']} {item['precision']} {item['device']} batch {item['batch']}: "
            f"{item['status']} - {reason}"
        )
    return lines


def terminal_report(results: dict[str, Any]) -> str:
    """The table and the skipped variants, for the terminal."""
    text = [text_table(HEADERS, table_cells(results))]
    skipped = skipped_lines(results)
    if skipped:
        text.append("\nnot measured:")
        text += [f"  {line}" for line in skipped]
    return "\n".join(text)


def cpu_isa_text(machine: dict[str, Any]) -> str:
    """E.g. ``AVX-512 VNNI class: avx2, avx512f, avx512_vnni``; results files written before
    the extensions were recorded say so."""
    extensions = machine.get("cpu_extensions")
    if extensions is None:
        return "vector extensions not recorded"
    return f"{machine.get('isa_class', '?')} class: {', '.join(extensions) or 'none found'}"


def markdown_report(results: dict[str, Any]) -> str:
    """The results as a Markdown document."""
    machine, versions, settings = results["machine"], results["versions"], results["settings"]
    weights = settings["weights"]
    weights_text = (
        f"random (seed {weights['seed']}, {weights.get('init', 'pytorch-default')} init)"
        if weights["kind"] == "random"
        else weights["path"]
    )
    inputs = settings["inputs"]
    lib = ", ".join(
        f"{name} {value}"
        for name, value in versions.items()
        if value and name != "onnxruntime_distribution"
    )
    if versions.get("onnxruntime_distribution") == "onnxruntime-gpu":
        lib += " (onnxruntime-gpu)"
    lines = [
        f"# avatarcam benchmark, {results['timestamp']}",
        "",
        f"- Command: `{results['command']}`",
        f"- Machine: {machine['cpu']} ({cpu_isa_text(machine)}), "
        f"{machine['usable_cores']} usable cores "
        f"({machine['torch_threads']} torch threads), GPU: {machine['gpu'] or 'none'}; "
        f"load average (1 min) {machine['load_average_1m_at_start']} at start, "
        f"{machine.get('load_average_1m_at_end')} at the end",
        f"- Versions: {lib}",
        f"- Model: {settings['model']} at {settings['resolution']}x{settings['resolution']}, "
        f"weights: {weights_text}",
        f"- Inputs: {inputs['kind']} ({inputs['frames_cycled']} driving frames cycled; "
        f"{inputs['detail']}); motion: {settings['motion']}",
        f"- Calls per row: {settings['warmup']} warm-up + {settings['iterations']} timed",
        f"- Baseline: {results['baseline']['description']} (on {results['baseline']['device']})",
        "",
        markdown_table(HEADERS, table_cells(results)),
        "",
        "Latencies are per call (one batch of frames). "
        + " ".join(
            f"**{name}**: {results['definitions'][name]}." for name in ("fps", "speedup", "error")
        )
        + " **load 1m**: the machine's load average before/after the row; well above the "
        "process's own threads means other work shared the cores and skewed that row. "
        "**CPU got**: CPU cores this process got while the row ran and, in brackets, its share "
        "of all busy CPU time on the machine (/proc/stat, getrusage). **contended**: timed "
        "calls during which other processes used more than half a core ('rep': repeated once "
        "because most were).",
        "",
        "Stages (kp = driving keypoints, gen = motion + generator, wm = "
        + results["definitions"].get("watermark", "watermark")
        + "):",
        "",
    ]
    notes: dict[str, str] = {}
    for row in results["rows"]:
        notes.setdefault(row["label"], row["stages_note"])
    lines += [f"- {label}: {note}." for label, note in notes.items()]
    skipped = skipped_lines(results)
    if skipped:
        lines += ["", "## Not measured", ""] + [f"- {line}" for line in skipped]
    if results.get("pipeline"):
        from .pipeline import pipeline_markdown

        lines += ["", "## Live pipeline", ""]
        for entry in results["pipeline"]:
            if "skipped" in entry:
                what = f"{entry['backend']} {entry.get('precision', '')}".strip()
                lines += [f"{what}: not measured ({entry['skipped']})", ""]
            else:
                precision = entry.get("precision")
                lines += [f"`--backend {entry['backend']} --precision {precision}`:", ""]
                lines += [*pipeline_markdown(entry), ""]
    if results.get("offline"):
        from .offline import offline_markdown

        lines += ["", "## The offline command (end to end)", ""]
        offline = results["offline"]
        if "skipped" in offline:
            lines += [f"not measured ({offline['skipped']})"]
        else:
            lines += offline_markdown(offline)
    if results.get("quality"):
        from .quality import quality_markdown

        lines += ["", "## int8 quality against fp32", ""]
        for report in results["quality"]:
            lines += quality_markdown(report)
    return "\n".join(lines) + "\n"


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=1, allow_nan=False) + "\n", encoding="utf-8")


def read_json(path: Path) -> dict[str, Any]:
    """A results file written by this command, checked well enough to compare."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchmarkError(
            f"Results file {path} does not exist. Pass a JSON file written by "
            "`python -m benchmarks` (by default in benchmark-results/)."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchmarkError(
            f"Results file {path} could not be read as JSON ({exc}). Pass a JSON file written "
            "by `python -m benchmarks`."
        ) from None
    schema = data.get("schema") if isinstance(data, dict) else None
    name, _, version = schema.partition("/") if isinstance(schema, str) else ("", "", "")
    expected_name, _, expected_version = SCHEMA.partition("/")
    if name != expected_name:
        raise BenchmarkError(
            f"{path} is not a benchmark results file (schema {schema!r}, expected {SCHEMA!r}). "
            "Pass a JSON file written by `python -m benchmarks`."
        )
    if version.split(".")[0] != expected_version.split(".")[0]:
        raise BenchmarkError(
            f"{path} has results schema {schema}; this version reads {SCHEMA}. Re-run the "
            "benchmark with this version to compare."
        )
    return data
