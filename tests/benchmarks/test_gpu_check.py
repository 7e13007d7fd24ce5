"""``python -m benchmarks.gpu_check``: its contract and latency logic on the CPU with the tiny
golden (the hidden ``--device cpu --allow-cpu`` path), the results files, a wrong engine making
it exit non-zero, and the one-line exit 2 without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks import contract, gpu_runner, gpu_skips
from benchmarks.contract import Variant
from benchmarks.gpu_check import SCHEMA, main
from engines import FrameResult
from tests.conftest import ROOT, SHARED, shared_path

# What a GPU machine may lack: the check must run without importing any of these.
FORBIDDEN = ("mediapipe", "pyvirtualcam", "tensorrt", "PIL", "matplotlib", "live")
# None in sys.modules: import raises ImportError and find_spec says "not installed".
BLOCKER = """
import sys
for name in {forbidden!r}:
    sys.modules[name] = None
from benchmarks.gpu_check import main
sys.exit(main(sys.argv[1:]))
"""
CPU_ARGS = ["--device", "cpu", "--allow-cpu", "--goldens", "tiny64", "--iterations", "4"]


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One CPU run in a fresh interpreter that cannot import what a GPU machine may lack."""
    shared_path("fomm", "golden", "tiny64.npz")
    out = tmp_path_factory.mktemp("gpu-check")
    args = [
        *CPU_ARGS,
        "--variants",
        "torch-fp32,onnxruntime-fp16",
        "--batches",
        "1,2",
        "--shared",
        str(SHARED),
        "--out",
        str(out),
    ]
    code = BLOCKER.format(forbidden=FORBIDDEN)
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "AVATARCAM_HOME": str(out / "home")},
    )
    return {"result": result, "out": out}


@pytest.fixture(autouse=True)
def _engine_cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gpu_check keeps engines in the user's engine cache by default: not from tests."""
    monkeypatch.setenv("AVATARCAM_HOME", str(tmp_path / "home"))


@pytest.mark.slow
def test_cpu_run_passes_without_gpu_only_packages(cpu_run: dict[str, Any]) -> None:
    result = cpu_run["result"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "all results right" in result.stdout
    # The short table: every variant's contract verdict and its latency row.
    for name in ("torch-fp32", "onnxruntime-fp16", "baseline"):
        assert name in result.stdout
    assert "frames/s b2" in result.stdout


@pytest.mark.slow
def test_results_files(cpu_run: dict[str, Any]) -> None:
    out: Path = cpu_run["out"]
    results = json.loads((out / "gpu_check.json").read_text())
    assert results["schema"] == SCHEMA
    assert results["ok"] is True and results["problems"] == []
    assert results["device"] == "cpu" and results["gpu"] is None
    assert results["settings"]["latency_golden"] == "tiny64"
    assert results["versions"]["torch"] == torch.__version__

    golden = contract.load_golden_case(SHARED, "tiny64")
    rows = {row["variant"]: row for row in results["contract"]}
    assert set(rows) == {"torch-fp32", "onnxruntime-fp16"}
    for name, row in rows.items():
        assert row["status"] == "pass", row
        assert row["golden"] == "tiny64"
        assert 0 <= row["mean_abs"] <= row["max_abs"] <= row["tolerance"]["max_abs"]
        assert row["psnr_db"] > 40
        assert set(row["errors"]) == set(contract.expected_arrays(golden)), name
    assert rows["torch-fp32"]["engine"].startswith("torch (fp32, cpu")
    assert "CPUExecutionProvider" in rows["onnxruntime-fp16"]["engine"]
    # fp16 really ran in half precision: measurably different from fp32, still close.
    assert rows["onnxruntime-fp16"]["max_abs"] > 10 * rows["torch-fp32"]["max_abs"]

    cells = {(c["variant"], c["batch"]): c for c in results["latency"]}
    assert set(cells) == {
        (v, b) for v in ("baseline", "torch-fp32", "onnxruntime-fp16") for b in (1, 2)
    }
    for (variant, batch), cell in cells.items():
        assert cell["status"] == "ok", cell
        assert cell["calls"] >= 4 // batch
        assert 0 < cell["p50_ms"] <= cell["p99_ms"]
        assert cell["fps"] == pytest.approx(1000 * batch / cell["p50_ms"])
        base = cells[("baseline", batch)]
        assert cell["speedup"] == pytest.approx(base["p50_ms"] / cell["p50_ms"])
        assert cell["max_abs_vs_baseline"] <= (2e-4 if variant != "onnxruntime-fp16" else 8 / 255)

    report = (out / "gpu_check.md").read_text()
    assert report.startswith("# GPU check: ")
    assert "## Golden contract" in report and "## Latency: tiny64 (64x64)" in report
    assert "| tiny64 | onnxruntime-fp16 | pass |" in report
    assert "frames/s b1 | frames/s b2" in report
    assert "## Problems" not in report


class WrongEngine:
    """Wraps a real engine and spoils its frames: offset (wrong arithmetic) or stale (every
    frame repeats the first one, as a CUDA graph that captured nothing would)."""

    def __init__(self, engine: Any, fault: str):
        self._engine = engine
        self._fault = fault
        self._first: FrameResult | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def animate(self, driving: np.ndarray) -> FrameResult:
        result = self._engine.animate(driving)
        if self._fault == "offset":
            return FrameResult(result.prediction + 0.05, result.driving)
        if self._first is None:
            self._first = result
        return self._first


@pytest.mark.parametrize("fault", ["offset", "stale"])
def test_wrong_engine_exits_non_zero(
    fault: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    shared_path("fomm", "golden", "tiny64.npz")
    real = gpu_runner.start_engine
    monkeypatch.setattr(gpu_runner, "start_engine", lambda *args: WrongEngine(real(*args), fault))
    args = [*CPU_ARGS, "--variants", "torch-fp32", "--batches", "1", "--iterations", "2"]
    code = main([*args, "--shared", str(SHARED), "--out", str(tmp_path)])
    assert code == 1
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert results["command"].endswith(f"--out {tmp_path}")
    assert results["ok"] is False
    (row,) = results["contract"]
    assert row["status"] == "fail"
    assert any(p.startswith("prediction:") for p in row["problems"]), row["problems"]
    assert any(p.startswith("tiny64 torch-fp32: prediction") for p in results["problems"])
    out = capsys.readouterr().out
    assert "problem(s)" in out and "problem: tiny64 torch-fp32" in out
    assert "## Problems" in (tmp_path / "gpu_check.md").read_text()


def test_nothing_verified_is_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shared_path("fomm", "golden", "tiny64.npz")
    args = [*CPU_ARGS, "--variants", "torch-fp32", "--batches", "1", "--budget-s", "0"]
    assert main([*args, "--shared", str(SHARED), "--out", str(tmp_path)]) == 1
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [row["status"] for row in results["contract"]] == ["skipped"]
    assert "time budget" in results["contract"][0]["reason"]
    assert results["problems"] == ["nothing was verified: no variant passed the contract here"]
    out = capsys.readouterr().out
    assert "not run for lack of time (raise --budget-s)" in out


def test_no_gpu_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--out", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("gpu_check: no usable CUDA GPU: PyTorch")
    assert "NVIDIA GPU" in lines[0]
    assert not (tmp_path / "out").exists()


def test_cpu_needs_the_hidden_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "--device must be cuda" in capsys.readouterr().err


def test_missing_goldens_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main([*CPU_ARGS, "--shared", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "golden data missing" in err and "--shared PATH" in err


def test_judge_reports_errors_psnr_and_mode_differences() -> None:
    shared_path("fomm", "golden", "tiny64.npz")
    golden = contract.load_golden_case(SHARED, "tiny64")
    exact = contract.expected_arrays(golden)
    verdict = contract.judge(exact, golden, "fp32", "cpu")
    assert verdict["status"] == "pass" and verdict["max_abs"] == 0
    assert verdict["psnr_db"] == float("inf")

    noisy = {name: value.copy() for name, value in exact.items()}
    noisy["prediction"][2, 10, 10, 1] += 3e-4  # one value: over the CPU fp32 bound only
    assert contract.judge(noisy, golden, "fp32", "cpu")["status"] == "fail"
    # On CUDA the fp32 bound is looser (cuDNN/TensorRT kernels), but still below TF32's error:
    assert contract.judge(noisy, golden, "fp32", "cuda")["status"] == "pass"
    noisy["prediction"][2, 10, 10, 1] += 1e-2  # one value off like TF32's worst
    assert contract.judge(noisy, golden, "fp32", "cuda")["status"] == "fail"
    biased = {name: value + 2e-5 for name, value in exact.items()}  # under max, over mean
    verdict = contract.judge(biased, golden, "fp32", "cuda")
    assert verdict["status"] == "fail" and "mean abs error" in verdict["problems"][0]

    half = contract.judge(noisy, golden, "fp16", "cuda", eager=exact, fp32=exact)
    assert half["status"] == "pass"
    assert half["vs_eager_max_abs"] == pytest.approx(1.03e-2, rel=1e-3)
    assert 80 < half["psnr_vs_fp32_db"] < 120
    del noisy["prediction"]
    assert "output prediction missing" in contract.judge(noisy, golden, "fp16", "cuda")["problems"]


def test_variants_and_skip_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    names = [v.name for v in contract.variants("cuda")]
    for name in (
        "torch-fp32",
        "torch-fp16",
        "onnxruntime-fp32",
        "onnxruntime-fp16",
        "tensorrt-fp32",
        "tensorrt-fp16",
        "torch-fp32-cudagraph",
        "tensorrt-fp16-cudagraph",
        "torch-fp16-compile",
    ):
        assert name in names
    # Every mode comes after the eager run it is compared with.
    for index, name in enumerate(names):
        eager = Variant(*name.split("-")[:2]).name
        assert names.index(eager) <= index
    assert [v.name for v in contract.variants("cpu")] == [
        "torch-fp32",
        "onnxruntime-fp32",
        "onnxruntime-fp16",
    ]
    if not contract.compile_supported():
        why = gpu_runner.skip_reason(Variant("torch", "fp32", compiled=True), "cpu")
        assert why is not None and "EngineOptions.compile" in why[0]
    # No onnxscript (a GPU machine with only the minimal set): the exported backends are
    # skipped with the fix, not counted as failures; torch still runs.
    real_find_spec = gpu_skips.importlib.util.find_spec
    monkeypatch.setattr(
        gpu_skips.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxscript" else real_find_spec(name, *a),
    )
    why = gpu_runner.skip_reason(Variant("onnxruntime", "fp16"), "cpu")
    assert why is not None and "onnxscript" in why[0] and "pip install onnxscript" in why[1]
    assert gpu_runner.skip_reason(Variant("torch", "fp32"), "cpu") is None
    monkeypatch.undo()
    # A CPU-only onnxruntime wheel on a GPU machine: skipped with the command that fixes it.
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    why = gpu_runner.skip_reason(Variant("onnxruntime", "fp32"), "cuda")
    assert why is not None and why[0] == "no onnxruntime-gpu" and "avatarcam[gpu]" in why[1]
    # No TensorRT on the GPU machine: the row says exactly that.
    monkeypatch.setattr(
        gpu_skips.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorrt" else real_find_spec(name, *a),
    )
    why = gpu_runner.skip_reason(Variant("tensorrt", "fp16", cuda_graph=True), "cuda")
    assert why is not None and why[0] == "no TensorRT" and "avatarcam[gpu]" in why[1]


def test_cuda_problem_names_the_gpu_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert gpu_runner.cuda_problem("cuda") is None
    assert gpu_runner.cuda_problem("cuda:0") is None
    assert "PyTorch sees 1 GPU(s); use cuda:0 .. cuda:0" in gpu_runner.cuda_problem("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert "(CUDA 12.8) sees no GPU" in gpu_runner.cuda_problem("cuda")


def test_strict_fp32_turns_tf32_off_and_restores() -> None:
    holders = (torch.backends.cudnn.conv, torch.backends.cudnn.rnn, torch.backends.cuda.matmul)
    before = [h.fp32_precision for h in holders]
    with gpu_runner.strict_fp32("cpu"):
        assert [h.fp32_precision for h in holders] == before
    with gpu_runner.strict_fp32("cuda:0"):
        assert [h.fp32_precision for h in holders] == ["ieee"] * 3
    assert [h.fp32_precision for h in holders] == before
    torch.backends.cudnn.allow_tf32  # noqa: B018 - the legacy flag is still readable after
