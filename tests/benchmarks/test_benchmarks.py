"""``python -m benchmarks`` in-process on the tiny golden model: results structure, accuracy of
every measured row against the baseline, output files and --compare. No timing thresholds."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.cli import main
from benchmarks.inputs import load_driving, load_inputs
from benchmarks.runner import ErrorMeter, frame_indices
from benchmarks.settings import SCHEMA
from benchmarks.timing import summarize
from tests.conftest import Golden, load_golden, shared_path

FP32_MAX = 1e-4
FP16_MEAN = 2 / 255
FP16_MAX = 8 / 255
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BACKENDS = ("torch", "onnxruntime")
PRECISIONS = ("fp32", "fp16")
BATCHES = (1,)  # the full run; the second run covers batch 2 (each engine is a new export)
TOP_KEYS = {
    "schema",
    "timestamp",
    "duration_s",
    "command",
    "machine",
    "versions",
    "settings",
    "baseline",
    "definitions",
    "rows",
    "skipped",
    "pipeline",
    "quality",
    "offline",
}
ROW_KEYS = {
    "id",
    "label",
    "baseline",
    "backend",
    "precision",
    "device",
    "batch",
    "engine",
    "warmup",
    "iterations",
    "setup_s",
    "latency_ms",
    "stages_note",
    "samples_ms",
    "fps",
    "fps_mean",
    "speedup",
    "error",
    "memory",
    "contention",
}


def _args(
    golden: Golden, out: Path, name: str, *extra: str, cache: Path | None = None
) -> list[str]:
    return [
        "--config",
        str(golden.config),
        "--checkpoint",
        str(golden.checkpoint),
        "--resolution",
        str(golden.resolution),
        "--source",
        str(shared_path("media", "avatars", "mona.jpg")),
        "--driving",
        str(shared_path("media", "driving", "mona-talking.gif")),
        "--warmup",
        "1",
        "--iterations",
        "3",
        "--cache-dir",
        str(cache or out / "cache"),
        "--out",
        str(out),
        "--name",
        name,
        *extra,
    ]


@pytest.fixture(scope="module")
def full_run(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> tuple[Path, dict[str, Any], str]:
    """One run over torch and onnxruntime, fp32 and fp16, on the CPU.

    The ONNX exports (several seconds each) are kept in pytest's cache folder between test
    runs; the engine cache keys them on the checkpoint, config, shapes and exporter versions.
    """
    golden = load_golden("tiny64")
    out = tmp_path_factory.mktemp("bench")
    pytest_cache = getattr(pytestconfig, "cache", None)  # absent with -p no:cacheprovider
    cache = pytest_cache.mkdir("benchmarks-engine-cache") if pytest_cache else None
    args = _args(
        golden,
        out,
        "run",
        "--backends",
        ",".join(BACKENDS),
        "--precisions",
        ",".join(PRECISIONS),
        "--devices",
        "cpu",
        "--baseline-device",
        "cpu",
        "--batches",
        ",".join(map(str, BATCHES)),
        cache=cache,
    )
    status = main(args)
    assert status == 0
    results = json.loads((out / "run.json").read_text())
    return out, results, " ".join(args)


def test_results_structure(full_run: tuple[Path, dict[str, Any], str]) -> None:
    _, results, args = full_run
    assert set(results) == TOP_KEYS
    assert results["schema"] == SCHEMA
    assert results["command"] == "python -m benchmarks " + args
    assert results["pipeline"] is None
    machine, versions = results["machine"], results["versions"]
    assert machine["cpu"] and machine["cores"] >= 1
    for key in ("python", "torch", "numpy", "onnxruntime", "tensorrt"):
        assert key in versions
    settings = results["settings"]
    assert settings["resolution"] == 64
    assert settings["batches"] == list(BATCHES)
    assert settings["inputs"]["kind"] == "images"
    ids = [row["id"] for row in results["rows"]]
    assert len(ids) == len(set(ids))
    for row in results["rows"]:
        assert set(row) == ROW_KEYS
        assert row["iterations"] == 3
        assert len(row["samples_ms"]["frame"]) == 3
        frame = row["latency_ms"]["frame"]
        assert frame["p50"] <= frame["p90"] <= frame["p99"] <= frame["max"]
        assert frame["min"] <= frame["p50"]
        assert row["fps"] > 0 and row["fps_mean"] > 0
        assert row["speedup"] is not None and row["speedup"] > 0
        host = row["memory"]["host_peak_rss_mb"]
        assert host is None or host > 0
        # Engine rows time the watermark stage on every call (the baseline has none).
        assert (row["latency_ms"]["watermark"] is None) == row["baseline"]
        for stage in ("keypoints", "generator", "watermark"):
            stats = row["latency_ms"][stage]
            if stats is not None:
                assert stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]


def test_one_row_per_backend_precision(full_run: tuple[Path, dict[str, Any], str]) -> None:
    _, results, _ = full_run
    rows, skipped = results["rows"], results["skipped"]
    assert not [s for s in skipped if s["status"] == "failed"], skipped
    for batch in BATCHES:
        baseline = [r for r in rows if r["baseline"] and r["batch"] == batch]
        assert len(baseline) == 1
        assert baseline[0]["speedup"] == pytest.approx(1.0)
        assert baseline[0]["latency_ms"]["keypoints"] is not None
    for backend in BACKENDS:
        for precision in PRECISIONS:
            measured = [
                r
                for r in rows
                if not r["baseline"] and r["label"] == backend and r["precision"] == precision
            ]
            unavailable = [
                s for s in skipped if s["label"] == backend and s["precision"] == precision
            ]
            if unavailable:
                assert not measured
                assert unavailable[0]["reason"].strip()
            else:
                assert sorted(r["batch"] for r in measured) == list(BATCHES)
    # The torch backend always runs fp32 on the CPU, with the per-stage split at batch 1.
    torch_b1 = next(r for r in rows if r["id"] == "torch/fp32/cpu/b1")
    assert torch_b1["latency_ms"]["keypoints"] is not None
    assert torch_b1["latency_ms"]["generator"] is not None


def test_errors_within_engine_tolerances(full_run: tuple[Path, dict[str, Any], str]) -> None:
    _, results, _ = full_run
    for row in results["rows"]:
        error = row["error"]
        assert error["frames"] >= row["batch"]
        if row["precision"] == "fp32":
            assert error["max_abs"] <= FP32_MAX, row["id"]
        else:
            assert error["mean_abs"] <= FP16_MEAN, row["id"]
            assert error["max_abs"] <= FP16_MAX, row["id"]


def test_markdown_and_png(full_run: tuple[Path, dict[str, Any], str]) -> None:
    out, results, _ = full_run
    markdown = (out / "run.md").read_text()
    assert "| row | batch | p50 ms |" in markdown
    for row in results["rows"]:
        assert f"| {row['label']} {row['precision']} {row['device']} | {row['batch']} |" in (
            markdown
        )
    png = (out / "run.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000


def test_compare_two_files(
    full_run: tuple[Path, dict[str, Any], str], capsys: pytest.CaptureFixture[str]
) -> None:
    out, results, _ = full_run
    slower = copy.deepcopy(results)
    for row in slower["rows"]:
        row["latency_ms"]["frame"]["p50"] *= 2
        row["fps"] /= 2
    slower["rows"] = slower["rows"][1:]  # the first row only in the old file
    new_path = out / "slower.json"
    new_path.write_text(json.dumps(slower))
    capsys.readouterr()
    assert main(["--compare", str(out / "run.json"), str(new_path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "change %" in text
    first = results["rows"][0]
    assert "(only in old)" in text
    lines = [line for line in text.splitlines() if "+100.0" in line]
    assert len(lines) == len(results["rows"]) - 1
    assert all("-50.0" in line for line in lines)
    report = out / "compare-run-vs-slower.md"
    assert report.read_text().count("+100.0") == len(results["rows"]) - 1
    assert f"{first['label']} {first['precision']} {first['device']} (only in old)" in text


def test_compare_with_a_new_run(
    full_run: tuple[Path, dict[str, Any], str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = full_run[0]
    golden = load_golden("tiny64")
    capsys.readouterr()
    args = _args(golden, out, "again", "--backends", "torch", "--precisions", "fp32")
    args += ["--devices", "cpu", "--baseline-device", "cpu", "--batches", "1,2", "--no-plot"]
    assert main([*args, "--compare", str(out / "run.json")]) == 0
    output = capsys.readouterr().out
    # The run's own table comes first, then the comparison.
    text = output[output.index("old p50 ms") :]
    for label in ("baseline fp32 cpu", "torch fp32 cpu"):
        line = next(line for line in text.splitlines() if line.startswith(label + " "))
        batch, old_ms, new_ms, change_ms, change_pct = line[len(label) :].split()[:5]
        assert batch == "1"
        assert float(change_ms) == pytest.approx(float(new_ms) - float(old_ms), abs=0.02)
        assert change_pct[0] in "+-" and np.isfinite(float(change_pct))
    assert "baseline fp32 cpu (only in new)" in text  # batch 2 is new
    assert "onnxruntime fp32 cpu (only in old)" in text  # not run again
    assert (out / "again.json").is_file() and not (out / "again.png").exists()
    assert (out / "again-vs-run.md").is_file()
    again = json.loads((out / "again.json").read_text())
    torch_rows = {r["batch"]: r for r in again["rows"] if r["label"] == "torch"}
    assert set(torch_rows) == {1, 2}
    assert torch_rows[1]["latency_ms"]["generator"] is not None
    assert torch_rows[2]["latency_ms"]["generator"] is None  # stages at the smallest batch
    for row in again["rows"]:
        assert row["error"]["max_abs"] <= FP32_MAX, row["id"]


def test_unavailable_backend_is_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    golden = load_golden("tiny64")
    args = _args(golden, tmp_path, "fp16", "--backends", "torch", "--precisions", "fp16")
    args += ["--devices", "cpu", "--baseline-device", "cpu", "--batches", "1", "--no-plot"]
    assert main(args) == 0
    results = json.loads((tmp_path / "fp16.json").read_text())
    assert [r["label"] for r in results["rows"]] == ["baseline"]
    (skip,) = results["skipped"]
    assert skip["status"] == "unavailable" and "fp16" in skip["reason"]
    assert "not measured" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backends", "torch,nope"], "--backends 'torch,nope': unknown 'nope'"),
        (["--batches", "0,4"], "--batches '0,4' is not a list of positive whole numbers"),
        (["--devices", "gpu"], "--devices 'gpu' is not a device"),
        (["--iterations", "0"], "--iterations 0: expected at least 1"),
        (["--compare", "a.json", "b.json", "c.json"], "--compare takes one or two"),
        (["--compare", "missing-old.json", "missing-new.json"], "does not exist"),
    ],
)
def test_user_errors(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*args, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_compare_refuses_other_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"rows": []}))
    assert main(["--compare", str(other), str(other), "--out", str(tmp_path)]) == 2
    assert "is not a benchmark results file" in capsys.readouterr().err
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"schema": SCHEMA.split("/")[0] + "/99"}))
    assert main(["--compare", str(newer), str(newer), "--out", str(tmp_path)]) == 2
    assert "Re-run the benchmark with this version" in capsys.readouterr().err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--compare" in capsys.readouterr().out


def test_summary_and_schedule() -> None:
    summary = summarize([5.0, 1.0, 3.0, 100.0, 2.0])
    assert summary["p50"] == 3.0 and summary["max"] == 100.0 and summary["min"] == 1.0
    assert summary["p50"] <= summary["p90"] <= summary["p99"] <= summary["max"]
    # Calls cycle through every frame, consecutive frames within a batch.
    assert frame_indices(0, 4, 6) == [0, 1, 2, 3]
    assert frame_indices(1, 4, 6) == [4, 5, 0, 1]
    covered = {i for call in range(3) for i in frame_indices(call, 2, 6)}
    assert covered == set(range(6))


def test_error_meter() -> None:
    reference = {0: np.zeros((3, 2, 2)), 1: np.ones((3, 2, 2))}
    meter = ErrorMeter(reference)
    prediction = np.stack([np.full((3, 2, 2), 0.5), np.ones((3, 2, 2))]).astype(np.float32)
    meter.add([0, 1], prediction)
    assert meter.result() == {"max_abs": 0.5, "mean_abs": 0.25, "frames": 2}


def test_inputs_from_folder_and_synthetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    golden = load_golden("tiny64")
    for index, frame in enumerate(golden.arrays["driving"][:3]):
        Image.fromarray(np.rint(frame * 255).astype(np.uint8)).save(tmp_path / f"{index:03}.png")
    frames = load_driving(tmp_path, 64, 3, max_frames=2)
    assert frames.shape == (2, 3, 64, 64)
    # 64x64 PNGs at 64 pixels round-trip exactly.
    np.testing.assert_array_equal(frames[1], golden.arrays["driving"][1].transpose(2, 0, 1))
    monkeypatch.setenv("AVATARCAM_SHARED", str(tmp_path / "nothing-here"))
    inputs = load_inputs(None, None, 64, 3, max_frames=5, seed=0)
    assert inputs.description["kind"] == "synthetic"
    assert inputs.source.shape == (1, 3, 64, 64) and inputs.driving.shape == (5, 3, 64, 64)
    assert inputs.driving.min() >= 0 and inputs.driving.max() <= 1
    assert not np.array_equal(inputs.driving[0], inputs.driving[1])
