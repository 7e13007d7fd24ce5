"""The baseline: the unsplit network in eager PyTorch fp32, frame by frame, as the original
FOMM demo (``demo.py`` of first-order-model) runs it.

Once: the source image and its keypoints, and the keypoints of the first driving frame (the
reference). Per frame: copy the driving frame to the device, detect its keypoints, normalise
them against the reference (``normalize_kp`` with relative movement, relative jacobians and
adapt-scale, the convex hulls recomputed every frame as the demo does), run the full generator
forward, source encoder included, and copy the prediction back to the host.

Written independently of the split graphs and of :mod:`export.motion`'s folded motion
transfer, so a mistake in either shows up in every other row's error against this one.
"""

from __future__ import annotations

import numpy as np
import torch

from export.model import FOMM, Keypoints
from export.motion import hull_scale

from .timing import Clock, Step


def normalize_kp(
    kp_source: Keypoints, kp_driving: Keypoints, kp_initial: Keypoints, adapt_scale: bool = True
) -> Keypoints:
    """The demo's relative motion: (drv - initial) * s + src; (J_drv @ inv(J_initial)) @ J_src."""
    scale = 1.0
    if adapt_scale:
        scale = hull_scale(
            kp_source.value.detach().cpu().numpy(), kp_initial.value.detach().cpu().numpy()
        )
    value = (kp_driving.value - kp_initial.value) * scale + kp_source.value
    jacobian = None
    if kp_driving.jacobian is not None and kp_initial.jacobian is not None:
        jacobian_diff = torch.matmul(kp_driving.jacobian, torch.inverse(kp_initial.jacobian))
        jacobian = torch.matmul(jacobian_diff, kp_source.jacobian)
    return Keypoints(value, jacobian)


class DemoBaseline:
    """The demo's per-frame loop for one batch size on one device, fp32."""

    def __init__(
        self,
        model: FOMM,
        source: np.ndarray,
        reference_frame: np.ndarray,
        batch: int,
        device: str,
    ):
        self.model = model.to(device=device, dtype=torch.float32).eval()
        self.device = device
        self.batch = batch
        self.clock = Clock(device)
        with torch.inference_mode():
            self.source = self._upload(np.repeat(source, batch, axis=0))
            self.kp_source = model.keypoints(self.source)
            self.kp_initial = model.keypoints(
                self._upload(np.repeat(reference_frame, batch, axis=0))
            )

    def _upload(self, frames: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)).to(self.device)

    def prepare(self, frames: np.ndarray) -> torch.Tensor:
        """The driving batch as a host tensor; the demo copies it to the device per frame."""
        return torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))

    def step(self, driving: torch.Tensor) -> Step:
        """One demo iteration, timed per stage."""
        clock = self.clock
        with torch.inference_mode():
            start = clock.now()
            kp_driving = self.model.keypoints(driving.to(self.device))
            keypoints_done = clock.now()
            kp_norm = normalize_kp(self.kp_source, kp_driving, self.kp_initial)
            generator_start = clock.now()
            output = self.model.animate(self.source, self.kp_source, kp_norm)
            generator_done = clock.now()
            prediction = output.prediction.cpu().numpy()
            end = clock.now()
        return Step(
            prediction=prediction,
            durations_s={
                "frame": end - start,
                "keypoints": keypoints_done - start,
                "generator": generator_done - generator_start,
            },
        )


#: What the baseline's stages cover, for the results.
STAGES_NOTE = (
    "timed inside the frame loop: keypoints = host-to-device copy + kp_detector on the driving "
    "frame; generator = the full generator forward (source encoder included); the frame also "
    "counts normalize_kp and the copy back"
)
