"""The ONNX recipe: the checked ONNX files of both graphs for one model, resolution, batch and
precision, exported once into the engine cache (:mod:`engines.cache`) and shared by the
onnxruntime, openvino and tensorrt backends."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .cache import ArtifactCache, CacheEntry


def onnx_artifacts(
    cache: ArtifactCache,
    checkpoint: str | Path,
    config: Any,
    resolution: int,
    batch: int,
    precision: str,
) -> tuple[dict[str, Path], CacheEntry]:
    """The checked ONNX files of both graphs, exported on a cache miss.

    Keyed by the checkpoint's content hash, every config field, resolution, batch, precision
    and :func:`export.onnx_export.export_fingerprint` (exporter, versions, graph sources).
    Batch 1 exports are checked against PyTorch; larger batches are not (see ``build``).
    """
    from dataclasses import asdict

    from export.checkpoint import load_model
    from export.iospec import model_io
    from export.onnx_export import (
        GRAPHS,
        export_fingerprint,
        export_onnx,
        model_slug,
        onnx_filename,
    )

    io = model_io(config, resolution, batch)
    names = {graph: onnx_filename(config, io, graph, precision) for graph in GRAPHS}
    key = {
        "checkpoint_sha256": cache.checkpoint_digest(checkpoint),
        "config": asdict(config),
        "resolution": resolution,
        "batch": batch,
        "precision": precision,
        **export_fingerprint(),
    }

    def build(folder: Path) -> None:
        print(
            f"avatarcam: exporting the model to ONNX ({precision}, {resolution}x{resolution}, "
            f"batch {batch}); this happens once per model and takes a minute ...",
            file=sys.stderr,
            flush=True,
        )
        model = load_model(checkpoint, config)
        # The parity check against PyTorch (on the CPU) runs at batch 1; a larger batch is the
        # same graph with another leading dimension, and costs the check minutes there.
        verify = batch == 1
        export_onnx(model, folder, resolution, batch, precision, verify=verify, filenames=names)

    label = f"{model_slug(config)}-{resolution}px-b{batch}-{precision}"
    entry = cache.get_or_build("onnx", label, key, list(names.values()), build, "ONNX export")
    return {graph: entry.file(name) for graph, name in names.items()}, entry
