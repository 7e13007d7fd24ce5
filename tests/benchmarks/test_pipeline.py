"""The end-to-end pipeline benchmark runs the real live loop and reports every stage."""

from __future__ import annotations

from benchmarks.pipeline import PipelineConfig, measure_pipeline, pipeline_markdown
from tests.conftest import Golden, shared_path


def test_pipeline_benchmark_on_the_talking_clip(tiny_golden: Golden) -> None:
    result = measure_pipeline(
        PipelineConfig(
            video=shared_path("media", "driving", "mona-talking.gif"),
            avatar=shared_path("media", "avatars", "mona.jpg"),
            checkpoint=tiny_golden.checkpoint,
            config=str(tiny_golden.config),
            resolution=64,
            backend="torch",
            precision="fp32",
            device="cpu",
        )
    )
    # Every frame of the clip was either sent or dropped to keep pace; none vanished.
    assert result["frames_sent"] + result["frames_dropped"] == 50
    assert result["frames_sent"] > 0 and result["achieved_fps"] > 0
    assert result["null_sink_frames"] >= result["frames_sent"]
    assert set(result["stages_ms"]) == {"framing", "inference", "watermark", "output"}
    for stats in [*result["stages_ms"].values(), result["added_latency_ms"]]:
        assert 0 <= stats["p50"] <= stats["p99"] <= stats["max"]
    # Added latency covers at least the inference of the frame.
    assert result["added_latency_ms"]["max"] >= result["stages_ms"]["inference"]["p50"]
    table = "\n".join(pipeline_markdown(result))
    assert "| framing |" in table and "added latency" in table


def test_benchmark_command_with_pipeline(tiny_golden: Golden, tmp_path) -> None:
    """`python -m benchmarks --pipeline` fills the JSON's pipeline section and the report."""
    import json

    from benchmarks.cli import main

    status = main(
        [
            "--checkpoint", str(tiny_golden.checkpoint), "--config", str(tiny_golden.config),
            "--resolution", "64", "--backends", "torch", "--precisions", "fp32",
            "--devices", "cpu", "--batches", "1", "--warmup", "1", "--iterations", "2",
            "--no-plot", "--out", str(tmp_path), "--name", "run",
            "--pipeline", str(shared_path("media", "driving", "mona-talking.gif")),
        ]
    )  # fmt: skip
    assert status == 0
    results = json.loads((tmp_path / "run.json").read_text())
    (entry,) = results["pipeline"]
    assert entry["backend"] == "torch" and entry["frames_sent"] > 0
    assert "## Live pipeline" in (tmp_path / "run.md").read_text()


def test_pipeline_video_must_exist(tmp_path) -> None:
    from benchmarks.cli import main

    assert main(["--pipeline", str(tmp_path / "missing.mp4"), "--out", str(tmp_path)]) == 2
