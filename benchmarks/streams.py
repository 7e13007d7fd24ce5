"""Many streams on one avatar server: ``python -m benchmarks --server URL --streams 1,2,4,8``.

For each stream count N, N clients (threads, each its own WebSocket session and avatar) send
frames as fast as their round trips allow. Per point: each stream's frames per second, the
round trip p50/p99, the aggregate frames per second, and the batch sizes the server actually
formed (from its health endpoint, before and after). The local engine runs the same frames in
the same run as the baseline. ``--server local`` starts a server in this process (Ray Serve on
loopback) with the model options given, and stops it at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import UserError

from .errors import BenchmarkError
from .machine import LoadProbe, machine_info, versions
from .timing import summarize

SCHEMA = "avatarcam.benchmarks.streams/1"


@dataclass(frozen=True)
class StreamsConfig:
    """One many-streams run."""

    server: str | None  # ws://HOST:PORT of a running server; None: start one here
    token: str | None  # the server's --token
    streams: tuple[int, ...]  # stream counts to measure, ascending
    frames: int  # timed frames per stream at each point
    warmup: int  # untimed frames per stream at each point
    transport: str  # raw, png or jpeg
    jpeg_quality: int  # for jpeg
    config: str  # model config (local server and baseline)
    checkpoint: Path | None  # None: random weights with the config's shapes
    resolution: int | None  # frame size; None: the config's
    seed: int  # random weights and inputs
    cache_dir: Path | None  # engine cache
    backend: str  # engine backend of the local baseline and a local server
    device: str  # cpu, cuda or auto
    replicas: int  # local server replicas
    max_batch: int  # local server --max-batch
    batch_wait_ms: float  # local server --batch-wait-ms
    out_dir: Path  # where NAME.json/.md/.png go
    name: str  # file stem
    plot: bool  # write the PNG
    command: str  # as typed
    pipeline: Path | None = None  # also run the live loop on this video through the server
    hostile: int = 0  # also measure each point with this many hostile clients (benchmarks.hostile)


def _health(url: str, token: str | None = None) -> dict[str, Any]:
    http = url.replace("ws://", "http://", 1).replace("wss://", "https://", 1).rstrip("/")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{http}/health", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.load(reply)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a local process (Linux), for the replicas' CPU share."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _server(cfg: StreamsConfig, checkpoint: Path, cache_dir: Path | None) -> Iterator[str]:
    if cfg.server is not None:
        yield cfg.server
        return
    from engines.serve.server import start, stop
    from engines.serve.settings import ServerSettings

    settings = ServerSettings(
        checkpoint=checkpoint,
        config=cfg.config,
        resolution=cfg.resolution,
        backend=cfg.backend,
        device=cfg.device,
        port=_free_port(),
        replicas=cfg.replicas,
        max_batch=cfg.max_batch,
        batch_wait_ms=cfg.batch_wait_ms,
        max_sessions=max(cfg.streams) + cfg.hostile,
        token=cfg.token,
        cache_dir=cache_dir,
    )
    start(settings)
    try:
        deadline = time.monotonic() + 120
        while len(_health(settings.url, cfg.token)["replicas"]) < cfg.replicas:
            if time.monotonic() > deadline:
                raise BenchmarkError("the local server's replicas did not all report in 120 s")
            time.sleep(0.5)
        yield settings.url
    finally:
        stop()


def _images(inputs, streams: int) -> tuple[list[np.ndarray], np.ndarray]:
    """One avatar per stream (the sample avatar, shifted and flipped so each differs) and the
    driving frames, as uint8 images."""
    source = np.round(inputs.source[0].transpose(1, 2, 0) * 255).astype(np.uint8)
    driving = np.round(inputs.driving.transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    avatars = []
    for i in range(streams):
        image = np.roll(source, 3 * i, axis=1)
        avatars.append(np.ascontiguousarray(image[:, ::-1] if i % 2 else image))
    return avatars, driving


def _stream(engine, avatar, driving, warmup, frames, barrier, out: dict[str, Any]) -> None:
    from live.animator import Animator

    try:
        animator = Animator(engine)
        animator.set_avatar(avatar)
        for i in range(warmup):
            animator.animate(driving[i % len(driving)])
        barrier.wait()
        rtts = []
        began = time.perf_counter()
        for i in range(frames):
            animator.animate(driving[(warmup + i) % len(driving)])
            rtts.append(engine.last_rtt_ms)
        out["seconds"] = time.perf_counter() - began
        out["rtt_ms"] = rtts
    except BaseException as exc:
        out["error"] = exc
        barrier.abort()


def _point(cfg: StreamsConfig, url: str, inputs, count: int, hostile: int = 0) -> dict[str, Any]:
    from engines.options import RemoteOptions
    from engines.remote_engine import connect

    from .hostile import hostile_clients, rss_bytes

    avatars, driving = _images(inputs, count)
    options = RemoteOptions(url, cfg.token, cfg.transport, cfg.jpeg_quality, timeout_s=60)
    # On a local server each stream connects from its own loopback address, as users on their
    # own machines would: the server's per-client limits stay at their defaults.
    sources = [f"127.0.1.{1 + i}" if cfg.server is None else None for i in range(count)]
    engines = [connect(dataclasses.replace(options, source_address=s)) for s in sources]
    before = _health(url, cfg.token)
    pids = [r.get("pid") for r in before["replicas"].values()]
    cpu_before = [_cpu_seconds(p) for p in pids if p] if cfg.server is None else []
    barrier = threading.Barrier(count + 1)
    outs: list[dict[str, Any]] = [{} for _ in range(count)]
    threads = [
        threading.Thread(
            target=_stream,
            args=(engines[i], avatars[i], driving, cfg.warmup, cfg.frames, barrier, outs[i]),
        )
        for i in range(count)
    ]
    rss_before = [rss_bytes(p) for p in pids if p] if cfg.server is None else []
    size = before["model"]["resolution"]
    attacks = (
        hostile_clients(url, cfg.token, size, hostile) if hostile else contextlib.nullcontext({})
    )
    try:
        with attacks as outcomes:
            for thread in threads:
                thread.start()
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()
            probe = LoadProbe()
            began = time.perf_counter()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - began
            load = probe.result()
    finally:
        for engine in engines:
            engine.close()
    for out in outs:
        if "error" in out:
            raise out["error"]
    time.sleep(1.5)  # every replica has reported its latest batches (each reports once a second)
    after = _health(url, cfg.token)
    batches = {
        size: n - before["batch_sizes"].get(size, 0)
        for size, n in after["batch_sizes"].items()
        if n - before["batch_sizes"].get(size, 0) > 0
    }
    rtts = [v for out in outs for v in out["rtt_ms"]]
    per_stream = [cfg.frames / out["seconds"] for out in outs]
    point: dict[str, Any] = {
        "streams": count,
        "per_stream_fps": [round(v, 2) for v in per_stream],
        "per_stream_fps_mean": round(float(np.mean(per_stream)), 2),
        "aggregate_fps": round(count * cfg.frames / wall, 2),
        "rtt_ms": {k: round(v, 2) for k, v in summarize(rtts).items()},
        "batch_sizes": batches,
        "mean_batch": round(
            sum(int(s) * n for s, n in batches.items()) / max(1, sum(batches.values())), 2
        ),
        "contention": load,
    }
    if hostile:
        point["hostile"] = {"clients": hostile, "outcomes": outcomes}
    if rss_before:
        rss_after = [rss_bytes(p) for p in pids if p]
        point["server_rss_mb"] = {
            "before": round(sum(r for r in rss_before if r) / 2**20, 1),
            "after": round(sum(r for r in rss_after if r) / 2**20, 1),
        }
    if cpu_before:
        cpu_after = [_cpu_seconds(p) for p in pids if p]
        used = sum(a - b for a, b in zip(cpu_after, cpu_before, strict=True) if a and b)
        point["server_cpu_per_wall"] = round(used / wall, 2)
    return point


def _local(cfg: StreamsConfig, checkpoint: Path, config, inputs) -> dict[str, Any]:
    from engines import create_engine
    from engines.options import EngineOptions
    from live.animator import Animator

    avatars, driving = _images(inputs, 1)
    options = EngineOptions(backend=cfg.backend, device=cfg.device, cache_dir=cfg.cache_dir)
    with create_engine(checkpoint, config, options) as engine:
        animator = Animator(engine)
        animator.set_avatar(avatars[0])
        for i in range(cfg.warmup):
            animator.animate(driving[i % len(driving)])
        probe = LoadProbe()
        times = []
        for i in range(cfg.frames):
            began = time.perf_counter()
            animator.animate(driving[(cfg.warmup + i) % len(driving)])
            times.append((time.perf_counter() - began) * 1000)
        return {
            "engine": engine.describe(),
            "threads": _torch_threads(),
            "fps": round(1000 * len(times) / sum(times), 2),
            "latency_ms": {k: round(v, 2) for k, v in summarize(times).items()},
            "contention": probe.result(),
        }


def _pipeline(cfg: StreamsConfig, url: str, checkpoint: Path) -> dict[str, Any]:
    from engines.options import RemoteOptions

    from .inputs import SAMPLE_SOURCE, shared_dir
    from .pipeline import PipelineConfig, measure_pipeline

    avatar = shared_dir() / SAMPLE_SOURCE
    if not avatar.is_file():
        raise BenchmarkError(f"--pipeline needs the sample avatar {avatar}")
    return measure_pipeline(
        PipelineConfig(
            video=cfg.pipeline,
            avatar=avatar,
            checkpoint=checkpoint,
            config=cfg.config,
            resolution=cfg.resolution,
            backend="remote",
            precision="fp32",
            device=cfg.device,
            server=RemoteOptions(url, cfg.token, cfg.transport, cfg.jpeg_quality),
        )
    )


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def run_streams(cfg: StreamsConfig) -> dict[str, Any]:
    """Measure every stream count and the local baseline; the results document."""
    from export.config import load_config

    from .inputs import load_inputs
    from .runner import model_weights

    config = load_config(cfg.config, cfg.resolution)
    inputs = load_inputs(
        None, None, config.resolution, config.num_channels, cfg.warmup + cfg.frames, cfg.seed
    )
    with model_weights(cfg, config) as weights:  # type: ignore[arg-type]
        local = _local(cfg, weights.checkpoint, config, inputs)
        with _server(cfg, weights.checkpoint, weights.cache_dir) as url:
            health = _health(url, cfg.token)
            if cfg.server is not None and health["model"]["resolution"] != config.resolution:
                raise BenchmarkError(
                    f"the server at {url} runs {health['model']['resolution']}px, the local "
                    f"baseline {config.resolution}px: pass --config/--resolution to match"
                )
            points = []
            for n in cfg.streams:  # with and without hostile clients, interleaved
                points.append(_point(cfg, url, inputs, n))
                if cfg.hostile:
                    points.append(_point(cfg, url, inputs, n, cfg.hostile))
            pipeline = _pipeline(cfg, url, weights.checkpoint) if cfg.pipeline else None
    return {
        "schema": SCHEMA,
        "command": cfg.command,
        "machine": machine_info(),
        "versions": versions(),
        "weights": weights.description,
        "inputs": inputs.description,
        "server": {
            "url": url if cfg.server is not None else "local (started by the benchmark)",
            "model": health["model"],
            "replicas": len(health["replicas"]),
            "max_batch": health["max_batch"],
            "batch_wait_ms": cfg.batch_wait_ms if cfg.server is None else None,
            "transport": cfg.transport,
        },
        "frames_per_stream": cfg.frames,
        "warmup_per_stream": cfg.warmup,
        "local": local,
        "points": points,
        # The live loop through the server (its stages include "rtt"); None without --pipeline.
        "pipeline": pipeline,
    }


def run(cfg: StreamsConfig) -> int:
    """Measure, write NAME-streams.json/.md/.png, print the table; the exit status."""
    from .streams_report import markdown, write_plot

    results = run_streams(cfg)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    stem = cfg.out_dir / cfg.name
    written = [stem.with_suffix(".json"), stem.with_suffix(".md")]
    written[0].write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    text = markdown(results)
    written[1].write_text(text, encoding="utf-8")
    print(text)
    if cfg.plot:
        try:
            write_plot(results, stem.with_suffix(".png"))
            written.append(stem.with_suffix(".png"))
        except UserError as exc:
            print(f"error: {exc}")
            return exc.exit_code
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
