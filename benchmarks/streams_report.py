"""The many-streams benchmark's report: the Markdown table and the plot of
:mod:`benchmarks.streams` results."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def markdown(results: dict[str, Any]) -> str:
    server, local = results["server"], results["local"]
    lines = [
        "# Avatar server: many streams",
        "",
        f"`{results['command']}`",
        "",
        f"Server: {server['url']}, {server['replicas']} replica(s), max batch "
        f"{server['max_batch']}, {server['transport']} transport; model "
        f"{server['model']['config']} {server['model']['resolution']}px on "
        f"{server['model']['backend']} {server['model']['device']}. "
        f"Weights: {results['weights']['kind']}. Machine: {results['machine'].get('cpu')}.",
        "",
        f"Local engine in the same run ({local['engine']}): **{local['fps']} frames/s**, "
        f"latency p50 {local['latency_ms']['p50']} ms, p99 {local['latency_ms']['p99']} ms.",
        "",
        "| streams | hostile | per-stream FPS (mean) | aggregate frames/s | vs local | "
        "RTT p50 ms | RTT p99 ms | batches formed (size: calls) | server CPU/wall | "
        "server RSS MB | load 1m |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for p in results["points"]:
        batches = ", ".join(f"{s}: {n}" for s, n in p["batch_sizes"].items()) or "-"
        ratio = p["aggregate_fps"] / local["fps"] if local["fps"] else float("nan")
        rss = p.get("server_rss_mb")
        memory = f"{rss['before']} -> {rss['after']}" if rss else "-"
        lines.append(
            f"| {p['streams']} | {p.get('hostile', {}).get('clients', 0)} | "
            f"{p['per_stream_fps_mean']} | {p['aggregate_fps']} | "
            f"{ratio:.2f}x | {p['rtt_ms']['p50']} | {p['rtt_ms']['p99']} | {batches} | "
            f"{p.get('server_cpu_per_wall', '-')} | {memory} | {p['contention']['load_1m_end']} |"
        )
    if results.get("pipeline"):
        from .pipeline import pipeline_markdown

        lines += ["", "Live loop through the server:", "", *pipeline_markdown(results["pipeline"])]
    lines += [
        "",
        "Per-stream FPS: timed frames / seconds for each client (one frame in flight per "
        "stream). RTT: client send to result decoded, including encoding, the server's batch "
        "wait and the frame-graph call. Server CPU/wall: CPU seconds of the replica processes "
        "per wall second (local server only). Hostile: clients attacking the server during "
        "the point (image bombs, frame floods, silent sockets, oversized messages; "
        "benchmarks.hostile); each point with hostile clients follows the same point without.",
        "",
    ]
    return "\n".join(lines)


def write_plot(results: dict[str, Any], path: Path) -> None:
    from .plot import _pyplot

    plt = _pyplot()
    points = results["points"]
    streams = [p["streams"] for p in points]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(streams, [p["aggregate_fps"] for p in points], "o-", label="server, aggregate")
    left.plot(
        streams, [p["per_stream_fps_mean"] for p in points], "s--", label="server, per stream"
    )
    left.axhline(results["local"]["fps"], color="grey", linestyle=":", label="local engine")
    left.set(xlabel="streams", ylabel="frames/s", title="Throughput")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, fontsize=8)
    right.plot(streams, [p["rtt_ms"]["p50"] for p in points], "o-", label="RTT p50")
    right.plot(streams, [p["rtt_ms"]["p99"] for p in points], "s--", label="RTT p99")
    right.set(xlabel="streams", ylabel="ms", title="Round trip")
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=8)
    for axis in (left, right):
        axis.set_xticks(streams)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
