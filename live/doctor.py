"""``python run_live.py --doctor``: one screen that says what works here and how to fix the rest.

Runs every probe of :mod:`live.probes` and :mod:`live.io_probes`, each bounded in time and
unable to crash the doctor, works out which backend ``--backend auto`` would start from what
actually loaded, and prints the findings by section, then every problem with the one command
that fixes it. It checks the run the other flags describe: a file or folder --input is opened
(no camera is probed), a --checkpoint is loaded against its config as the run loads it. Exit
status 0 when that run (by default webcam -> virtual camera) would work, 1 when it would not.
"""

from __future__ import annotations

import platform
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from engines.options import EngineOptions

from . import io_probes, probes
from .probes import Check

SECTIONS = (
    "GPU",
    "Backends",
    "Virtual camera",
    "Cameras",
    "Input",
    "Checkpoint",
    "Display",
    "Face detector",
)
MARK = {"ok": "[ ok ]", "info": "[info]", "warn": "[warn]", "fail": "[FAIL]"}


@dataclass(frozen=True)
class Probe:
    """One thing the doctor tries."""

    section: str  # heading its results go under
    name: str  # what it tries, for a timeout or crash
    run: Callable[[], list[Check]]  # the probe
    timeout: float  # seconds before it is reported as hanging
    required: bool  # a crash or timeout means the default live run cannot be trusted to work


def bounded(probe: Probe) -> list[Check]:
    """Run ``probe`` on a daemon thread; a timeout or an exception becomes a Check."""
    result: list[list[Check]] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(probe.run())
        except BaseException as exc:  # the doctor must outlive anything a probe does
            error.append(exc)

    thread = threading.Thread(target=target, name=f"doctor-{probe.name}", daemon=True)
    thread.start()
    thread.join(probe.timeout)
    status = "fail" if probe.required else "warn"
    if thread.is_alive():
        detail = f"did not finish within {probe.timeout:g} s (something hangs: a driver or device)"
        return [Check(probe.section, probe.name, status, detail)]
    if error:
        detail = f"the check itself failed: {probes.first_line(error[0])}"
        return [Check(probe.section, probe.name, status, detail, probes.FIX_REINSTALL)]
    return result[0]


@dataclass(frozen=True)
class DoctorOptions:
    """What the live run would be asked to do (the command line's defaults)."""

    engine: EngineOptions = field(default_factory=EngineOptions)  # backend, precision, device
    checkpoint: Path | None = None  # --checkpoint; None: the default folders
    camera: str = "0"  # --input: a camera, or a file or folder (then no camera is probed)
    virtual_camera_device: str | None = None  # --virtual-cam-device
    virtual_camera: bool | None = None  # --virtual-cam / --no-virtual-cam; None: cameras only
    config: str | None = None  # --config; None: the checkpoint's own
    resolution: int | None = None  # --resolution

    @property
    def live(self) -> bool:
        """Whether --input is a camera (index or /dev/videoN) rather than a file or folder."""
        text = str(self.camera).strip()
        return text.isdigit() or text.startswith("/dev/video")

    def describe(self) -> str:
        """The run these options would start, in words, for the verdict."""
        if self.live:
            if self.camera == "0" and self.virtual_camera is not False:
                return "the default live run (webcam -> virtual camera)"
            out = "virtual camera" if self.virtual_camera is not False else "preview"
            return f"the live run (camera {self.camera} -> {out})"
        return f"the run from {self.camera}"


def default_probes(options: DoctorOptions) -> list[Probe]:
    """Every probe the run of ``options`` needs, in the order they are shown: a file input is
    opened instead of probing cameras, and the virtual camera only when it would be used."""
    live = options.live
    virtual_camera = options.virtual_camera if options.virtual_camera is not None else live
    probes_list = [
        Probe("GPU", "torch", probes.probe_torch, 60.0, True),
        Probe(
            "Backends",
            "onnxruntime",
            lambda: probes.probe_onnxruntime(_gpu_present()),
            120.0,
            False,
        ),
        Probe("Backends", "tensorrt", lambda: probes.probe_tensorrt(_gpu_present()), 60.0, False),
        Probe("Backends", "openvino", probes.probe_openvino, 60.0, False),
        Probe(
            "Virtual camera",
            "virtual camera",
            lambda: io_probes.probe_virtual_camera(options.virtual_camera_device),
            20.0,
            True,
        ),
        Probe("Cameras", "cameras", lambda: io_probes.probe_cameras(options.camera), 30.0, True),
        Probe("Input", "input", lambda: io_probes.probe_input(options.camera), 30.0, True),
        Probe(
            "Checkpoint",
            "checkpoint",
            lambda: io_probes.probe_checkpoint(
                options.checkpoint, options.config, options.resolution
            ),
            120.0,  # a --checkpoint is read and checked whole, as the run does
            True,
        ),
        Probe("Display", "preview window", io_probes.probe_display, 30.0, False),
        Probe("Face detector", "MediaPipe", io_probes.probe_face_detector, 30.0, True),
    ]
    skip = {"cameras"} if not live else {"input"}
    if not virtual_camera:
        skip.add("virtual camera")
    return [probe for probe in probes_list if probe.name not in skip]


def _gpu_present() -> bool:
    """An NVIDIA GPU that PyTorch sees, or whose driver is present without PyTorch seeing it."""
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except Exception:
        pass
    return probes.nvidia_gpu_present()


def _requirement(backend: str, device: str) -> tuple[str, ...]:
    """Keys of the checks that must be ok for ``backend`` on ``device`` to start."""
    gpu = device.startswith("cuda")
    if backend == "tensorrt":
        return ("torch:cuda", "tensorrt")
    if backend == "onnxruntime":
        return ("ort:CUDAExecutionProvider",) if gpu else ("ort:CPUExecutionProvider",)
    if backend == "torch":
        return ("torch:cuda",) if gpu else ("torch:cpu",)
    if backend == "openvino":
        return ("openvino",)
    return (f"unprobed:{backend}",)  # a backend the doctor does not try: never assumed to work


def backend_choice(checks: Sequence[Check], engine: EngineOptions, gpu: bool) -> Check:
    """Which backend the live run would start, from what loaded here (the order of
    :func:`engines.select.candidates`)."""
    from engines.select import MEASURED_CPU, candidates, precheck

    ok = {c.key for c in checks if c.status == "ok"}
    name = f"--backend {engine.backend}"
    not_used = []
    try:
        pairs = candidates(engine)
    except Exception as exc:
        return Check("Backends", name, "fail", probes.first_line(exc), None, "engine")

    def usable(backend: str, device: str) -> bool:
        missing = [key for key in _requirement(backend, device) if key not in ok]
        return precheck(backend, device, engine.precision) is None and not missing

    for backend, device in pairs:
        if usable(backend, device):
            detail = f"would run {backend} on {device} ({engine.precision})"
            raced = [b for b, d in pairs if d == "cpu" and b in MEASURED_CPU and usable(b, d)]
            if engine.backend == "auto" and device == "cpu" and len(raced) > 1:
                # auto times these once on this CPU and keeps the faster (engines.select).
                detail = (
                    f"would run the faster of {' and '.join(raced)} on cpu "
                    f"({engine.precision}), timed once on this CPU and cached"
                )
            if not_used:
                detail += "; not usable: " + ", ".join(not_used)
            if gpu and not device.startswith("cuda"):
                detail = f"{detail}. An NVIDIA GPU is here but nothing runs on it: see the fixes"
                return Check("Backends", name, "warn", detail, None, "engine")
            return Check("Backends", name, "ok", detail, None, "engine")
        not_used.append(f"{backend} on {device}")
    detail = f"no backend can start ({', '.join(not_used)})"
    return Check("Backends", name, "fail", detail, probes.FIX_REINSTALL, "engine")


def diagnose(options: DoctorOptions, probe_list: list[Probe] | None = None) -> list[Check]:
    """Run the probes and add the backend choice."""
    checks: list[Check] = []
    with warnings.catch_warnings():  # findings are reported as checks, not as warnings
        warnings.simplefilter("ignore")
        for probe in probe_list if probe_list is not None else default_probes(options):
            checks.extend(bounded(probe))
    gpu = any(c.key.startswith("torch:cuda") and c.status != "info" for c in checks)
    checks.append(backend_choice(checks, options.engine, gpu))
    return checks


def works(checks: Sequence[Check]) -> bool:
    """Whether the default live run would work: nothing failed."""
    return not any(c.status == "fail" for c in checks)


def render(
    checks: Sequence[Check],
    versions: str,
    run: str = "the default live run (webcam -> virtual camera)",
) -> str:
    """The doctor's screen; ``run`` names the run it checked, for the verdict."""
    system = f"{platform.system()} {platform.release()} {platform.machine()}"
    lines = [
        f"avatarcam doctor: {system}, Python {platform.python_version()}",
        f"Versions: {versions}",
    ]
    width = max((len(c.name) for c in checks), default=10)
    for section in (*SECTIONS, *sorted({c.section for c in checks} - set(SECTIONS))):
        found = [c for c in checks if c.section == section]
        if not found:
            continue
        lines.append(section)
        lines += [f"  {MARK[c.status]} {c.name.ljust(width)}  {c.detail}" for c in found]
    problems = [c for c in checks if c.fix and c.status in ("fail", "warn")]
    if problems:
        lines.append("")
        lines.append("To fix:")
        for number, check in enumerate(problems, 1):
            kind = "needed" if check.status == "fail" else "advised"
            lines.append(f"  {number}. {check.name} ({kind}): {check.fix}")
    lines.append("")
    if works(checks):
        lines.append(f"Verdict: {run} would work.")
    else:
        failed = sum(c.status == "fail" for c in checks)
        files = not any(c.key in ("input", "checkpoint") and c.status == "fail" for c in checks)
        lines.append(
            f"Verdict: {run} would NOT work: {failed} problem(s) marked FAIL."
            + (
                " Files still work: python run_live.py --avatar me.jpg --input clip.mp4 "
                "--output out.mp4"
                if files and "live run" in run
                else ""
            )
        )
    return "\n".join(lines)


def run_doctor(
    options: DoctorOptions | None = None,
    out: TextIO | None = None,
    probe_list: list[Probe] | None = None,
) -> int:
    """Diagnose, print the screen to ``out`` (stdout); 0 when the live run would work, else 1."""
    options = options or DoctorOptions()
    out = out or sys.stdout
    print(
        "avatarcam doctor: trying each backend, device and camera ...", file=sys.stderr, flush=True
    )
    checks = diagnose(options, probe_list)
    try:
        versions = probes.versions_line()
    except Exception as exc:
        versions = f"unknown ({probes.first_line(exc)})"
    print(render(checks, versions, options.describe()), file=out, flush=True)
    return 0 if works(checks) else 1
