"""The watermark stage's benchmark: it marks what it times, and reports against its budget."""

from __future__ import annotations

import numpy as np

from benchmarks.watermark import BUDGET_MS, WatermarkStage, measure
from engines.watermark import detect


def test_stage_marks_every_frame_of_the_batch() -> None:
    ramp = np.linspace(0.2, 0.8, 64, dtype=np.float32)
    prediction = np.stack([np.broadcast_to(ramp, (3, 64, 64)), np.full((3, 64, 64), 0.5)])
    stage = WatermarkStage(64, batch=2)
    seconds = stage.run(prediction)
    assert seconds > 0
    for image in stage.images:
        assert detect(image).marked


def test_measure_reports_percentiles_and_budget() -> None:
    result = measure(iterations=40, warmup=4)
    embed = result["stats_ms"]["embed"]
    assert 0 < embed["p50"] <= embed["p99"] <= embed["max"]
    assert result["budget_ms"] == BUDGET_MS
    assert result["within_budget"] == (embed["p99"] <= BUDGET_MS)
    assert len(result["stats_ms"]["detect 1280x720"]) > 0 and 0 < result["cpu_share"] <= 1.5
