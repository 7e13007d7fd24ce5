"""The PNG plot: latency distribution per row, per-stage breakdown, throughput per batch size.

matplotlib is optional (the ``bench`` extra) and imported only here, with the Agg backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from export.errors import MissingDependencyError, missing_dependency

from .report import row_label


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        error = missing_dependency("matplotlib", "bench", "The benchmark plot")
        raise MissingDependencyError(
            f"{error}\nOr leave the plot out with --no-plot (JSON and Markdown are still written)."
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def write_plot(results: dict[str, Any], path: Path) -> None:
    """Write the three-panel PNG for ``results`` to ``path``."""
    plt = _pyplot()
    rows = results["rows"]
    smallest = min(r["batch"] for r in rows)
    single = [r for r in rows if r["batch"] == smallest]
    labels = [row_label(r) for r in single]

    figure, (dist, stages, throughput) = plt.subplots(
        3, 1, figsize=(10, 5 + 1.6 * len(single)), constrained_layout=True
    )
    settings = results["settings"]
    figure.suptitle(
        f"{settings['model']} {settings['resolution']}px - {results['machine']['cpu']}"
        f"{' + ' + results['machine']['gpu'] if results['machine']['gpu'] else ''}",
        fontsize=10,
    )

    # 1. Latency distribution of the whole per-frame call.
    samples = [r["samples_ms"]["frame"] for r in single]
    try:
        dist.boxplot(samples, orientation="horizontal", showfliers=True)
    except TypeError:  # matplotlib < 3.10 names it vert=False
        dist.boxplot(samples, vert=False, showfliers=True)
    dist.set_yticks(list(range(1, len(labels) + 1)), labels)
    lowest = min(min(s) for s in samples)
    highest = max(max(s) for s in samples)
    if highest / max(lowest, 1e-9) > 20:
        dist.set_xscale("log")
    dist.invert_yaxis()
    dist.set_xlabel(f"latency per call, ms (batch {smallest})")
    dist.set_title("Per-frame latency distribution (Engine.animate / demo iteration)", fontsize=9)
    dist.grid(axis="x", alpha=0.3)

    # 2. Mean time per stage; the rest of the call is what the stages do not cover.
    positions = range(len(single))
    colours = {"keypoints": "tab:blue", "generator": "tab:orange", "rest": "tab:gray"}
    drawn: set[str] = set()
    for y, row in zip(positions, single, strict=True):
        latency = row["latency_ms"]
        frame = latency["frame"]["mean"]
        if latency.get("keypoints") and latency.get("generator"):
            kp, gen = latency["keypoints"]["mean"], latency["generator"]["mean"]
            parts = [("keypoints", kp), ("generator", gen), ("rest", max(frame - kp - gen, 0))]
        else:
            parts = [("rest", frame)]
        left = 0.0
        for name, width in parts:
            label = {
                "keypoints": "driving keypoints",
                "generator": "motion + generator",
                "rest": "rest of the call / whole frame graph (no split)",
            }[name]
            stages.barh(
                y,
                width,
                left=left,
                color=colours[name],
                label=None if name in drawn else label,
            )
            drawn.add(name)
            left += width
    stages.set_yticks(list(positions), labels)
    stages.invert_yaxis()
    stages.set_xlabel(f"mean ms per call (batch {smallest})")
    stages.set_title("Per-stage breakdown (stages: torch modules only)", fontsize=9)
    stages.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    stages.grid(axis="x", alpha=0.3)

    # 3. Frames per second at every batch size.
    variants = list(dict.fromkeys(row_label(r) for r in rows))
    batches = sorted({r["batch"] for r in rows})
    width = 0.8 / max(len(batches), 1)
    for i, batch in enumerate(batches):
        fps = []
        for variant in variants:
            match = [r for r in rows if row_label(r) == variant and r["batch"] == batch]
            fps.append(match[0]["fps"] if match else 0.0)
        throughput.barh(
            [v + (i - (len(batches) - 1) / 2) * width for v in range(len(variants))],
            fps,
            height=width,
            label=f"batch {batch}",
        )
    throughput.set_yticks(list(range(len(variants))), variants)
    throughput.invert_yaxis()
    throughput.set_xlabel("frames per second (1000 * batch / p50)")
    throughput.set_title("Throughput by batch size", fontsize=9)
    throughput.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=6)
    throughput.grid(axis="x", alpha=0.3)

    figure.savefig(path, dpi=90)
    plt.close(figure)
