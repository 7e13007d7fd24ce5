"""What a server runs, as sent in ``WELCOME``: the model's identity and its batch-1 I/O spec."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from export.iospec import GraphSpec, ModelIO, TensorSpec


@dataclass(frozen=True)
class ModelIdentity:
    """The model a server animates with; the client checks it and shows it."""

    config: str  # preset name or YAML file name
    resolution: int  # square frame size
    num_kp: int  # keypoints
    jacobian: bool  # whether keypoints carry jacobians
    checkpoint_sha256: str  # hash of the checkpoint file
    backend: str  # the server's engine backend
    precision: str  # fp32 or fp16
    device: str  # where the server runs it

    def describe(self) -> str:
        return (
            f"{self.config} at {self.resolution}px ({self.num_kp} keypoints"
            f"{', jacobians' if self.jacobian else ''}), checkpoint sha256 "
            f"{self.checkpoint_sha256[:12]}, {self.backend} {self.precision} on {self.device}"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelIdentity:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def io_to_json(io: ModelIO) -> dict[str, Any]:
    def graph(spec: GraphSpec) -> dict[str, Any]:
        return {
            "name": spec.name,
            "inputs": [[t.name, list(t.shape), t.dtype] for t in spec.inputs],
            "outputs": [[t.name, list(t.shape), t.dtype] for t in spec.outputs],
        }

    return {
        "avatar": graph(io.avatar),
        "frame": graph(io.frame),
        "resolution": io.resolution,
        "batch": io.batch,
        "num_kp": io.num_kp,
        "jacobian": io.jacobian,
    }


def io_from_json(data: dict[str, Any]) -> ModelIO:
    def graph(spec: dict[str, Any]) -> GraphSpec:
        def tensors(items: list) -> tuple[TensorSpec, ...]:
            return tuple(
                TensorSpec(str(n), tuple(int(s) for s in shape), str(d)) for n, shape, d in items
            )

        return GraphSpec(str(spec["name"]), tensors(spec["inputs"]), tensors(spec["outputs"]))

    return ModelIO(
        avatar=graph(data["avatar"]),
        frame=graph(data["frame"]),
        resolution=int(data["resolution"]),
        batch=int(data["batch"]),
        num_kp=int(data["num_kp"]),
        jacobian=bool(data["jacobian"]),
    )
