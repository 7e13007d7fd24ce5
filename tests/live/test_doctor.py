"""``--doctor``: the real run on this machine (no GPU, ONNX Runtime on the CPU, no virtual
camera, each with its fix, exit 1), the exit-0 path with the environment's facts monkeypatched
under the real probes, each failure's fix line, the backend choice, and probes that hang or
crash."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
import torch

from engines.options import EngineOptions
from live import doctor, io_probes, probes
from live.cameras import CameraInfo
from live.cli import main
from live.doctor import DoctorOptions, Probe
from live.errors import VirtualCameraError
from live.probes import Check

V4L2_MODULE_LOADED = Path("/sys/module/v4l2loopback").exists()


def _camera(index: int) -> CameraInfo:
    return CameraInfo(index, f"/dev/video{index}", "USB Camera", 640, 480, 30.0)


def _by_name(text: str) -> dict[str, str]:
    """The screen's finding lines by name (the text after the status mark)."""
    found = {}
    for line in text.splitlines():
        for mark in doctor.MARK.values():
            if line.startswith(f"  {mark} "):
                rest = line[len(mark) + 3 :]
                name, _, detail = rest.partition("  ")
                found[name.strip()] = f"{mark} {detail.strip()}"
    return found


def test_real_run_here(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AVATARCAM_HOME", "/nonexistent-avatarcam-home")
    monkeypatch.chdir(tmp_path)  # no ./checkpoints
    code = main(["--doctor"])
    out = capsys.readouterr().out
    lines = _by_name(out)
    assert "Versions: torch " in out and "ONNX Runtime " in out
    if not torch.cuda.is_available():
        assert lines["NVIDIA GPU"].startswith(("[info] none found", "[warn] an NVIDIA GPU"))
        assert "CUDA none (CPU build)" in out
    assert lines["torch on cpu"].startswith("[ ok ]")
    assert lines["onnxruntime CPUExecutionProvider"] == "[ ok ] a tiny session ran on it"
    if not torch.cuda.is_available():
        assert lines["--backend auto"].startswith(
            "[ ok ] would run the faster of openvino and onnxruntime on cpu"
        )
    if not V4L2_MODULE_LOADED:
        assert lines["virtual camera"].startswith("[FAIL] no v4l2loopback device")
        assert "virtual camera (needed): " in out and "sudo modprobe v4l2loopback" in out
    assert lines["checkpoint"].startswith("[FAIL]")
    assert "checkpoint (needed): python run_live.py --avatar me.jpg --download" in out
    assert "/nonexistent-avatarcam-home/checkpoints/" in out
    assert "would NOT work" in out
    assert code == 1


@pytest.fixture
def healthy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine where everything the live run needs is present (facts monkeypatched)."""
    home = tmp_path / "home"
    (home / "checkpoints").mkdir(parents=True)
    (home / "checkpoints" / "vox-adv-cpk.pth.tar").write_bytes(b"\0" * (2 << 20))
    monkeypatch.setenv("AVATARCAM_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        io_probes, "loopback_devices", lambda *a: [(Path("/dev/video10"), "Avatarcam")]
    )
    monkeypatch.setattr(io_probes.os, "access", lambda *a: True)
    monkeypatch.setattr(io_probes, "installed", lambda module: True)
    monkeypatch.setattr(io_probes, "open_virtual_camera", lambda device: "/dev/video10")
    monkeypatch.setattr(io_probes, "list_cameras", lambda: [_camera(0)])
    monkeypatch.setattr("live.preview.display_available", lambda timeout=0: True)
    return home


def test_exit_0_when_the_live_run_would_work(healthy: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["--doctor"])
    out = capsys.readouterr().out
    lines = _by_name(out)
    assert lines["virtual camera"].startswith("[ ok ] /dev/video10 opens")
    assert lines["camera 0"].startswith("[ ok ] 0 (/dev/video0): 640x480 @ 30 fps")
    assert lines["checkpoint"].startswith("[ ok ] ") and "vox-adv-cpk.pth.tar (2 MiB)" in out
    assert lines["preview window"] == "[ ok ] an OpenCV window opens"
    assert lines["MediaPipe"] == "[ ok ] the face detector starts"
    assert "[FAIL]" not in out
    assert "Verdict: the default live run (webcam -> virtual camera) would work." in out
    assert code == 0


def _only(checks: list[Check]) -> Check:
    (check,) = checks
    return check


def test_virtual_camera_fixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(io_probes.platform, "system", lambda: "Linux")
    monkeypatch.setattr(io_probes, "loopback_devices", lambda *a: [])
    monkeypatch.setattr(io_probes, "SYSFS_MODULE", tmp_path / "no-module")
    monkeypatch.setattr(io_probes, "v4l2loopback_installed", lambda: False)
    check = _only(io_probes.probe_virtual_camera())
    assert check.status == "fail" and check.fix == probes.FIX_V4L2_INSTALL
    assert check.fix.startswith("sudo apt install v4l2loopback-dkms && sudo modprobe v4l2loopback")

    monkeypatch.setattr(io_probes, "v4l2loopback_installed", lambda: True)
    check = _only(io_probes.probe_virtual_camera())
    assert "installed but not loaded" in check.detail and check.fix == probes.V4L2_LOAD

    monkeypatch.setattr(io_probes, "SYSFS_MODULE", tmp_path)  # loaded, without devices
    check = _only(io_probes.probe_virtual_camera())
    assert check.fix.startswith("sudo modprobe -r v4l2loopback && sudo modprobe v4l2loopback")

    monkeypatch.setattr(
        io_probes, "loopback_devices", lambda *a: [(Path("/dev/video10"), "Avatarcam")]
    )
    monkeypatch.setattr(io_probes.os, "access", lambda *a: False)
    check = _only(io_probes.probe_virtual_camera())
    assert check.status == "fail" and check.fix == probes.FIX_VIDEO_GROUP
    assert "/dev/video10 (Avatarcam)" in check.detail

    monkeypatch.setattr(io_probes.os, "access", lambda *a: True)
    monkeypatch.setattr(io_probes, "installed", lambda module: module != "pyvirtualcam")
    check = _only(io_probes.probe_virtual_camera())
    assert "pyvirtualcam" in check.detail and check.fix == probes.FIX_REINSTALL

    def refuse(device: str | None) -> str:
        raise VirtualCameraError("Could not open a virtual camera: device busy\nmore help")

    monkeypatch.setattr(io_probes, "installed", lambda module: True)
    monkeypatch.setattr(io_probes, "open_virtual_camera", refuse)
    check = _only(io_probes.probe_virtual_camera())
    assert check.status == "fail" and "device busy" in check.detail
    assert "sudo modprobe -r v4l2loopback" in check.fix

    monkeypatch.setattr(io_probes.platform, "system", lambda: "Windows")
    assert _only(io_probes.probe_virtual_camera()).fix == probes.FIX_OBS


def test_loopback_devices_from_sysfs(tmp_path: Path) -> None:
    sysfs = tmp_path / "class"
    sysfs.mkdir()
    real = tmp_path / "devices" / "pci0000:00" / "usb1" / "video4linux" / "video0"
    virtual = tmp_path / "devices" / "virtual" / "video4linux" / "video10"
    for folder, name in ((real, "USB Camera"), (virtual, "Avatarcam")):
        folder.mkdir(parents=True)
        (folder / "name").write_text(name + "\n")
        (sysfs / folder.name).symlink_to(folder)
    found = io_probes.loopback_devices(sysfs, Path("/dev"))
    assert found == [(Path("/dev/video10"), "Avatarcam")]


def test_camera_fixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(io_probes.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(io_probes, "list_cameras", lambda: [])
    check = _only(io_probes.probe_cameras())
    assert check.status == "fail" and check.fix == probes.FIX_CAMERA
    assert "--input clip.mp4" in check.fix

    monkeypatch.setattr(io_probes, "list_cameras", lambda: [_camera(2)])
    check = _only(io_probes.probe_cameras("0"))
    assert check.status == "fail" and check.fix == "python run_live.py --avatar me.jpg --input 2"
    assert _only(io_probes.probe_cameras("2")).status == "ok"
    assert _only(io_probes.probe_cameras("clip.mp4")).status == "ok"


def test_checkpoint_fixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATARCAM_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    check = _only(io_probes.probe_checkpoint())
    assert check.status == "fail"
    assert check.fix.startswith("python run_live.py --avatar me.jpg --download")
    assert check.fix.endswith(f"{tmp_path / 'home' / 'checkpoints'}/")
    stub = tmp_path / "checkpoints" / "vox-cpk.pth.tar"
    stub.parent.mkdir()
    stub.write_bytes(b"<html>")
    check = _only(io_probes.probe_checkpoint())
    assert check.status == "fail" and "incomplete download" in check.detail
    check = _only(io_probes.probe_checkpoint(tmp_path / "missing.pth.tar"))
    assert check.status == "fail" and "is not a file" in check.detail


def test_gpu_and_backend_fixes(monkeypatch: pytest.MonkeyPatch) -> None:
    # An NVIDIA GPU PyTorch cannot use: a warning with the command that installs CUDA torch.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(probes, "nvidia_gpu_present", lambda: True)
    monkeypatch.setattr(torch.version, "cuda", None)
    gpu = next(c for c in probes.probe_torch() if c.key == "torch:cuda")
    assert gpu.status == "warn" and gpu.fix == probes.FIX_TORCH_CUDA
    assert "runs on the CPU, slowly" in gpu.detail
    # The CPU-only onnxruntime wheel on a GPU machine.
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    checks = probes.probe_onnxruntime(gpu=True)
    wheel = next(c for c in checks if c.name == "onnxruntime on GPU")
    assert wheel.status == "warn" and wheel.fix == probes.FIX_ORT_GPU
    # onnxruntime-gpu whose CUDA provider does not load (e.g. no cuDNN): named, with the fix.
    monkeypatch.setattr(
        onnxruntime,
        "get_available_providers",
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    monkeypatch.setattr(
        probes,
        "try_provider",
        lambda ort, model, provider: (
            None
            if provider == "CPUExecutionProvider"
            else "ONNX Runtime fell back to ['CPUExecutionProvider']"
        ),
    )
    checks = {c.name: c for c in probes.probe_onnxruntime(gpu=True)}
    cuda = checks["onnxruntime CUDAExecutionProvider"]
    assert cuda.status == "warn" and cuda.fix == probes.FIX_ORT_GPU and "fell back" in cuda.detail
    assert checks["onnxruntime CPUExecutionProvider"].status == "ok"
    # TensorRT missing on a GPU machine.
    monkeypatch.setattr(probes, "installed", lambda module: module != "tensorrt")
    trt = _only(probes.probe_tensorrt(gpu=True))
    assert trt.status == "warn" and trt.fix == "pip install 'avatarcam[gpu]'"


def test_provider_that_does_not_load_is_reported() -> None:
    import onnxruntime

    why = probes.try_provider(onnxruntime, probes.tiny_onnx_model(), "NoSuchExecutionProvider")
    assert why is not None
    assert (
        probes.try_provider(onnxruntime, probes.tiny_onnx_model(), "CPUExecutionProvider") is None
    )


def test_display_and_face_detector_fixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("live.preview.display_available", lambda timeout=0: False)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    check = _only(io_probes.probe_display())
    assert check.status == "warn" and check.fix == probes.FIX_DISPLAY

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("model file corrupt")

    monkeypatch.setattr("live.face.FaceDetector", broken)
    check = _only(io_probes.probe_face_detector())
    assert check.status == "fail" and "model file corrupt" in check.detail


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engines.select._cuda_available", lambda: True)
    monkeypatch.setattr("engines.select._installed", lambda module: True)
    ok = [
        Check("GPU", "torch on cuda:0", "ok", "", key="torch:cuda"),
        Check("Backends", "tensorrt", "ok", "", key="tensorrt"),
        Check("Backends", "torch on cpu", "ok", "", key="torch:cpu"),
        Check("Backends", "ort cpu", "ok", "", key="ort:CPUExecutionProvider"),
    ]
    choice = doctor.backend_choice(ok, EngineOptions(), gpu=True)
    assert choice.status == "ok" and choice.detail == "would run tensorrt on cuda (fp32)"
    choice = doctor.backend_choice(ok[1:], EngineOptions(), gpu=True)  # torch cannot use the GPU
    assert choice.status == "warn" and "onnxruntime on cpu" in choice.detail
    assert "not usable: tensorrt on cuda, onnxruntime on cuda, torch on cuda" in choice.detail
    choice = doctor.backend_choice([], EngineOptions(backend="torch"), gpu=False)
    assert choice.status == "fail"


def test_hanging_or_crashing_probes_do_not_stop_the_doctor() -> None:
    def hang() -> list[Check]:
        time.sleep(5)
        return []

    def crash() -> list[Check]:
        raise ZeroDivisionError("boom")

    begin = time.perf_counter()
    out = io.StringIO()
    code = doctor.run_doctor(
        DoctorOptions(),
        out,
        [
            Probe("Cameras", "cameras", hang, 0.2, True),
            Probe("Display", "preview window", crash, 5.0, False),
            Probe(
                "Backends",
                "torch",
                lambda: [Check("Backends", "t", "ok", "", key="torch:cpu")],
                5.0,
                True,
            ),
        ],
    )
    assert time.perf_counter() - begin < 4
    lines = _by_name(out.getvalue())
    assert (
        lines["cameras"]
        == "[FAIL] did not finish within 0.2 s (something hangs: a driver or device)"
    )
    assert lines["preview window"].startswith(
        "[warn] the check itself failed: ZeroDivisionError: boom"
    )
    assert code == 1
