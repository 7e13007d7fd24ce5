"""End-to-end rows: the offline command users run, timed from the outside.

``python run_live.py --avatar A --input VIDEO --output FOLDER --backend B --precision P`` runs
as a child process, exactly as a user types it (decode, face framing, engine, PNG writing).
Its per-frame time is measured on the files it writes: the interval between the moments the
first and the last PNG appeared (the folder is polled while it runs) divided by the frames in
between, so start-up (model load,
engine build, int8 calibration) is excluded and reported separately as the wall time. Each
variant runs once untimed (to build its cached artifacts), then the variants run in turn,
interleaved, ``rounds`` times, so a slow spell on a shared machine hits every variant alike.
Every timed run records the CPU the child got and what other processes used meanwhile
(:mod:`.cpushare`); a run during which others used more than half a core is marked contended.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cpushare import between, is_contended, snapshot
from .errors import BenchmarkError

ROOT = Path(__file__).resolve().parent.parent
#: Variants timed by default: the eager baseline, what auto picks at fp32 and int8, and the
#: command with no precision flag at all (``default``: --precision auto, int8 where it passes).
DEFAULT_VARIANTS = ("torch:fp32", "auto:fp32", "auto:int8", "auto:default")
#: The precision of a variant that passes no --precision flag (the user's default).
NO_FLAG = "default"


@dataclass(frozen=True)
class OfflineSetup:
    """What every offline run shares."""

    video: Path  # driving video, GIF or folder
    avatar: Path  # avatar photo
    checkpoint: Path  # FOMM checkpoint
    config: str  # preset or YAML
    resolution: int | None  # model frame size; None: the config's
    cache_dir: Path | None  # engine cache the runs share (None: the user's)
    variants: tuple[tuple[str, str], ...]  # (backend, precision), the first is the reference
    rounds: int  # timed runs per variant, interleaved


def parse_variants(text: str) -> tuple[tuple[str, str], ...]:
    """``torch:fp32,auto:int8`` -> (("torch", "fp32"), ("auto", "int8"))."""
    from engines import BACKENDS, PRECISIONS

    variants = []
    for item in (v.strip() for v in text.split(",") if v.strip()):
        backend, _, precision = item.partition(":")
        if backend not in BACKENDS or precision not in (*PRECISIONS, NO_FLAG):
            raise BenchmarkError(
                f"--offline-variants {item!r}: expected BACKEND:PRECISION with a backend of "
                f"{', '.join(BACKENDS)} and a precision of {', '.join(PRECISIONS)} or "
                f"{NO_FLAG} (no --precision flag), e.g. torch:fp32,auto:int8,auto:default"
            )
        variants.append((backend, precision))
    if not variants:
        raise BenchmarkError("--offline-variants is empty; e.g. torch:fp32,auto:fp32,auto:int8")
    return tuple(dict.fromkeys(variants))


def command(setup: OfflineSetup, backend: str, precision: str, output: Path) -> list[str]:
    args = [
        "--avatar", str(setup.avatar), "--input", str(setup.video), "--output", str(output),
        "--checkpoint", str(setup.checkpoint), "--config", setup.config,
        "--backend", backend,
    ]  # fmt: skip
    if precision != NO_FLAG:
        args += ["--precision", precision]
    if setup.resolution:
        args += ["--resolution", str(setup.resolution)]
    return args


#: How often the output folder is looked at while the command runs (frames are 100+ ms apart).
POLL_S = 0.005


def _watch(child: subprocess.Popen, folder: Path) -> dict[str, float]:
    """When each frame PNG first appeared in ``folder`` (perf_counter seconds, by name), polled
    until ``child`` exits. First appearance, not modification time: the command signs its PNGs
    with Content Credentials after the last frame, which rewrites every file at the end."""
    seen: dict[str, float] = {}
    while True:
        running = child.poll() is None
        now = time.perf_counter()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(".png") and not entry.name.startswith("."):
                    seen.setdefault(entry.name, now)
        if not running:
            return seen
        time.sleep(POLL_S)


def _frame_ms(seen: dict[str, float]) -> tuple[int, float | None]:
    """Frames written and the mean interval between the first and last one, in ms."""
    stamps = sorted(seen.values())
    if len(stamps) < 2:
        return len(stamps), None
    return len(stamps), (stamps[-1] - stamps[0]) * 1000 / (len(stamps) - 1)


def _selection(stderr: str) -> str | None:
    for line in stderr.splitlines():
        if line.startswith("engine: "):
            return line[len("engine: ") :]
    return None


def run_once(
    setup: OfflineSetup,
    backend: str,
    precision: str,
    work: Path,
    env: dict[str, str],
    keep: bool = False,
) -> dict[str, Any]:
    """One run of the command; its timing, CPU share and selection line (and with ``keep``
    its output folder, ``output``, for the caller to compare and remove)."""
    output = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    args = command(setup, backend, precision, output)
    start = snapshot(children=True)
    began = time.perf_counter()
    with tempfile.TemporaryFile("w+", dir=work) as errors:
        child = subprocess.Popen(
            [sys.executable, "-m", "run_live", *args],
            cwd=ROOT if (ROOT / "run_live.py").is_file() else None,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            text=True,
        )
        seen = _watch(child, output)
        wall = time.perf_counter() - began
        cpu = between(start, snapshot(children=True))
        errors.seek(0)
        stderr = errors.read()
    if child.returncode != 0:
        tail = " | ".join(stderr.strip().splitlines()[-3:])
        raise BenchmarkError(f"run_live.py {shlex.join(args)} failed ({child.returncode}): {tail}")
    frames, frame_ms = _frame_ms(seen)
    if not keep:
        shutil.rmtree(output)
    return {
        **({"output": output} if keep else {}),
        "wall_s": round(wall, 2),
        "frames": frames,
        "frame_ms": frame_ms,
        "cpu": cpu,
        "contended": is_contended(cpu),
        "selection": _selection(stderr),
        "stderr_tail": stderr.strip().splitlines()[-2:],
    }


def measure_offline(setup: OfflineSetup, log: Callable[[str], None]) -> dict[str, Any]:
    """Warm-up runs, then ``rounds`` interleaved timed runs of every variant."""
    with tempfile.TemporaryDirectory(prefix="avatarcam-offline-") as folder:
        work = Path(folder)
        env = {**os.environ}
        if setup.cache_dir is not None:
            home = work / "home"
            home.mkdir()
            (home / "cache").symlink_to(Path(setup.cache_dir).resolve(), target_is_directory=True)
            env["AVATARCAM_HOME"] = str(home)
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {v: [] for v in setup.variants}
        first: dict[tuple[str, str], dict[str, Any]] = {}
        for backend, precision in setup.variants:
            log(f"offline: first run of {backend} {precision} (builds and caches its engine)")
            first[(backend, precision)] = run_once(setup, backend, precision, work, env)
        grey: dict[tuple[str, str], float | None] = {}
        for round_index in range(setup.rounds):
            last = round_index == setup.rounds - 1
            for backend, precision in setup.variants:
                result = run_once(setup, backend, precision, work, env, keep=last)
                runs[(backend, precision)].append(result)
                log(
                    f"offline round {round_index + 1}: {backend} {precision}: "
                    f"{result['frame_ms'] or 0:.0f} ms per frame, child CPU "
                    f"{result['cpu']['own_cores']} cores, others "
                    f"{result['cpu']['others_cores']}"
                )
        last_outputs = [runs[v][-1].pop("output") for v in setup.variants]
        for variant, output in zip(setup.variants, last_outputs, strict=True):
            grey[variant] = mean_grey_difference(output, last_outputs[0])
        for output in last_outputs:
            shutil.rmtree(output)
    rows = []
    reference = None
    for variant in setup.variants:
        backend, precision = variant
        timed = runs[variant]
        values = [r["frame_ms"] for r in timed if r["frame_ms"] is not None]
        clean = [r["frame_ms"] for r in timed if r["frame_ms"] is not None and not r["contended"]]
        frame_ms = float(np.median(values)) if values else None
        if reference is None:
            reference = frame_ms
        rows.append(
            {
                "backend": backend,
                "precision": precision,
                "command": "python run_live.py "
                + shlex.join(command(setup, backend, precision, Path("OUT"))),
                "selection": timed[0]["selection"] if timed else None,
                "frames": timed[0]["frames"] if timed else 0,
                "frame_ms": frame_ms,
                "frame_ms_runs": values,
                "frame_ms_uncontended": float(np.median(clean)) if clean else None,
                "fps": 1000.0 / frame_ms if frame_ms else None,
                "speedup": reference / frame_ms if reference and frame_ms else None,
                "mean_grey_vs_reference": grey[variant],
                "wall_s_runs": [r["wall_s"] for r in timed],
                "first_run_wall_s": first[variant]["wall_s"],
                "cpu_runs": [r["cpu"] for r in timed],
                "runs_contended": sum(r["contended"] for r in timed),
            }
        )
    return {
        "video": str(setup.video),
        "avatar": str(setup.avatar),
        "rounds": setup.rounds,
        "method": "per-frame time = (time the last PNG appeared - time the first appeared) / "
        "(frames - 1), the output folder polled every 5 ms, "
        "median over interleaved rounds; the first run of each variant (engine build, int8 "
        "calibration) is untimed",
        "reference": f"{setup.variants[0][0]} {setup.variants[0][1]}",
        "rows": rows,
    }


def mean_grey_difference(folder: Path, reference: Path) -> float | None:
    """Mean absolute difference (grey levels) between the PNGs of ``folder`` and the same-named
    ones of ``reference`` (None when they share no frame)."""
    import cv2

    names = sorted(p.name for p in folder.glob("*.png"))
    diffs = []
    for name in names:
        other = reference / name
        if not other.is_file():
            continue
        a, b = cv2.imread(str(folder / name)), cv2.imread(str(other))
        if a is None or b is None or a.shape != b.shape:
            continue
        diffs.append(float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()))
    return round(float(np.mean(diffs)), 3) if diffs else None


def offline_markdown(result: dict[str, Any]) -> list[str]:
    lines = [
        f"`run_live.py` on `{result['video']}` with the avatar `{result['avatar']}`, "
        f"{result['rounds']} interleaved rounds; {result['method']}. Speed-up against "
        f"{result['reference']}.",
        "",
        "| command | engine chosen | ms per frame | FPS | speed-up | ms per frame, uncontended "
        "runs | speed-up, uncontended | mean diff vs reference (grey) | child CPU cores | "
        "others' cores | contended runs |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    reference = result["rows"][0]["frame_ms_uncontended"] if result["rows"] else None
    for row in result["rows"]:
        clean = row["frame_ms_uncontended"]
        clean_speedup = reference / clean if reference and clean else None
        own = [c["own_cores"] for c in row["cpu_runs"] if c["own_cores"] is not None]
        others = [c["others_cores"] for c in row["cpu_runs"] if c["others_cores"] is not None]
        selection = (row["selection"] or "-").split(",")[0]
        flags = f"--backend {row['backend']}"
        if row["precision"] != NO_FLAG:
            flags += f" --precision {row['precision']}"
        lines.append(
            f"| `{flags}` | {selection} | "
            f"{_f(row['frame_ms'], '.0f')} | {_f(row['fps'], '.2f')} | "
            f"{_f(row['speedup'], '.2f')}x | {_f(clean, '.0f')} | "
            f"{_f(clean_speedup, '.2f')}{'x' if clean_speedup else ''} | "
            f"{_f(row.get('mean_grey_vs_reference'), '.2f')} | {_f(_mean(own), '.2f')} | "
            f"{_f(_mean(others), '.2f')} | {row['runs_contended']}/{len(row['cpu_runs'])} |"
        )
    return [*lines, ""]


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
