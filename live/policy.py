"""The frame policy: what the outputs show for one framed camera frame.

Pure state, no threads: pause, no face (hold the last frame or show the avatar at rest), an
engine that is briefly unavailable (a remote server reconnecting), best-frame calibration,
avatar switches and the motion controls. The live loop (:mod:`live.loop`) calls it on its
animation thread; tests drive it directly with a fake animator.

Every engine call that can fail while a server reconnects (animating, calibrating, switching
the avatar, changing the motion) is inside the ``EngineUnavailable`` guard: a blip costs only
the frame or the action it happened in, never the session, and state changes only once the
engine call behind it succeeded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from engines.errors import EngineUnavailable

from .animator import Animator, normalized_keypoints
from .pipeline import PreparedAvatar

log = logging.getLogger("avatarcam")

NoFace = Literal["hold", "rest"]


@dataclass(frozen=True)
class Shown:
    """The image the outputs get for one frame, before it is marked."""

    image: np.ndarray  # R x R x 3 uint8; owned by the animator (copy to keep it)
    status: str  # "ok", "paused: ...", "no face: ...", "engine: ...", ...
    from_engine: bool  # made by the engine (it carries the engine's marks, if any)


class FramePolicy:
    """Decides, frame by frame, what is shown; holds the avatar, pause and calibration state."""

    def __init__(
        self,
        animator: Animator,
        avatars: list[PreparedAvatar],
        *,
        no_face: NoFace = "hold",
        best_frame: bool = False,
    ):
        if not avatars:
            raise ValueError("FramePolicy needs at least one avatar")
        self.animator = animator  # engine and motion state
        self.avatars = avatars  # framed avatar photos
        self.no_face = no_face  # without a face: the last frame, or the avatar at rest
        self.best_frame = best_frame  # calibrate on the pose closest to the avatar's
        self.paused = False
        self.avatar_index = 0  # the avatar shown; changes only once the engine took it
        self._avatar_set = False
        self._avatar_norm: np.ndarray | None = None
        self._best_distance = float("inf")
        self._last_output: np.ndarray | None = None  # this avatar's last animated frame
        size = animator.resolution
        self._out = np.empty((size, size, 3), np.uint8)  # animated frames, reused

    # --- actions (each raises EngineUnavailable when the engine call behind it failed) ------

    def select_avatar(self, index: int) -> bool:
        """Switch to avatar ``index``; False (and a log line) when there is none such."""
        if not 0 <= index < len(self.avatars):
            log.info("there is no avatar %d (%d loaded)", index + 1, len(self.avatars))
            return False
        avatar = self.avatars[index]
        self.animator.set_avatar(avatar.image)  # may raise: nothing has changed yet
        self.avatar_index = index
        self._avatar_set = True
        self._avatar_norm = normalized_keypoints(self.animator.avatar_keypoints.value)
        self._last_output = None  # the previous avatar's last frame is not held
        if self.best_frame:
            self.restart_calibration()
        log.info("avatar %d/%d: %s", index + 1, len(self.avatars), avatar.name)
        return True

    def step_avatar(self, step: int) -> bool:
        """Switch to the next (+1) or previous (-1) avatar, wrapping around."""
        return self.select_avatar((self.avatar_index + step) % len(self.avatars))

    def restart_calibration(self) -> None:
        """Forget the reference pose: the next frame with a face (in best-frame mode: the
        closest pose from now on) becomes the neutral one."""
        self._best_distance = float("inf")
        self.animator.reset_calibration()

    def toggle_best_frame(self) -> None:
        self.best_frame = not self.best_frame
        self.restart_calibration()

    def toggle_pause(self) -> None:
        self.paused = not self.paused

    def set_motion_scale(self, scale: float) -> None:
        """Motion strength (see :class:`~live.animator.MotionOptions`)."""
        self.animator.set_motion_scale(scale)

    def set_motion_smoothing(self, strength: float) -> None:
        """Keypoint smoothing (see :class:`~live.animator.MotionOptions`)."""
        self.animator.set_motion_smoothing(strength)

    # --- frames ---------------------------------------------------------------------------

    def rest(self, status: str) -> Shown:
        return Shown(self.animator.rest_image, status, from_engine=False)

    def frame(
        self, crop: np.ndarray | None, holding: bool = False, pts: float | None = None
    ) -> Shown:
        """What to show for one frame: ``crop`` is its R x R x 3 driving crop, None when no
        face was found; ``holding`` when the crop is the last face position held; ``pts``
        its capture time in seconds (the motion smoothing's clock)."""
        if not self._avatar_set:
            return self._retry_avatar()
        if self.paused:
            return self.rest("paused: showing the avatar at rest")
        if crop is None:
            if self.no_face == "hold" and self._last_output is not None:
                return Shown(self._last_output, "no face: holding the last frame", True)
            return self.rest("no face: showing the avatar at rest")
        try:
            animated = self.animator.animate(crop, self._out, pts)
            if self.best_frame and self._avatar_norm is not None:
                self._best_frame(animated.keypoints)
        except EngineUnavailable as exc:  # a remote server reconnecting: keep the loop alive
            held = self._last_output
            if held is not None:
                return Shown(held, f"engine: {exc}", True)
            return self.rest(f"engine: {exc}")
        self._last_output = animated.image
        return Shown(animated.image, "holding the last face position" if holding else "ok", True)

    def _best_frame(self, keypoints) -> None:
        normalized = normalized_keypoints(keypoints.value)
        distance = float(np.sum((normalized - self._avatar_norm) ** 2))
        if distance < self._best_distance:
            self.animator.calibrate(keypoints)  # may raise: the best distance stays as it was
            self._best_distance = distance

    def _retry_avatar(self) -> Shown:
        """The avatar could not be set at start (the engine was unavailable): try again."""
        try:
            self.select_avatar(self.avatar_index)
        except EngineUnavailable as exc:
            return Shown(self.avatars[self.avatar_index].image, f"engine: {exc}", False)
        return Shown(self.animator.rest_image, "avatar set", False)
