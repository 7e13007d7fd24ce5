"""Per-stage timing of the split per-frame call with the PyTorch modules.

The engines run the frame graph (keypoints of the driving frame, motion transfer, generator
decode) as one call, so its stages cannot be timed from outside. For torch backends the same
modules are timed here stage by stage, with the avatar's cached state already on the device, set
up as the torch engine sets them up (fp16: the same mixed-precision model, float32 I/O; CUDA:
the engine's cuDNN settings): the keypoint detector on the driving frame, then the motion
transfer and ``generator.decode``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from export.checkpoint import load_model
from export.config import ModelConfig
from export.motion import apply_motion, relative_motion

from .timing import Clock, Step

STAGES_NOTE = (
    "timed with the torch modules in a separate loop on the cached avatar state: keypoints = "
    "kp_detector on the driving frame; generator = motion transfer + generator.decode (no host "
    "copies, which the frame column includes)"
)

NO_SPLIT_NOTE = (
    "per-stage split is only available for torch backends: this engine runs the frame graph "
    "as one call"
)


class TorchStages:
    """The split per-frame call of a torch engine, timed stage by stage."""

    def __init__(
        self,
        checkpoint: Path,
        config: ModelConfig,
        precision: str,
        device: str,
        source: np.ndarray,
        reference_frame: np.ndarray,
        batch: int,
    ):
        from engines.torch_engine import cudnn_settings

        self.device = device
        self.clock = Clock(device)
        model = load_model(checkpoint, config)
        if precision == "fp16":
            from export.onnx_export import mixed_precision_model

            model = mixed_precision_model(model)
        self.model = model.to(device=device).eval()
        on_cuda = device.startswith("cuda")

        def settings() -> contextlib.AbstractContextManager[None]:
            return cudnn_settings() if on_cuda else contextlib.nullcontext()

        self.settings = settings  # a fresh context per call, as the engine enters one per call
        with self.settings(), torch.inference_mode():
            avatar = self.prepare(np.repeat(source, batch, axis=0))
            self.features, self.small = self.model.generator.encode(avatar)
            self.kp_source, self.jac_source = self.model.kp_detector(avatar)
            kp_ref, jac_ref = self.model.kp_detector(
                self.prepare(np.repeat(reference_frame, batch, axis=0))
            )
            motion = relative_motion(
                self._host(self.kp_source),
                self._host(self.jac_source),
                self._host(kp_ref),
                self._host(jac_ref),
            )
            self.scale = self._device(motion.scale)
            self.offset = self._device(motion.offset)
            self.transfer = None if motion.jacobian is None else self._device(motion.jacobian)
            self.transfer_offset = (
                None if motion.jacobian_offset is None else self._device(motion.jacobian_offset)
            )

    @staticmethod
    def _host(tensor: torch.Tensor | None) -> np.ndarray | None:
        return None if tensor is None else tensor.float().cpu().numpy()

    def _device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

    def prepare(self, frames: np.ndarray) -> torch.Tensor:
        """The driving batch on the device (outside the timing), float32 as engines take it."""
        return self._device(np.asarray(frames, dtype=np.float32))

    def step(self, driving: torch.Tensor) -> Step:
        clock = self.clock
        with self.settings(), torch.inference_mode():
            start = clock.now()
            kp_driving, jac_driving = self.model.kp_detector(driving)
            keypoints_done = clock.now()
            kp_new, jac_new = apply_motion(
                kp_driving,
                jac_driving,
                self.scale,
                self.offset,
                self.transfer,
                self.transfer_offset,
            )
            self.model.generator.decode(
                self.features, self.small, kp_new, jac_new, self.kp_source, self.jac_source
            )
            end = clock.now()
        return Step(
            prediction=None,
            durations_s={"keypoints": keypoints_done - start, "generator": end - keypoints_done},
        )

    def close(self) -> None:
        """Drop the model and cached tensors."""
        del self.model, self.features, self.small
