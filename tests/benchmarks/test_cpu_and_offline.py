"""Benchmark rows that say how much CPU they got, the offline command timed from outside, and
the int8 quality report."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks import cpushare, machine, offline
from benchmarks.cli import main
from benchmarks.errors import BenchmarkError
from benchmarks.offline import parse_variants
from tests.conftest import Golden, load_golden, shared_path


def test_cpu_readings_separate_this_process_from_others() -> None:
    cpu0 = time.process_time()
    start = cpushare.snapshot()
    deadline = start.wall + 0.3
    while cpushare.snapshot().wall < deadline:  # busy: up to one core of our own
        pass
    end = cpushare.snapshot()
    own = (time.process_time() - cpu0) / (end.wall - start.wall)
    reading = cpushare.between(start, end)
    assert 0 < reading["own_cores"] <= 1.2  # one busy thread (less when others share the core)
    assert reading["own_cores"] == pytest.approx(own, abs=0.05)
    if cpushare.machine_busy_s() is not None:
        assert reading["others_cores"] >= 0 and 0 < reading["share"] <= 1


def test_contended_calls_are_flagged() -> None:
    fake = [
        cpushare.Snapshot(0.0, 0.0, 100.0),
        cpushare.Snapshot(1.0, 0.9, 102.0),  # others used 1.1 cores
        cpushare.Snapshot(2.0, 1.8, 103.0),  # others used 0.1 cores
    ]
    busy = cpushare.between(fake[0], fake[1])
    quiet = cpushare.between(fake[1], fake[2])
    assert busy == {"own_cores": 0.9, "others_cores": 1.1, "share": 0.45}
    assert cpushare.is_contended(busy) and not cpushare.is_contended(quiet)
    assert not cpushare.is_contended({"own_cores": 1.0, "others_cores": None, "share": None})
    meter = cpushare.CallMeter()
    assert meter.wrap(lambda x: x + 1)(1) == 2
    summary = meter.summary(1)
    assert summary["sample_flags"] == [cpushare.is_contended(meter.calls[0])]
    assert summary["row_own_cores"] is not None


def test_offline_variants_are_checked() -> None:
    assert parse_variants("torch:fp32, auto:int8") == (("torch", "fp32"), ("auto", "int8"))
    assert parse_variants("auto:default") == (("auto", "default"),)
    for bad in ("torch", "magic:fp32", "torch:int4", ""):
        with pytest.raises(BenchmarkError):
            parse_variants(bad)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """openvino fp32 and int8 rows, the quality report and one offline variant, on tiny64."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    golden: Golden = load_golden("tiny64")
    out = tmp_path_factory.mktemp("bench")
    driving = out / "driving"
    driving.mkdir()
    for i, frame in enumerate(golden.arrays["driving"]):
        rgb = np.round(frame * 255).astype(np.uint8)
        assert cv2.imwrite(str(driving / f"{i:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    args = [
        "--config", str(golden.config), "--checkpoint", str(golden.checkpoint),
        "--resolution", "64", "--source", str(shared_path("media", "avatars", "mona.jpg")),
        "--driving", str(driving), "--backends", "openvino", "--precisions", "fp32,int8",
        "--devices", "cpu", "--baseline-device", "cpu", "--batches", "1", "--warmup", "1",
        "--iterations", "3", "--no-stages", "--cache-dir", str(out / "cache"),
        "--out", str(out), "--name", "run", "--no-plot",
        "--offline", str(driving), "--offline-variants", "openvino:fp32,auto:default",
        "--offline-rounds", "1",
    ]  # fmt: skip
    assert main(args) == 0
    results = json.loads((out / "run.json").read_text())
    results["markdown"] = (out / "run.md").read_text()
    return results


def test_every_row_records_its_cpu_share(tiny_run: dict) -> None:
    for row in tiny_run["rows"]:
        contention = row["contention"]
        assert contention["row_own_cores"] > 0
        assert len(contention["sample_flags"]) == row["iterations"]
        assert contention["samples_contended"] == sum(contention["sample_flags"])
        assert isinstance(contention["repeated"], bool)
    assert "CPU got" in tiny_run["markdown"] and "contended" in tiny_run["markdown"]


def test_int8_quality_report_per_frame(tiny_run: dict) -> None:
    (report,) = tiny_run["quality"]
    assert report["backend"] == "openvino" and "int8" in report["engine"]
    assert len(report["frames"]) == 6
    for frame in report["frames"]:
        assert frame["psnr_db"] is None or frame["psnr_db"] > 30
        assert frame["kp_error_px"] < 0.01  # the keypoint detector stays float
    assert "## int8 quality against fp32" in tiny_run["markdown"]


def test_offline_command_is_timed_from_outside(tiny_run: dict) -> None:
    offline = tiny_run["offline"]
    reference, row = offline["rows"]
    assert reference["precision"] == "fp32" and reference["speedup"] == pytest.approx(1)
    assert reference["mean_grey_vs_reference"] == 0
    assert row["backend"] == "auto" and row["precision"] == "default"
    assert row["frames"] == 6 and row["frame_ms"] > 0 and row["speedup"] > 0
    assert row["selection"].startswith("openvino on cpu (int8), precision auto: int8, verified")
    assert row["command"].startswith("python run_live.py --avatar")
    assert "--precision" not in row["command"]  # the user's default command
    assert 0 < row["mean_grey_vs_reference"] <= 4  # int8 differs from fp32, but little
    assert row["cpu_runs"][0]["own_cores"] > 0
    assert "## The offline command (end to end)" in tiny_run["markdown"]


def test_offline_frame_time_ignores_files_rewritten_at_the_end(tmp_path: Path) -> None:
    # The command signs its PNGs after the last frame (rewriting each file): the frame time is
    # when each PNG first appeared, not its modification time.
    script = (
        "import sys, time, pathlib\n"
        "out = pathlib.Path(sys.argv[1])\n"
        "for i in range(5):\n"
        "    (out / f'{i:06d}.png').write_bytes(b'frame')\n"
        "    time.sleep(0.08)\n"
        "for i in range(5):\n"
        "    (out / f'{i:06d}.png').write_bytes(b'signed frame')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)])
    frames, frame_ms = offline._frame_ms(offline._watch(child, tmp_path))
    assert child.returncode == 0
    assert frames == 5 and 60 <= frame_ms <= 200


def test_vector_extensions_and_isa_class_from_cpuinfo() -> None:
    avx2_only = "processor\t: 0\nflags\t\t: fpu sse4_2 avx fma avx2 bmi2\n\nprocessor\t: 1\n"
    assert machine.vector_extensions(avx2_only) == ["sse4_2", "avx", "fma", "avx2"]
    assert machine.isa_class(machine.vector_extensions(avx2_only)) == "AVX2"
    vnni = "flags\t: avx avx2 avx512f avx512bw avx512vl avx512_vnni avx512_bf16\n"
    assert machine.isa_class(machine.vector_extensions(vnni)) == "AVX-512 VNNI"
    assert machine.isa_class(["avx2", "avx_vnni"]) == "AVX2 VNNI"
    assert machine.isa_class(["avx512f", "avx512_vnni", "amx_tile", "amx_int8"]) == "AMX"
    assert machine.vector_extensions("") == []


def test_reports_carry_the_cpu_extensions(tiny_run: dict) -> None:
    recorded = tiny_run["machine"]["cpu_extensions"]
    assert recorded == machine.vector_extensions()
    assert tiny_run["machine"]["isa_class"] == machine.isa_class(recorded)
    line = next(x for x in tiny_run["markdown"].splitlines() if x.startswith("- Machine:"))
    assert f"{tiny_run['machine']['isa_class']} class: {', '.join(recorded)}" in line


def test_pipeline_rows_for_int8_and_the_default_precision() -> None:
    from benchmarks.runner import pipeline_variants

    assert pipeline_variants(["torch", "openvino"], ["fp32"], "cpu") == [
        ("torch", "fp32"),
        ("openvino", "fp32"),
        ("openvino", "int8"),
        ("openvino", "auto"),
    ]
    assert pipeline_variants(["torch"], ["fp32"], "cpu") == [("torch", "fp32")]
    assert pipeline_variants(["openvino"], ["fp32"], "cuda") == [("openvino", "fp32")]
