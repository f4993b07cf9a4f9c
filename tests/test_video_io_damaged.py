"""Damaged and hostile media: ``load_video`` raises nothing but ``VideoLoadError``, never samples a cut
file silently, and keeps to its deadline (issue 24).

* damaged stream headers (an unknown codec tag in mp4/Matroska/WebM leaves PyAV's codec context
  unset: the case that escaped as ``AttributeError: 'VideoStream' object has no attribute 'width'``;
  zeroed time scales, sizes, codec parameters, sample tables);
* cut Matroska/WebM/MPEG-TS/mp4 clips: refused by default ("found X of ... declared"), decoded
  with ``allow_truncated=True`` (flagged in the metadata, warned); complete clips, and a clip whose
  audio runs past its video, are not flagged;
* the decode deadline;
* a seeded fuzz run of the harness in ``llava_next_video_hf.testing.fuzz``: 0 escaped, 0 crashed,
  0 hung.
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import av
import numpy as np
import pytest

from llava_next_video_hf import testing
from llava_next_video_hf.errors import TruncatedVideoWarning, VideoLoadError
from llava_next_video_hf.testing import fuzz
from llava_next_video_hf.video_io import load_video

W, H = 128, 96


def _clip(fmt: str, codec: str = "h264", num_frames: int = 60, fps: int = 10, **kwargs) -> bytes:
    return testing.make_video_bytes(
        num_frames=num_frames,
        fps=fps,
        width=W,
        height=H,
        seed=1,
        gop=10,
        codec=codec,
        container_format=fmt,
        **kwargs,
    )


@pytest.fixture(scope="module")
def clips() -> dict[str, bytes]:
    return {
        "mp4": _clip("mp4"),
        "mkv": _clip("matroska", bframes=2),
        "mkv10s": _clip("matroska", num_frames=300, fps=30, bframes=2),  # the 10 s clip
        "webm": _clip("webm", "libvpx-vp9"),
        "ts": _clip("mpegts"),
    }


def _load(data: bytes, **kwargs):
    """load_video, asserting that a refusal is a VideoLoadError of the audited kind (not the backstop)."""
    try:
        return load_video(data, num_frames=4, **kwargs)
    except VideoLoadError as exc:
        assert not getattr(exc, "unexpected", False), f"reached the backstop: {exc}"
        raise


def _patch(data: bytes, marker: bytes, offset: int, new: bytes) -> bytes:
    i = data.index(marker) + offset
    return data[:i] + new + data[i + len(new) :]


# -- damaged stream headers --------------------------------------------------------------------


def test_unknown_codec_tag_is_a_video_load_error(clips):
    # mp4 'avc1' sample entry, Matroska/WebM CodecID: FFmpeg finds no decoder and PyAV leaves the
    # stream's codec context unset; every codec attribute (width, height, has_b_frames, ...) is missing.
    damaged = {
        "mp4": clips["mp4"].replace(b"avc1", b"zzzz"),
        "mkv": clips["mkv"].replace(b"V_MPEG4/ISO/AVC", b"V_XXXXX/XXX/XXX"),
        "webm": clips["webm"].replace(b"V_VP9", b"V_VQ9"),
    }
    for name, data in damaged.items():
        container = av.open(__import__("io").BytesIO(data))
        assert container.streams.video[0].codec_context is None, name  # the damaged state is rebuilt
        container.close()
        with pytest.raises(VideoLoadError, match=r"<bytes>: the video stream has no decoder"):
            _load(data)


@pytest.mark.parametrize(
    ("what", "marker", "offset", "new"),
    [
        ("mdhd time scale 0", b"mdhd", 16, bytes(4)),
        ("mvhd time scale 0", b"mvhd", 16, bytes(4)),
        ("stsd width/height 0", b"avc1", 28, bytes(4)),
        ("avcC parameters zeroed", b"avcC", 4, bytes(32)),
        ("stts durations 0", b"stts", 12, bytes(8)),
        ("stsz sizes huge", b"stsz", 16, b"\x7f\xff\xff\xff" * 4),
        ("stco offsets past the end", b"stco", 12, b"\x7f\xff\xff\xff" * 2),
        ("tkhd size 0", b"tkhd", 80, bytes(8)),
        ("frame count 2**31", b"stsz", 12, b"\x80\x00\x00\x00"),
    ],
)
def test_damaged_mp4_headers(clips, what, marker, offset, new):
    data = _patch(clips["mp4"], marker, offset, new)
    try:
        frames, meta = _load(data)
    except VideoLoadError:
        return
    assert frames.shape[0] == len(meta.frames_indices) and frames.dtype == np.uint8


@pytest.mark.parametrize(
    ("what", "marker", "offset", "new"),
    [
        ("PixelWidth 0", b"\xb0\x81", 2, b"\x00"),
        ("TimestampScale 0", b"\x2a\xd7\xb1", 3, b"\x83\x00\x00\x00"),
        ("Duration NaN", b"\x44\x89\x88", 3, b"\x7f\xf8\x00\x00\x00\x00\x00\x00"),
        ("Duration -1", b"\x44\x89\x88", 3, b"\xbf\xf0\x00\x00\x00\x00\x00\x00"),
        ("CodecPrivate zeroed", b"\x63\xa2", 3, bytes(24)),
        ("DefaultDuration 0", b"\x23\xe3\x83", 3, b"\x84\x00\x00\x00\x00"),
    ],
)
def test_damaged_matroska_headers(clips, what, marker, offset, new):
    if marker not in clips["mkv"]:
        pytest.skip(f"the muxer wrote no {what.split()[0]} element")
    data = _patch(clips["mkv"], marker, offset, new)
    try:
        frames, meta = _load(data)
    except VideoLoadError:
        return
    assert frames.shape[0] == len(meta.frames_indices)


# -- truncated containers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "fraction", "declared", "total"),
    [
        ("mkv", 0.5, r"frames \([\d.]+ s\) of the 6\.00 s the header declares", 60),
        ("mkv10s", 0.1, r"frames \([\d.]+ s\) of the 10\.00 s the header declares", 300),
        ("webm", 0.5, r"frames \([\d.]+ s\) of the 6\.00 s the header declares", 60),
        (
            "ts",
            0.5,
            r"frames \([\d.]+ s\), and the data ends mid-packet \(\d+ bytes is not a whole number of 188-byte",
            60,
        ),
    ],
)
def test_cut_containers_are_refused_by_default_and_flagged_when_allowed(
    clips, kind, fraction, declared, total
):
    data = clips[kind]
    cut = data[: int(len(data) * fraction) | 1]  # odd: never a whole number of TS packets
    with pytest.raises(VideoLoadError, match=r"<bytes>: truncated: found \d+ " + declared):
        _load(cut)
    with pytest.warns(TruncatedVideoWarning, match="truncated: found"):
        frames, meta = load_video(cut, num_frames=4, allow_truncated=True)
    assert meta.truncated and meta.truncation.startswith("found ")
    found = meta.total_num_frames
    assert found < total * fraction + 5
    # the samples are spread over the frames that are there, first and last included
    assert meta.frames_indices == np.linspace(0, found - 1, 4, dtype=int).tolist()
    assert [testing.read_frame_index(f) for f in frames] == meta.frames_indices


def test_ts_with_bytes_inserted_mid_file_is_not_called_cut(clips):
    data = clips["ts"]
    middle = len(data) // 2
    damaged = data[:middle] + b"\x00" * 7 + data[middle:]  # not a whole number of packets either
    try:
        _, meta = _load(damaged)
    except VideoLoadError as exc:
        assert "truncated: found" not in str(exc)
    else:
        assert not meta.truncated


def test_cut_mp4_with_its_index_first(tmp_path):
    data = testing.make_video_bytes(num_frames=60, fps=10, width=W, height=H, seed=1, gop=10)
    path = testing.make_video(
        tmp_path / "fs.mp4", num_frames=60, fps=10, width=W, height=H, gop=10, faststart=True
    )
    cut = path.read_bytes()[: len(path.read_bytes()) * 6 // 10]
    assert data  # (the default mp4 keeps its index last: a cut one has none and cannot be opened)
    with pytest.raises(VideoLoadError, match=r"truncated: found \d+ of the 60 frames the header declares"):
        _load(cut)
    with pytest.warns(TruncatedVideoWarning):
        frames, meta = load_video(cut, num_frames=4, allow_truncated=True)
    assert meta.truncated and meta.total_num_frames < 40
    assert [testing.read_frame_index(f) for f in frames] == meta.frames_indices


@pytest.mark.parametrize("kind", sorted(fuzz.CLIP_KINDS))
def test_complete_clips_are_not_flagged(kind):
    data = fuzz.make_clips([kind])[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedVideoWarning)
        frames, meta = load_video(data, num_frames=4)
    assert not meta.truncated and meta.total_num_frames == 30
    assert [testing.read_frame_index(f) for f in frames] == meta.frames_indices


def _mkv_with_longer_audio(seconds_video: float, seconds_audio: float) -> bytes:
    import io

    buf = io.BytesIO()
    frames = testing.make_frames(int(seconds_video * 10), H, W, seed=2)
    with av.open(buf, mode="w", format="matroska") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        audio = out.add_stream("libopus", rate=48000)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        samples = 960
        for i in range(int(seconds_audio * 48000 / samples)):
            tone = (np.sin(np.arange(samples) / 8.0) * 0.1).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(tone, format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 48000, i * samples, Fraction(1, 48000)
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    return buf.getvalue()


def test_audio_running_past_the_video_is_not_a_cut_file():
    data = _mkv_with_longer_audio(3.0, 6.0)
    container = av.open(__import__("io").BytesIO(data))
    assert container.duration / 1e6 > 5.5  # the header declares the audio's length
    container.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedVideoWarning)
        frames, meta = load_video(data, num_frames=4)
    assert meta.total_num_frames == 30 and not meta.truncated
    # ... but the same file cut inside the video is still refused
    with pytest.raises(VideoLoadError, match="truncated: found"):
        _load(data[: len(data) // 4 | 1])


# -- deadline ----------------------------------------------------------------------------------


def test_decode_deadline_fires_in_process(tmp_path):
    path = testing.make_video(tmp_path / "long.mkv", num_frames=600, fps=30, width=W, height=H, gop=600)
    with pytest.raises(
        VideoLoadError, match=r"long\.mkv: decoding took longer than the deadline of 0\.001 s"
    ):
        load_video(path, num_frames=8, deadline_s=0.001)
    frames, meta = load_video(path, num_frames=8, deadline_s=60)
    assert [testing.read_frame_index(f) for f in frames] == meta.frames_indices
    for bad in (0, -1, float("nan"), True, "1"):
        with pytest.raises(VideoLoadError, match="deadline_s must be"):
            load_video(path, num_frames=8, deadline_s=bad)


# -- fuzz --------------------------------------------------------------------------------------


def test_seeded_fuzz_run_has_no_escape_crash_or_hang():
    report = fuzz.run_fuzz(150, seed=24, workers=2, deadline_s=60)
    print(report.summary())
    assert report.total == 150
    assert report.counts["escaped"] == 0, report.examples
    assert report.counts["crashed"] == 0, report.examples
    assert report.counts["hung"] == 0, report.examples
    assert report.counts["decoded"] > 10 and report.counts["refused"] > 10  # it exercised both
    assert set(report.by_mutation) == set(fuzz.MUTATIONS)


def test_mutations_are_seeded_and_damage_the_bytes(clips):
    import random

    for mutation in fuzz.MUTATIONS:
        a = fuzz.mutate(clips["mp4"], random.Random(5), mutation)
        b = fuzz.mutate(clips["mp4"], random.Random(5), mutation)
        assert a == b and a[0] == mutation and a[1] != clips["mp4"]
    with pytest.raises(ValueError, match="unknown mutation"):
        fuzz.mutate(clips["mp4"], random.Random(0), "nope")
