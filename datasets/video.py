"""Video encoding, concatenation and decoding by timestamp through PyAV.

Each episode is encoded into its own mp4 while it is recorded, so a discarded episode costs
nothing and a crash leaves the saved episodes whole. When the dataset is finalised the episode
files are concatenated without re-encoding (packets are remuxed with shifted timestamps), which
gives LeRobot v3.0's layout of many episodes per file, addressed by from/to timestamps.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from robota.errors import DatasetError

logger = logging.getLogger(__name__)

# Encoder options per codec; every encoder also gets a keyframe each second (`g` = fps) to keep
# seeks short. x264 runs without B-frames, so decode order equals presentation order and the
# packets of concatenated episodes stay monotonic.
DEFAULT_VIDEO_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"crf": "18", "preset": "veryfast", "bf": "0"},
    "libsvtav1": {"crf": "30", "preset": "8"},
}


def default_video_options(codec: str) -> dict[str, str]:
    """Return robota's encoder options for `codec`, or none for codecs without tuned defaults."""
    return dict(DEFAULT_VIDEO_OPTIONS.get(codec, {}))


class EpisodeVideoEncoder:
    """Encode the frames of one camera for one episode into an mp4 file.

    Args:
        path: Output file; it is complete only after `close()`.
        fps: Frame rate in Hz; frame i gets the timestamp i / fps.
        codec: FFmpeg encoder name, for example `libx264` or `libsvtav1`.
        options: Encoder options, for example `{"crf": "18"}`.
    """

    def __init__(self, path: Path, fps: int, codec: str, options: Mapping[str, str]):
        self.path = path
        self.fps = fps
        self.codec = codec
        self.options = dict(options)
        self.frame_count = 0
        self._container: Any = None
        self._stream: Any = None

    def _open(self, height: int, width: int) -> None:
        self._container = av.open(str(self.path), mode="w")
        try:
            stream = self._container.add_stream(self.codec, rate=self.fps)
        except (av.FFmpegError, ValueError) as error:
            self._container.close()
            raise DatasetError(
                f"video codec {self.codec!r} is not available in this PyAV build ({error}); "
                "use 'libx264' or 'libsvtav1'"
            ) from None
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = {"g": str(self.fps), **self.options}
        self._stream = stream

    def add(self, image: np.ndarray) -> None:
        """Encode one uint8 (height, width, 3) RGB image."""
        if self._container is None:
            self._open(image.shape[0], image.shape[1])
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self.frame_count
        frame.time_base = Fraction(1, self.fps)
        try:
            packets = self._stream.encode(frame)
        except av.FFmpegError as error:
            raise DatasetError(
                f"video encoder {self.codec!r} failed on {self.path.name} with options "
                f"{self._stream.options}: {error}. Check video_options for this codec"
            ) from None
        for packet in packets:
            self._container.mux(packet)
        self.frame_count += 1

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def abort(self) -> None:
        """Close without caring about the result and delete the file."""
        if self._container is not None:
            try:
                self._container.close()
            except av.FFmpegError:
                logger.debug("ignored error closing aborted video %s", self.path)
            self._container = None
        self.path.unlink(missing_ok=True)


def concatenate_videos(sources: Sequence[Path], frame_counts: Sequence[int], fps: int, output: Path) -> None:
    """Concatenate episode mp4 files into one without re-encoding.

    Args:
        sources: Episode files, all written with the same encoder settings.
        frame_counts: Frames in each source; source k starts at (frames before it) / fps.
        fps: Frame rate in Hz.
        output: File to write.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(output), mode="w", format="mp4") as target:
        out_stream = None
        extradata = None
        frames_before = 0
        for source, frame_count in zip(sources, frame_counts):
            with av.open(str(source)) as container:
                stream = container.streams.video[0]
                if out_stream is None:
                    out_stream = target.add_stream_from_template(stream, opaque=True)
                    extradata = stream.codec_context.extradata
                elif stream.codec_context.extradata != extradata:
                    raise DatasetError(
                        f"{source} was encoded with other codec parameters than {sources[0]}; "
                        "episodes of one camera must share codec, size and options"
                    )
                shift = round(Fraction(frames_before, fps) / stream.time_base)
                for packet in container.demux(stream):
                    if packet.dts is None:  # the demuxer's empty end-of-stream packet
                        continue
                    packet.pts += shift
                    packet.dts += shift
                    packet.stream = out_stream
                    target.mux(packet)
            frames_before += frame_count


def codec_parameters(path: Path) -> tuple[str, int, int, bytes | None]:
    """Return what must match for two mp4 streams to be joined by copying packets.

    That is the codec name, the frame size and the codec's extradata (for example H.264's SPS
    and PPS, or AV1's sequence header).
    """
    with av.open(str(path)) as container:
        context = container.streams.video[0].codec_context
        extradata = bytes(context.extradata) if context.extradata is not None else None
        return (context.codec.name, context.width, context.height, extradata)


def video_info(path: Path) -> dict[str, Any]:
    """Read the stream properties that LeRobot stores in a video feature's `info`."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {
            "video.height": stream.codec_context.height,
            "video.width": stream.codec_context.width,
            "video.codec": stream.codec_context.codec.canonical_name,  # "av1", not the decoder "libdav1d"
            "video.pix_fmt": stream.codec_context.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": int(round(float(stream.average_rate))),
            "video.channels": 3,
            "has_audio": len(container.streams.audio) > 0,
        }


def decode_at_timestamps(path: Path, timestamps_s: Sequence[float], tolerance_s: float) -> np.ndarray:
    """Decode the frames shown at the given times.

    Seeks to the keyframe at or before the first time, then decodes forward and keeps each
    frame whose presentation time is within `tolerance_s` of a requested time.

    Args:
        path: Video file.
        timestamps_s: Requested times in seconds from the start of the file, ascending.
        tolerance_s: Largest allowed gap between a requested and a decoded frame time.

    Returns:
        uint8 array of shape (len(timestamps_s), height, width, 3).

    Raises:
        DatasetError: A requested time has no frame within the tolerance.
    """
    targets = np.asarray(timestamps_s, dtype=np.float64)
    found: list[np.ndarray | None] = [None] * len(targets)
    nearest = np.full(len(targets), np.inf)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        container.seek(max(int(targets[0] / stream.time_base), 0), stream=stream, backward=True)
        position = 0
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            time_s = float(frame.time)
            while position < len(targets) and targets[position] < time_s - tolerance_s:
                position += 1  # every earlier request was passed without a match
            if position == len(targets):
                break
            gap = abs(targets[position] - time_s)
            nearest[position] = min(nearest[position], gap)
            if gap <= tolerance_s:
                found[position] = frame.to_ndarray(format="rgb24")
                position += 1
    missing = [i for i, image in enumerate(found) if image is None]
    if missing:
        first = missing[0]
        raise DatasetError(
            f"{path}: no video frame within {tolerance_s} s of {targets[first]:.6f} s "
            f"({len(missing)} of {len(targets)} requested frames missing; nearest gap "
            f"{nearest[first]:.6f} s). The episode's from_timestamp or the frame timestamps "
            "do not match the video; re-encode the video or fix meta/episodes"
        )
    return np.stack(found)  # (frames, height, width, 3)


def decode_image_bytes(data: bytes) -> np.ndarray:
    """Decode one PNG or JPEG image, as stored in a LeRobot `image` feature, to uint8 RGB."""
    with av.open(io.BytesIO(data)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb24")
