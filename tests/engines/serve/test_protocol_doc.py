"""A client written only from engines/serve/PROTOCOL.md (raw websockets, struct and JSON; no
import of engines.serve) completes a session against the real server."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

pytest.importorskip("websockets", reason="needs the serve extra: pip install -e '.[serve]'")

from websockets.sync.client import connect

from tests.conftest import ROOT, load_golden
from tests.engines.serve.ray_server import TOKEN

HELLO, WELCOME, AVATAR, AVATAR_STATE, MOTION, FRAME, RESULT, ERROR = range(1, 9)


def _message(kind: int, fields: dict, parts: list[tuple[str, np.ndarray]], seq: int = 0) -> bytes:
    meta = dict(fields)
    meta["parts"] = [
        {
            "name": name,
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "encoding": "raw",
            "nbytes": array.nbytes,
        }
        for name, array in parts
    ]
    body = json.dumps(meta).encode()
    header = b"AVCM" + struct.pack("<BBHII", 2, kind, 0, seq, len(body))
    return header + body + b"".join(np.ascontiguousarray(a).tobytes() for _, a in parts)


def _parse(data: bytes) -> tuple[int, int, dict, dict[str, np.ndarray]]:
    assert data[:4] == b"AVCM"
    version, kind, _, seq, meta_length = struct.unpack_from("<BBHII", data, 4)
    assert version == 2
    meta = json.loads(data[16 : 16 + meta_length])
    offset = 16 + meta_length
    parts = {}
    for part in meta.pop("parts"):
        chunk = data[offset : offset + part["nbytes"]]
        offset += part["nbytes"]
        assert part["encoding"] == "raw"
        dtype = np.dtype(part["dtype"]).newbyteorder("<")
        parts[part["name"]] = np.frombuffer(chunk, dtype).reshape(part["shape"])
    assert offset == len(data)
    return kind, seq, meta, parts


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(image * 255).astype(np.uint8)


def test_the_protocol_document_is_enough_for_a_client(server) -> None:
    assert (ROOT / "engines" / "serve" / "PROTOCOL.md").is_file()
    golden = load_golden("tiny64")
    with connect(
        f"{server.url}/v1/stream", compression=None, proxy=None, source_address=("127.0.0.4", 0)
    ) as ws:
        ws.send(_message(HELLO, {"token": TOKEN, "transport": "raw"}, []))
        kind, _, welcome, _ = _parse(ws.recv(timeout=30))
        assert kind == WELCOME, welcome
        size, k = welcome["model"]["resolution"], welcome["model"]["num_kp"]
        jacobian = welcome["model"]["jacobian"]
        assert welcome["max_message_bytes"] >= size * size * 3

        ws.send(_message(AVATAR, {}, [("avatar", to_uint8(golden.arrays["source"]))]))
        kind, _, _, state = _parse(ws.recv(timeout=30))
        assert kind == AVATAR_STATE and state["avatar_kp"].shape == (1, k, 2)

        motion = [
            ("motion_scale", np.ones((1, k, 1), np.float32)),
            ("motion_offset", np.zeros((1, k, 2), np.float32)),
        ]
        if jacobian:
            motion.append(("motion_jacobian", np.tile(np.eye(2, dtype=np.float32), (1, k, 1, 1))))
            motion.append(("motion_jacobian_offset", np.zeros((1, k, 2, 2), np.float32)))
        ws.send(_message(MOTION, {}, motion))  # no answer

        frames = []
        for seq in range(3):
            driving = to_uint8(golden.arrays["driving"][seq])
            ws.send(_message(FRAME, {}, [("driving", driving)], seq=seq))
            kind, got, _, result = _parse(ws.recv(timeout=30))  # one frame in flight
            assert (kind, got) == (RESULT, seq)
            assert result["prediction"].shape == (size, size, 3)
            assert result["driving_kp"].shape == (1, k, 2)
            assert ("driving_jacobian" in result) == jacobian
            frames.append(result["prediction"].astype(int))
    assert np.abs(frames[0] - frames[2]).max() > 0  # the avatar moved with the driving frames
    assert frames[0].std() > 5  # an image, not a blank
