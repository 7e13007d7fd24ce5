"""The driving video's soundtrack, carried into the output video.

An offline run animates every frame of its input, one output frame per input frame, so the
input's audio fits the output as it is. Once the video output is closed (and before Content
Credentials sign it, so that the signature covers the file with its audio), the audio is added
with PyAV: copied unchanged (remuxed) when the output's container takes its codec, else
re-encoded (AAC; Opus for .webm; MP3 for .avi). It is timed from the input's first video frame
and cut where the output's video ends, so a run stopped early keeps the audio of what it wrote.

Said once at the start when it cannot be: a folder of PNGs holds no audio, a live recording
records none, ``--pace realtime`` drops and repeats frames (lips and audio would not line
up) and ``--output-fps`` changes
the video's length. ``--no-audio`` drops it without a word.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .outputs import VIDEO_FORMATS, FrameSink, VideoFileSink

log = logging.getLogger("avatarcam")

#: Audio codecs each output container takes as they are (copied, not re-encoded).
COPY_CODECS: dict[str, frozenset[str]] = {
    ".mp4": frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}),
    ".mov": frozenset({"aac", "mp3", "ac3", "alac", "pcm_s16le"}),
    ".mkv": frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac", "vorbis", "pcm_s16le"}),
    ".webm": frozenset({"opus", "vorbis"}),
    ".avi": frozenset({"mp3", "ac3", "pcm_s16le"}),
}
#: The encoder for audio the container does not take as it is.
ENCODERS = {".mp4": "aac", ".mov": "aac", ".mkv": "aac", ".webm": "libopus", ".avi": "libmp3lame"}


@dataclass(frozen=True)
class AudioPlan:
    """The audio track to add to the video output."""

    source: Path  # the driving video
    stream: int  # index of its audio stream
    codec: str  # that stream's codec name
    video_start: float  # seconds: when its first video frame is shown (audio is timed from it)


def plan_audio(
    input_spec: str,
    output: Path | None,
    *,
    live: bool,
    keep: bool = True,
    paced: bool = False,
    output_fps: float | None = None,
    input_fps: float | None = None,
) -> AudioPlan | None:
    """What becomes of the input's audio, said once where it is lost; the plan, when it is
    added to the output."""
    if output is None or not keep:
        return None
    if live:
        log.info("audio is not recorded: a live recording holds the animated video only")
        return None
    source = Path(str(input_spec)).expanduser()
    if not source.is_file():
        return None  # a folder of frames has no audio
    found = _audio_stream(source)
    if found is None:
        return None
    index, codec, start = found
    folder = output.suffix.lower() not in VIDEO_FORMATS
    why = None
    if folder:
        why = "a folder of PNGs cannot carry audio; write a video (--output out.mp4) to keep it"
    elif paced:
        why = (
            "--pace realtime drops and repeats frames to keep pace, so lips and audio would not "
            "line up; leave it out"
        )
    elif output_fps is not None and input_fps and not math.isclose(output_fps, input_fps):
        why = (
            f"--output-fps {output_fps:g} changes the video's length (the input runs at "
            f"{input_fps:g} fps), so the audio would drift; leave it out"
        )
    if why is not None:
        log.info("the audio of %s is not kept: %s (--no-audio silences this)", source, why)
        return None
    return AudioPlan(source, index, codec, start)


def _audio_stream(path: Path) -> tuple[int, str, float] | None:
    """The first audio stream of ``path`` (index, codec, video start in seconds), or None."""
    try:
        import av

        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            audio = container.streams.audio[0]
            video = container.streams.video[0] if container.streams.video else None
            start = 0.0
            if video is not None and video.start_time is not None:
                start = float(video.start_time * video.time_base)
            return audio.index, audio.codec_context.name, start
    except Exception as exc:  # the video source reports a file it cannot read; audio is extra
        log.debug("no audio read from %s: %s", path, exc)
        return None


def add_audio(plan: AudioPlan, video: Path, frames: int, fps: float) -> None:
    """Rewrite the finished ``video`` (``frames`` at ``fps``) with the plan's audio, cut at the
    video's end; the file is replaced only by a complete new one."""
    import av

    suffix = video.suffix.lower()
    end = frames / fps
    temporary = video.with_name(f".{video.stem}.{uuid.uuid4().hex[:8]}.audio{video.suffix}")
    try:
        with (
            av.open(str(video)) as written,
            av.open(str(plan.source)) as source,
            av.open(str(temporary), "w", format=VIDEO_FORMATS[suffix].container) as out,
        ):
            video_in = written.streams.video[0]
            video_out = out.add_stream_from_template(video_in)
            audio_in = source.streams[plan.stream]
            if plan.codec in COPY_CODECS[suffix]:
                audio_out = out.add_stream_from_template(audio_in)
                audio = _copied(source, audio_in, audio_out, plan.video_start, end)
            else:
                audio_out = out.add_stream(ENCODERS[suffix], rate=audio_in.rate)
                audio_out.layout = audio_in.layout
                audio = _encoded(source, audio_in, audio_out, plan.video_start, end)
            packets = heapq.merge(_remuxed(written, video_in, video_out), audio, key=_seconds)
            for packet in packets:
                out.mux(packet)
        os.replace(temporary, video)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _seconds(packet: Any) -> float:
    return float(packet.dts * packet.time_base) if packet.dts is not None else math.inf


def _remuxed(container: Any, stream: Any, out: Any) -> Iterator[Any]:
    for packet in container.demux(stream):
        if packet.dts is None:  # the demuxer's final empty packet
            continue
        packet.stream = out
        yield packet


def _copied(container: Any, stream: Any, out: Any, start: float, end: float) -> Iterator[Any]:
    """The audio packets from ``start`` to ``end`` seconds, retimed to start at 0."""
    shift = round(start / stream.time_base)
    for packet in container.demux(stream):
        if packet.dts is None or packet.pts is None:
            continue
        begin = float((packet.pts - shift) * packet.time_base)
        length = float((packet.duration or 0) * packet.time_base)
        if begin >= end:
            break
        if begin + length < 0:  # wholly before the first video frame
            continue
        packet.pts -= shift
        packet.dts -= shift
        packet.stream = out
        yield packet


def _encoded(container: Any, stream: Any, out: Any, start: float, end: float) -> Iterator[Any]:
    """The audio from ``start`` to ``end`` seconds, decoded and encoded for ``out``."""
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        begin = float(frame.pts * frame.time_base) - start
        if begin >= end:
            break
        if begin + frame.samples / frame.sample_rate <= 0:  # wholly before the first frame
            continue
        frame.pts = None  # the encoder times the samples one after the other, from 0
        yield from out.encode(frame)
    yield from out.encode(None)


def audio_on_close(plans: list[AudioPlan], sinks: list[FrameSink]) -> Callable[..., bool]:
    """An exit callback that adds the audio of ``plans`` (none, or one: filled in once the run
    starts) to each video output that received frames, once it is closed. Push it after the
    signing callback: it then runs before it."""

    def on_exit(exc_type: type[BaseException] | None, *_: object) -> bool:
        for plan, sink in ((plan, sink) for plan in plans for sink in sinks):
            if not isinstance(sink, VideoFileSink) or not sink.count or not sink.path.is_file():
                continue
            try:
                add_audio(plan, sink.path, sink.count, sink.fps)
            except Exception as exc:  # the video is saved; only its audio is missing
                log.warning(
                    "warning: could not add the audio of %s to %s (%s): the video is saved "
                    "without it",
                    plan.source,
                    sink.path,
                    exc,
                )
            else:
                log.info("kept the audio of %s in %s", plan.source, sink.path)
        return False

    return on_exit
