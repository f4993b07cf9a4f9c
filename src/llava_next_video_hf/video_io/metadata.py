"""What :func:`~llava_next_video_hf.video_io.load_video` returns with the frames: :class:`VideoMetadata`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

DecodeMode = Literal["seek", "sequential", "array"]


@dataclass(frozen=True)
class VideoMetadata:
    """What was loaded and how.

    Attributes:
        total_num_frames: frames in the source, counted (the container's sample table or its
            packets); frame ``i`` is the i-th frame shown.
        fps: the source's frame rate (``None`` when unknown, e.g. arrays without ``source_fps``);
            for variable-rate clips the nominal rate FFmpeg estimates, not frames / duration.
        duration: the source's duration in seconds (``None`` when unknown); for concatenated
            MPEG-TS files the sum of the parts.
        width, height: frame size of the returned frames (after rotation).
        frames_indices: index in the source of each returned frame.
        timestamps: time (s) of each returned frame from the first frame shown (its
            presentation timestamp, continuous across concatenated parts); empty when unknown.
        decode_mode: ``"seek"``, ``"sequential"`` or ``"array"`` (no decoding).
        source: short description of the source (a path, a URL without query, ``"<bytes>"``,
            ``"<file-like>"``, ``"<array>"``, ``"<tensor>"`` or ``"<frames list>"``).
        frames_decoded: frames the decoder produced (all passes); shows seeking at work.
        seeks: number of seeks performed.
        sampling: the rule applied: ``"num_frames"``, ``"fps"``, ``"fps->uniform"`` (fell
            back to ``max_frames`` uniform), ``"all"`` or ``"all->uniform"``.
        requested_num_frames: ``num_frames`` as asked (may exceed ``len(frames_indices)``
            for short clips).
        total_is_estimate: always ``False``: frames are counted, never estimated from
            duration * fps (kept for callers that read it).
        codec: the video codec's name (``None`` for arrays).
        container_format: the demuxer's name (``None`` for arrays).
        fallback_reason: why the sequential path was taken, if it was.
        video_backend: ``"pyav"`` or ``"array"``.
        index: how frames were put in presentation order: ``"container"`` (the mp4/mov sample
            table), ``"packets"`` (a demuxing pass), ``"decode"`` (the decoder's output order,
            when the packets carry no timestamps) or ``None`` for arrays.
        rotation: counterclockwise rotation (degrees: 0, 90, 180, 270) applied from the
            stream's display matrix.
        resized_frames: returned frames scaled to the stream's size after a mid-stream
            resolution change.
        segments: timestamp segments (``> 1`` for concatenated MPEG-TS files).
        threads: decoding threads used (groups of samples decoded in parallel).
        truncated: the container declares more than was found and ``allow_truncated=True``
            decoded what is there (frames are sampled among the frames found).
        truncation: what was found versus declared, when ``truncated``.
    """

    total_num_frames: int
    fps: float | None
    duration: float | None
    width: int
    height: int
    frames_indices: list[int]
    timestamps: list[float]
    decode_mode: DecodeMode
    source: str
    frames_decoded: int = 0
    seeks: int = 0
    sampling: str = "all"
    requested_num_frames: int | None = None
    total_is_estimate: bool = False
    codec: str | None = None
    container_format: str | None = None
    fallback_reason: str | None = None
    video_backend: str = field(default="pyav")
    index: str | None = None
    rotation: int = 0
    resized_frames: int = 0
    segments: int = 1
    threads: int = 1
    truncated: bool = False
    truncation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The metadata as a plain (JSON-serialisable) dict."""
        return asdict(self)

    def to_transformers(self) -> Any:
        """The same facts as a ``transformers.video_utils.VideoMetadata``."""
        from transformers.video_utils import VideoMetadata as HFVideoMetadata

        return HFVideoMetadata(
            total_num_frames=self.total_num_frames,
            fps=self.fps,
            width=self.width,
            height=self.height,
            duration=self.duration,
            video_backend=self.video_backend,
            frames_indices=list(self.frames_indices),
        )
