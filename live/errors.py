"""User-facing errors of the live camera pipeline.

Each class is a :class:`export.errors.UserError`: the command line prints its message (what
happened, what was expected, what to do) without a traceback.
"""

from __future__ import annotations

from export.errors import MissingDependencyError, UserError


class InputError(UserError):
    """A driving input (image folder, GIF, video file) that is missing or cannot be decoded."""


class CameraError(UserError):
    """A webcam that cannot be opened or read."""


class VirtualCameraError(UserError):
    """The virtual camera (v4l2loopback, OBS Virtual Camera) cannot be opened."""


class DisplayError(UserError):
    """No display to show the preview window on."""


class FaceModelError(UserError):
    """The face detection model file is missing or corrupt."""


class SettingError(UserError, ValueError):
    """A setting (scale, fps, size, ...) outside its valid range."""


def missing_base_dependency(
    module: str, purpose: str, cause: BaseException | None = None
) -> MissingDependencyError:
    """Error for a base dependency of avatarcam (no pip extra) that failed to import."""
    detail = f" (import error: {cause})" if cause is not None else ""
    return MissingDependencyError(
        f"{purpose} needs the Python package '{module}', which could not be imported{detail}.\n"
        "It is a base dependency of avatarcam, so the installation is incomplete.\n"
        "Reinstall with:  pip install avatarcam   (or: pip install -e . in a checkout)"
    )
