"""The control page in headless Chromium (Debian's chromium + chromium-driver, Selenium), on a
run of the real pipeline: a paced file input, two avatars, the tiny golden model.

Skips with a reason when Chromium, its driver or Selenium is missing; fails under CI=true.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from engines.options import EngineOptions
from live.app import run
from live.options import CaptureOptions, ModelOptions, OutputOptions, RunOptions
from live.ui.options import UiOptions
from tests.conftest import load_golden, shared_path

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromedriver")
WAIT = 25.0  # seconds any one step may take on two shared cores


def _need_browser() -> None:
    missing = [path for path in CHROMIUM if not Path(path).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if missing:
        message = f"headless browser test needs {', '.join(missing)} (apt-get install chromium "
        message += "chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def _driving_clip(folder: Path, seconds: float = 40.0, fps: float = 10.0) -> Path:
    """The talking-head GIF, small and repeated to ``seconds``, as an H.264 MP4."""
    import av
    from PIL import Image, ImageSequence

    frames = []
    with Image.open(shared_path("media", "driving", "mona-talking.gif")) as gif:
        for frame in ImageSequence.Iterator(gif):
            frames.append(np.asarray(frame.convert("RGB").resize((300, 202))))
    path = folder / "driving.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = 300, 202, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(int(seconds * fps)):
            image = av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")
            container.mux(stream.encode(image))
        container.mux(stream.encode())
    return path


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in list(self.messages):
                if message.startswith(prefix):
                    return message
            time.sleep(0.05)
        raise AssertionError(f"no log line starting {prefix!r} in {timeout}s: {self.messages}")


@dataclass
class _Run:
    url: str
    avatars: Path
    log: _Records
    thread: threading.Thread
    errors: list[BaseException]


@pytest.fixture
def live_run(tmp_path: Path) -> Iterator[_Run]:
    _need_browser()
    golden = load_golden("tiny64")
    avatars = tmp_path / "avatars"
    avatars.mkdir()
    for name in ("einstein.jpg", "obama.jpg"):
        shutil.copy(shared_path("media", "avatars", name), avatars / name)
    options = RunOptions(
        avatar=avatars,
        capture=CaptureOptions(input=str(_driving_clip(tmp_path)), timing="paced"),
        output=OutputOptions(virtual_camera=False, preview=False),
        model=ModelOptions(
            checkpoint=golden.checkpoint, config=str(golden.config), resolution=golden.resolution
        ),
        engine=EngineOptions(backend="torch"),
        ui=UiOptions(port=0, open_browser=False),
    )
    records = _Records()
    logger = logging.getLogger("avatarcam")
    logger.addHandler(records)
    level = logger.level
    logger.setLevel(logging.INFO)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run(options)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="live-run", daemon=True)
    thread.start()
    try:
        line = records.wait_for("control page: ", 60)
        yield _Run(line.removeprefix("control page: "), avatars, records, thread, errors)
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
        thread.join(timeout=20)


def _image_stats(driver, element_id: str) -> tuple[float, float]:
    """(standard deviation, mean) of the pixels the <img> shows now."""
    script = """
        const img = document.getElementById(arguments[0]);
        if (!img.naturalWidth) return null;
        const c = document.createElement("canvas");
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const ctx = c.getContext("2d"); ctx.drawImage(img, 0, 0);
        const d = ctx.getImageData(0, 0, c.width, c.height).data;
        let s = 0, s2 = 0, n = 0;
        for (let i = 0; i < d.length; i += 4) { const v = d[i + 1]; s += v; s2 += v * v; n++; }
        const m = s / n; return [Math.sqrt(s2 / n - m * m), m];
    """
    found = driver.execute_script(script, element_id)
    return (0.0, 0.0) if found is None else (float(found[0]), float(found[1]))


def _snapshot(driver, after: int = 0) -> tuple[int, int, np.ndarray]:
    """(avatar index, frame number, pixels) of the newest /obs frame after ``after``."""
    script = """
        const done = arguments[arguments.length - 1];
        fetch("/api/snapshot/obs.jpg?after=" + arguments[0]).then(async (r) => {
            const bytes = new Uint8Array(await r.arrayBuffer());
            let text = ""; for (const b of bytes) text += String.fromCharCode(b);
            done([r.status, r.headers.get("X-Avatar-Index"), r.headers.get("X-Frame"),
                  btoa(text)]);
        }).catch((e) => done([0, null, null, String(e)]));
    """
    status, avatar, frame, data = driver.execute_async_script(script, after)
    assert status == 200, f"snapshot failed: {status} {data[:200]}"
    import cv2

    pixels = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
    return int(avatar), int(frame), pixels


def _state(driver) -> dict:
    script = """
        const done = arguments[arguments.length - 1];
        fetch("/api/state").then((r) => r.json()).then(done).catch((e) => done({error: String(e)}));
    """
    return driver.execute_async_script(script)


def _until(condition, timeout: float = WAIT, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_page_drives_the_live_run(live_run: _Run, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    chrome = webdriver.ChromeOptions()
    chrome.binary_location = CHROMIUM[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        chrome.add_argument(argument)
    chrome.add_argument("--window-size=1200,1000")
    driver = webdriver.Chrome(options=chrome, service=Service(executable_path=CHROMIUM[1]))
    driver.set_script_timeout(WAIT)
    driver.set_page_load_timeout(WAIT)
    try:
        driver.get(live_run.url)
        # The live view streams something that is not a flat picture.
        _until(lambda: _image_stats(driver, "live")[0] > 10, what="a non-blank live view")
        assert "not connected" not in driver.find_element(By.ID, "status").text

        first_avatar, first_frame, before = _snapshot(driver)
        assert first_avatar == 0
        # Switch to the second avatar by clicking its thumbnail.
        driver.find_element(By.CSS_SELECTOR, '#gallery figure[data-index="1"]').click()
        _until(lambda: _state(driver).get("avatar") == 1, what="the second avatar")
        found = _until(
            lambda: (shot := _snapshot(driver, first_frame))[0] == 1 and shot,
            what="frames of the second avatar",
        )
        _, _, after = found
        difference = np.abs(after.astype(np.int16) - before.astype(np.int16)).mean()
        assert difference > 5, f"the frames did not change with the avatar ({difference:.1f})"

        # Recalibrate: the loop takes the next face frame as its reference.
        driver.find_element(By.ID, "calibrate").click()
        live_run.log.wait_for("recalibrating", WAIT)

        # A photo without a face is refused, and nothing is saved.
        blank = tmp_path / "wall.png"
        import cv2

        gradient = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))
        cv2.imwrite(str(blank), cv2.merge([gradient, gradient, gradient]))
        before_files = sorted(p.name for p in live_run.avatars.iterdir())
        driver.find_element(By.ID, "file").send_keys(str(blank))
        result = _until(
            lambda: (
                driver.find_element(By.ID, "upload-result").text.startswith("refused")
                and driver.find_element(By.ID, "upload-result").text
            ),
            what="the refusal of the upload",
        )
        assert "No face found in wall.png" in result
        assert sorted(p.name for p in live_run.avatars.iterdir()) == before_files

        shot = Path(os.environ.get("AVATARCAM_SCREENSHOT", tmp_path / "page.png"))
        assert driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        driver.find_element(By.ID, "quit").click()
        live_run.thread.join(timeout=WAIT)
        assert not live_run.thread.is_alive(), "quit on the page did not stop the run"
        assert not live_run.errors, live_run.errors
    finally:
        driver.quit()
