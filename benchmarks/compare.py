"""Per-row change between two results files (``--compare OLD [NEW]``).

Rows are matched by their id (label, precision, device, batch). A negative latency change is an
improvement; rows present in only one file are listed as such.
"""

from __future__ import annotations

from typing import Any

from .report import markdown_table, row_label, text_table

HEADERS = (
    "row",
    "batch",
    "old p50 ms",
    "new p50 ms",
    "change ms",
    "change %",
    "old FPS",
    "new FPS",
    "FPS change %",
    "old max err",
    "new max err",
)


def _percent(old: float, new: float) -> float | None:
    return None if old == 0 else (new - old) / old * 100.0


def compare_results(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """One change record per row id in either file, in the new file's order first."""
    old_rows = {r["id"]: r for r in old["rows"]}
    new_rows = {r["id"]: r for r in new["rows"]}
    order = list(new_rows) + [key for key in old_rows if key not in new_rows]
    changes = []
    for key in order:
        before, after = old_rows.get(key), new_rows.get(key)
        row = after if after is not None else before
        if row is None:
            continue
        change: dict[str, Any] = {
            "id": key,
            "row": row_label(row),
            "batch": row["batch"],
            "status": "both" if before and after else ("only in old" if before else "only in new"),
            "old_p50_ms": before["latency_ms"]["frame"]["p50"] if before else None,
            "new_p50_ms": after["latency_ms"]["frame"]["p50"] if after else None,
            "old_fps": before["fps"] if before else None,
            "new_fps": after["fps"] if after else None,
            "old_max_abs_error": before["error"]["max_abs"] if before else None,
            "new_max_abs_error": after["error"]["max_abs"] if after else None,
            "change_ms": None,
            "change_pct": None,
            "fps_change_pct": None,
        }
        if before and after:
            change["change_ms"] = change["new_p50_ms"] - change["old_p50_ms"]
            change["change_pct"] = _percent(change["old_p50_ms"], change["new_p50_ms"])
            change["fps_change_pct"] = _percent(change["old_fps"], change["new_fps"])
        changes.append(change)
    return changes


def _cell(value: float | None, spec: str, signed: bool = False) -> str:
    if value is None:
        return "-"
    return format(value, ("+" if signed else "") + spec)


def change_cells(changes: list[dict[str, Any]]) -> list[list[str]]:
    cells = []
    for c in changes:
        row = c["row"] if c["status"] == "both" else f"{c['row']} ({c['status']})"
        cells.append(
            [
                row,
                str(c["batch"]),
                _cell(c["old_p50_ms"], ".2f"),
                _cell(c["new_p50_ms"], ".2f"),
                _cell(c["change_ms"], ".2f", signed=True),
                _cell(c["change_pct"], ".1f", signed=True),
                _cell(c["old_fps"], ".2f"),
                _cell(c["new_fps"], ".2f"),
                _cell(c["fps_change_pct"], ".1f", signed=True),
                _cell(c["old_max_abs_error"], ".1e"),
                _cell(c["new_max_abs_error"], ".1e"),
            ]
        )
    return cells


def _context(old: dict[str, Any], new: dict[str, Any], old_name: str, new_name: str) -> list[str]:
    lines = [
        f"old: {old_name} ({old['timestamp']}, {old['machine']['cpu']}, "
        f"GPU {old['machine']['gpu'] or 'none'})",
        f"new: {new_name} ({new['timestamp']}, {new['machine']['cpu']}, "
        f"GPU {new['machine']['gpu'] or 'none'})",
    ]
    for key in ("cpu", "gpu", "usable_cores"):
        if old["machine"].get(key) != new["machine"].get(key):
            lines.append(
                f"warning: the runs differ in {key} ({old['machine'].get(key)} vs "
                f"{new['machine'].get(key)}): changes reflect the machines as well as the code"
            )
    for key in ("model", "resolution", "weights"):
        if old["settings"].get(key) != new["settings"].get(key):
            lines.append(f"warning: the runs differ in {key}")
    return lines


def compare_text(old: dict[str, Any], new: dict[str, Any], old_name: str, new_name: str) -> str:
    """The comparison for the terminal."""
    table = text_table(HEADERS, change_cells(compare_results(old, new)))
    return "\n".join([*_context(old, new, old_name, new_name), "", table])


def compare_markdown(old: dict[str, Any], new: dict[str, Any], old_name: str, new_name: str) -> str:
    """The comparison as a Markdown document."""
    context = [f"- {line}" for line in _context(old, new, old_name, new_name)]
    table = markdown_table(HEADERS, change_cells(compare_results(old, new)))
    return (
        "\n".join(
            [
                "# avatarcam benchmark comparison",
                "",
                *context,
                "",
                table,
                "",
                "Change = new - old; negative ms (positive FPS %) is faster.",
            ]
        )
        + "\n"
    )
