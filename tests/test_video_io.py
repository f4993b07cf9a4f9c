"""Frame sampling and decoding (video_io) on synthetic clips whose frames carry their index."""

from __future__ import annotations

import http.server
import io
import json
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from llava_next_video_hf.errors import LlavaNextVideoError, VideoLoadError
from llava_next_video_hf.testing.synthetic import make_frames, make_video, make_video_bytes, read_frame_index
from llava_next_video_hf.video_io import VideoMetadata, load_video, sample_indices
from llava_next_video_hf.video_io import frames as vio_frames  # the limits are looked up in these modules
from llava_next_video_hf.video_io import sources as vio_sources

W, H = 160, 96
TOTAL = 300  # 10 s at 30 fps
GOP = 30


def _indices_in_pixels(frames: np.ndarray) -> list[int]:
    return [read_frame_index(f) for f in frames]


def _linspace(total: int, n: int) -> list[int]:
    return np.linspace(0, total - 1, n, dtype=int).tolist()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "mp4": make_video(d / "clip.mp4", num_frames=TOTAL, width=W, height=H, gop=GOP),
        "short": make_video(d / "short.mp4", num_frames=10, width=64, height=64),
        "long": make_video(d / "long.mp4", num_frames=3 * TOTAL, width=64, height=64, gop=GOP),
        "faststart": make_video(d / "fs.mp4", num_frames=TOTAL, width=64, height=64, gop=GOP, faststart=True),
    }


# ----------------------------------------------------------------------------- sample_indices


@pytest.mark.parametrize(("total", "n"), [(300, 1), (300, 8), (300, 32), (300, 300), (1000, 7), (33, 32)])
def test_sample_indices_num_frames_is_linspace(total: int, n: int) -> None:
    assert sample_indices(total, num_frames=n) == _linspace(total, n)


def test_sample_indices_short_clip_returns_all_frames_without_repeats() -> None:
    assert sample_indices(10, num_frames=32) == list(range(10))


def test_sample_indices_fps() -> None:
    assert sample_indices(300, fps=1, source_fps=30) == list(range(0, 300, 30))
    assert sample_indices(300, fps=2, source_fps=30) == list(range(0, 300, 15))
    assert sample_indices(300, fps=1, source_fps=29.97) == list(range(0, 300, 30))
    assert sample_indices(20, fps=60, source_fps=30) == list(range(20))  # at most every frame
    # More than the budget: uniform over max_frames (the original demo's fallback).
    assert sample_indices(300, fps=1, source_fps=30, max_frames=4) == _linspace(300, 4)
    assert sample_indices(300, fps=1, source_fps=30, max_frames=10) == list(range(0, 300, 30))


def test_sample_indices_all_frames() -> None:
    assert sample_indices(50) == list(range(50))
    assert sample_indices(50, max_frames=60) == list(range(50))
    assert sample_indices(50, max_frames=8) == _linspace(50, 8)
    assert sample_indices(50, num_frames=8, max_frames=8) == _linspace(50, 8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_frames": 4, "fps": 1.0, "source_fps": 30}, "mutually exclusive"),
        ({"num_frames": 0}, r"num_frames must be an integer >= 1, got 0"),
        ({"num_frames": -3}, r"num_frames must be an integer >= 1"),
        ({"num_frames": 2.5}, r"num_frames must be an integer >= 1"),
        ({"fps": 0}, r"fps must be a finite number > 0, got 0"),
        ({"fps": -1.0}, r"fps must be a finite number > 0"),
        ({"fps": float("nan")}, r"fps must be a finite number > 0"),
        ({"max_frames": 0}, r"max_frames must be an integer >= 1, got 0"),
        ({"num_frames": 16, "max_frames": 8}, r"num_frames=16 exceeds max_frames=8"),
        ({"fps": 1.0}, r"needs the source frame rate"),
    ],
)
def test_sample_indices_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(VideoLoadError, match=match):
        sample_indices(100, **kwargs)


def test_sample_indices_zero_total() -> None:
    with pytest.raises(VideoLoadError, match="zero frames"):
        sample_indices(0, num_frames=4)


# ----------------------------------------------------------------------------- decoding files


@pytest.mark.parametrize("n", [1, 4, 8, 32, TOTAL])
def test_num_frames_exact_indices_and_pixels(clips: dict[str, Path], n: int) -> None:
    frames, meta = load_video(clips["mp4"], num_frames=n)
    expected = _linspace(TOTAL, n)
    assert frames.shape == (n, H, W, 3) and frames.dtype == np.uint8
    assert meta.frames_indices == expected
    assert _indices_in_pixels(frames) == expected
    assert meta.decode_mode == "seek"
    assert meta.total_num_frames == TOTAL and meta.fps == 30.0 and meta.duration == pytest.approx(10.0)
    assert (meta.width, meta.height) == (W, H)
    assert meta.timestamps == pytest.approx([i / 30 for i in expected])
    assert meta.sampling == "num_frames" and meta.requested_num_frames == n


def test_fps_sampling(clips: dict[str, Path]) -> None:
    frames, meta = load_video(clips["mp4"], fps=1)
    assert meta.frames_indices == list(range(0, 300, 30))
    assert _indices_in_pixels(frames) == meta.frames_indices
    assert meta.sampling == "fps"


def test_fps_sampling_falls_back_to_uniform_over_max_frames(clips: dict[str, Path]) -> None:
    frames, meta = load_video(clips["mp4"], fps=1, max_frames=4)
    assert meta.frames_indices == _linspace(TOTAL, 4) == [0, 99, 199, 299]
    assert _indices_in_pixels(frames) == meta.frames_indices
    assert meta.sampling == "fps->uniform"


def test_all_frames_and_max_frames(clips: dict[str, Path]) -> None:
    frames, meta = load_video(clips["mp4"])
    assert frames.shape[0] == TOTAL
    assert _indices_in_pixels(frames) == list(range(TOTAL)) == meta.frames_indices
    frames, meta = load_video(clips["mp4"], max_frames=10)
    assert meta.frames_indices == _linspace(TOTAL, 10) == _indices_in_pixels(frames)
    assert meta.sampling == "all->uniform"


def test_clip_shorter_than_num_frames_returns_all_frames(clips: dict[str, Path]) -> None:
    frames, meta = load_video(clips["short"], num_frames=32)
    assert frames.shape[0] == 10
    assert meta.frames_indices == list(range(10)) == _indices_in_pixels(frames)
    assert meta.requested_num_frames == 32 and meta.total_num_frames == 10


def test_seeking_decodes_far_fewer_frames_than_the_clip(clips: dict[str, Path]) -> None:
    frames, meta = load_video(clips["mp4"], num_frames=4)
    assert _indices_in_pixels(frames) == [0, 99, 199, 299]
    assert meta.decode_mode == "seek" and meta.seeks >= 3
    assert meta.frames_decoded <= 4 * GOP < TOTAL
    # Work (and memory) depends on the number of sampled frames, not on the clip's length.
    frames, long_meta = load_video(clips["long"], num_frames=4)
    assert _indices_in_pixels(frames) == _linspace(3 * TOTAL, 4)
    assert long_meta.frames_decoded <= 4 * GOP
    _, seq = load_video(clips["long"], num_frames=4, decode_mode="sequential")
    assert seq.frames_decoded == 3 * TOTAL


def test_close_frames_decode_forward_without_seeking(clips: dict[str, Path]) -> None:
    # Every 6 frames: the next target is always closer than a seek to its keyframe is worth.
    frames, meta = load_video(clips["mp4"], fps=5, threads=1)
    assert _indices_in_pixels(frames) == list(range(0, 300, 6))
    assert meta.seeks == 0 and meta.frames_decoded == 295 and meta.threads == 1


def test_forced_sequential_matches_seek(clips: dict[str, Path]) -> None:
    seek_frames, seek_meta = load_video(clips["mp4"], num_frames=8)
    seq_frames, seq_meta = load_video(clips["mp4"], num_frames=8, decode_mode="sequential")
    assert seq_meta.decode_mode == "sequential" and seq_meta.fallback_reason == "requested"
    assert seq_meta.frames_indices == seek_meta.frames_indices == _indices_in_pixels(seq_frames)
    np.testing.assert_array_equal(seq_frames, seek_frames)


def test_raw_stream_without_timestamps_falls_back_to_sequential(tmp_path: Path) -> None:
    path = make_video(tmp_path / "raw.h264", num_frames=100, width=64, height=64, gop=GOP)
    frames, meta = load_video(path, num_frames=8)
    assert meta.decode_mode == "sequential" and meta.fallback_reason
    assert meta.total_num_frames == 100 and meta.fps == 30.0
    assert meta.frames_indices == _linspace(100, 8) == _indices_in_pixels(frames)


def test_untrustworthy_pts_fall_back_to_sequential(tmp_path: Path) -> None:
    # AVI stores no pts: with B-frames FFmpeg's guessed pts are shifted by one frame.
    path = make_video(tmp_path / "bframes.avi", num_frames=120, width=64, height=64, gop=GOP, bframes=2)
    frames, meta = load_video(path, num_frames=8)
    assert meta.decode_mode == "sequential" and "pts" in meta.fallback_reason
    assert meta.frames_indices == _linspace(120, 8) == _indices_in_pixels(frames)


@pytest.mark.parametrize(
    ("name", "codec", "bframes"),
    [("c.mkv", "h264", 3), ("c.mov", "h264", 2), ("c.ts", "h264", 2), ("c.webm", "libvpx-vp9", 0)],
)
def test_other_containers(tmp_path: Path, name: str, codec: str, bframes: int) -> None:
    path = make_video(
        tmp_path / name, num_frames=120, width=64, height=64, gop=GOP, codec=codec, bframes=bframes
    )
    for kwargs, expected in [({"num_frames": 8}, _linspace(120, 8)), ({"fps": 1}, list(range(0, 120, 30)))]:
        frames, meta = load_video(path, **kwargs)
        assert meta.frames_indices == expected == _indices_in_pixels(frames)
        assert meta.total_num_frames == 120
        # the seek path ran on the demuxed presentation order: an index that kept decode order (or any
        # other index fault) would be hidden by the sequential fallback, which gives the same frames
        assert (meta.decode_mode, meta.fallback_reason, meta.index) == ("seek", None, "packets")
        assert meta.seeks >= 2


# Open GOPs: frames shown before a keyframe ("leading" frames) are decoded after it. x264's
# ``open-gop`` and x265's CRA pictures (RASL leading frames) reference the previous GOP: after a
# seek FFmpeg drops them. x265's ``radl`` writes decodable leading frames (RADL): after a seek to
# their keyframe the decoder puts them out first, before the keyframe itself.
_X265 = "keyint=30:min-keyint=30:scenecut=0:bframes=3:b-adapt=0:log-level=error"
_OPEN_GOP = {
    "x264-open-gop": ("h264", {"x264-params": "open-gop=1:b-adapt=0"}),
    "x265-cra": ("libx265", {"x265-params": _X265 + ":open-gop=1"}),
    "x265-radl": ("libx265", {"x265-params": _X265 + ":open-gop=0:radl=2"}),
}


def _leading_frames(path: Path) -> int:
    """Packets that follow a keyframe (after the first) in decode order but are shown before it."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size]
    keys = [i for i, (_, key) in enumerate(packets) if key][1:]
    return sum(packets[j][0] < packets[i][0] for i in keys for j in range(i + 1, min(i + 8, len(packets))))


def _first_frames_after_seek(path: Path) -> list[tuple[int, bool]]:
    """(index in the pixels, key frame) of what the decoder puts out first after seeking to frame 60."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        container.seek(round(2 / stream.time_base), stream=stream)  # frame 60 is shown at 2 s
        out = []
        for frame in container.decode(stream):
            out.append((read_frame_index(frame.to_ndarray(format="rgb24")), bool(frame.key_frame)))
            if len(out) == 3:
                return out
    return out


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
@pytest.mark.parametrize("kind", sorted(_OPEN_GOP))
def test_open_gop_leading_frames(tmp_path: Path, kind: str, suffix: str) -> None:
    codec, options = _OPEN_GOP[kind]
    path = make_video(
        tmp_path / f"{kind}{suffix}", num_frames=120, width=64, height=64, gop=GOP, codec=codec, bframes=3,
        encoder_options=options,
    )  # fmt: skip
    assert _leading_frames(path) >= 2  # the clip does have open-GOP leading frames
    if kind == "x265-radl":  # the leading frames come out of the decoder before their keyframe
        assert _first_frames_after_seek(path) == [(58, False), (59, False), (60, True)]
    for n in (8, 15):  # 15 samples include 59, the last leading frame before keyframe 60
        _, meta = _check_exact(path, 120, n=n)
        assert (meta.decode_mode, meta.fallback_reason, meta.index) == ("seek", None, "packets")
        assert meta.seeks >= 1
    frames, meta = load_video(path, fps=1)  # every sample is a keyframe that has leading frames
    assert meta.frames_indices == [0, 30, 60, 90] == _indices_in_pixels(frames)
    assert (meta.decode_mode, meta.fallback_reason, meta.seeks) == ("seek", None, 3)


# ----------------------------------------------------------------------------- real-world files
#
# Each clip's frame ``i`` (in the order a player shows them) carries code ``i``; the timestamps are
# written explicitly, as phones, cameras and stream recorders do. Frame ``i`` must mean the i-th frame
# shown, whatever the timestamps say, and the seek and sequential paths must agree on it.


def _check_exact(
    path: Path | bytes, total: int, n: int = 8, **kwargs: object
) -> tuple[np.ndarray, VideoMetadata]:
    frames, meta = load_video(path, num_frames=n, **kwargs)
    expected = _linspace(total, n)
    assert meta.total_num_frames == total and not meta.total_is_estimate
    assert meta.frames_indices == expected
    assert _indices_in_pixels(frames) == expected
    seq_frames, seq_meta = load_video(path, num_frames=n, decode_mode="sequential")
    assert seq_meta.decode_mode == "sequential" and seq_meta.frames_indices == expected
    np.testing.assert_array_equal(seq_frames, frames)
    assert seq_meta.timestamps == pytest.approx(meta.timestamps)
    for threads in (1, 3):  # one container, or groups of samples on parallel containers
        other, other_meta = load_video(path, num_frames=n, threads=threads)
        assert other_meta.frames_indices == expected and other_meta.decode_mode == meta.decode_mode
        np.testing.assert_array_equal(other, frames)
    return frames, meta


def test_variable_frame_rate_gives_the_frames_shown(tmp_path: Path) -> None:
    # 60 frames at 30 fps, 60 at 10 fps, 60 at 60 fps (ticks of 1/15360 s).
    steps = [512] * 60 + [1536] * 60 + [256] * 60
    pts = np.concatenate([[0], np.cumsum(steps[:-1])]).tolist()
    path = make_video(
        tmp_path / "vfr.mp4",
        num_frames=180,
        width=W,
        height=H,
        gop=GOP,
        pts=pts,
        time_base=Fraction(1, 15360),
    )
    for n in (8, 13, 180):
        frames, meta = _check_exact(path, 180, n)
        assert meta.decode_mode == "seek" and meta.fallback_reason is None
        assert meta.timestamps == pytest.approx([pts[i] / 15360 for i in meta.frames_indices])
    assert meta.fps == 30.0  # the nominal rate, not frames / duration


def test_duplicate_timestamps_keep_every_frame(tmp_path: Path) -> None:
    pts, t = [], 0
    for i in range(120):
        t += 0 if i % 10 == 5 else 33  # every tenth frame repeats the previous timestamp (ms)
        pts.append(t)
    path = make_video(
        tmp_path / "dup.mkv", num_frames=120, width=W, height=H, gop=GOP, pts=pts, time_base=Fraction(1, 1000)
    )
    for n in (8, 31, 120):
        _, meta = _check_exact(path, 120, n)
        assert meta.decode_mode == "seek" and meta.index == "packets"


@pytest.mark.parametrize(("name", "ticks"), [("gap.mp4", 15360), ("gap.ts", 90000)])
def test_timestamp_gap_is_sampled_over_the_frames_there(tmp_path: Path, name: str, ticks: int) -> None:
    step = ticks // 30
    pts = [i * step for i in range(60)] + [1000 * ticks + i * step for i in range(60, 120)]  # a 1000 s gap
    path = make_video(
        tmp_path / name, num_frames=120, width=W, height=H, gop=GOP, pts=pts, time_base=Fraction(1, ticks)
    )
    frames, meta = _check_exact(path, 120, 8)
    assert meta.decode_mode == "seek"
    assert (
        meta.timestamps[-1] == pytest.approx(pts[119] / ticks - pts[0] / ticks, abs=0.05)
        and meta.timestamps[-1] > 1000
    )
    assert meta.fps == 30.0


def test_mkv_starting_at_ten_seconds(tmp_path: Path) -> None:
    pts = [10_000 + round(i * 1000 / 30) for i in range(120)]
    path = make_video(
        tmp_path / "late.mkv",
        num_frames=120,
        width=W,
        height=H,
        gop=GOP,
        pts=pts,
        time_base=Fraction(1, 1000),
    )
    _, meta = _check_exact(path, 120, 8)
    _check_exact(path, 120, 120)
    assert meta.timestamps[0] == 0.0 and meta.timestamps[-1] == pytest.approx(119 / 30, abs=0.002)
    assert meta.duration == pytest.approx(4.0, abs=0.01)


def _ts_part(first_index: int, width: int = W, height: int = H, seed: int = 0) -> bytes:
    return make_video_bytes(
        num_frames=60,
        width=width,
        height=height,
        gop=GOP,
        container_format="mpegts",
        first_index=first_index,
        seed=seed,
    )


def test_concatenated_ts_files_are_sampled_over_all_parts(tmp_path: Path) -> None:
    path = tmp_path / "cat.ts"
    path.write_bytes(_ts_part(0) + _ts_part(60, seed=1))  # `cat a.ts b.ts`: timestamps restart
    for n in (8, 120):
        frames, meta = _check_exact(path, 120, n)
        assert meta.decode_mode == "seek" and meta.segments == 2
        assert np.all(np.diff(meta.timestamps) > 0)  # continuous across the junction
    assert meta.duration == pytest.approx(4.0, abs=0.01)


def test_mid_stream_resolution_change_is_scaled_to_the_first_size(tmp_path: Path) -> None:
    path = tmp_path / "res.ts"
    path.write_bytes(_ts_part(0) + _ts_part(60, width=2 * W, height=2 * H, seed=1))
    frames, meta = _check_exact(path, 120, 8)
    assert frames.shape == (8, H, W, 3)
    assert meta.resized_frames == sum(i >= 60 for i in meta.frames_indices) == 4


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_display_rotation_is_applied(tmp_path: Path, rotation: int) -> None:
    path = make_video(tmp_path / "rot.mp4", num_frames=60, width=W, height=H, gop=GOP, rotation=rotation)
    frames, meta = load_video(path, num_frames=5)
    assert meta.rotation == rotation
    upright = (H, W) if rotation == 180 else (W, H)
    assert frames.shape == (5, *upright, 3) and (meta.height, meta.width) == upright
    # Undo the counterclockwise rotation: the codes then read back in the top-left corner.
    assert [read_frame_index(np.rot90(f, k=-rotation // 90)) for f in frames] == _linspace(60, 5)
    seq, _ = load_video(path, num_frames=5, decode_mode="sequential")
    np.testing.assert_array_equal(seq, frames)
    # The same picture OpenCV (vLLM's video loader) shows.
    import cv2

    cap = cv2.VideoCapture(str(path))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    np.testing.assert_array_equal(bgr[..., ::-1], frames[0])


def test_b_frames_in_mp4_are_indexed_from_the_packets(tmp_path: Path) -> None:
    path = make_video(tmp_path / "b.mp4", num_frames=120, width=W, height=H, gop=GOP, bframes=2)
    _, meta = _check_exact(path, 120, 8)
    assert meta.decode_mode == "seek" and meta.index == "packets"
    _, meta = load_video(
        make_video(tmp_path / "p.mp4", num_frames=120, width=W, height=H, gop=GOP), num_frames=8
    )
    assert meta.index == "container"  # no reordering: the sample table is the presentation order


def test_sample_table_that_disagrees_with_the_frames_falls_back_to_the_packets(tmp_path: Path) -> None:
    # No reordering, but every pts is its dts + 1024 ticks (a constant composition offset): the
    # mp4 sample table (dts) no longer names the decoded frames' timestamps.
    src = make_video(tmp_path / "plain.mp4", num_frames=120, width=W, height=H, gop=GOP)
    path = tmp_path / "offset.mp4"
    with av.open(str(src)) as inp, av.open(str(path), "w") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.pts += 1024
                packet.stream = stream
                out.mux(packet)
    frames, meta = _check_exact(path, 120, 8)
    assert meta.decode_mode == "seek" and meta.index == "packets"


# ----------------------------------------------------------------------------- parallel decoding


def test_parallel_groups_give_the_same_frames(clips: dict[str, Path]) -> None:
    ref, ref_meta = load_video(clips["long"], num_frames=16, threads=1)
    assert ref_meta.threads == 1
    for threads in (2, 3, 16):
        frames, meta = load_video(clips["long"], num_frames=16, threads=threads)
        assert 1 < meta.threads <= min(threads, 16)
        assert meta.frames_indices == ref_meta.frames_indices == _indices_in_pixels(frames)
        np.testing.assert_array_equal(frames, ref)
    # Bytes sources decode in parallel too; a file object is read by one container only.
    frames, meta = load_video(clips["long"].read_bytes(), num_frames=16, threads=2)
    assert meta.threads == 2
    np.testing.assert_array_equal(frames, ref)
    with clips["long"].open("rb") as fh:
        frames, meta = load_video(fh, num_frames=16, threads=2)
    assert meta.threads == 1
    np.testing.assert_array_equal(frames, ref)


def test_tiny_requests_use_one_thread(clips: dict[str, Path]) -> None:
    _, meta = load_video(clips["mp4"], num_frames=2)
    assert meta.threads == 1
    with pytest.raises(VideoLoadError, match=r"threads must be an integer >= 1 or None \(automatic\), got 0"):
        load_video(clips["mp4"], num_frames=2, threads=0)


# ----------------------------------------------------------------------------- other inputs


def test_bytes_and_file_objects_give_the_same_frames(clips: dict[str, Path]) -> None:
    data = clips["mp4"].read_bytes()
    ref, ref_meta = load_video(str(clips["mp4"]), num_frames=8)
    for source, desc in [
        (data, "<bytes>"),
        (bytearray(data), "<bytes>"),
        (memoryview(data), "<bytes>"),
        (io.BytesIO(data), "<file-like>"),
    ]:
        frames, meta = load_video(source, num_frames=8)
        assert meta.source == desc and meta.decode_mode == "seek"
        assert meta.frames_indices == ref_meta.frames_indices
        np.testing.assert_array_equal(frames, ref)
    with clips["mp4"].open("rb") as fh:
        frames, meta = load_video(fh, num_frames=8)
    np.testing.assert_array_equal(frames, ref)


def test_make_video_bytes_roundtrip() -> None:
    data = make_video_bytes(num_frames=60, width=64, height=64, gop=GOP)
    frames, meta = load_video(data, num_frames=5)
    assert meta.frames_indices == _linspace(60, 5) == _indices_in_pixels(frames)


def test_array_tensor_and_lists_give_the_same_indices() -> None:
    video = make_frames(TOTAL, 64, 64, seed=3)
    expected = _linspace(TOTAL, 8)
    for source, desc in [
        (video, "<array>"),
        (torch.from_numpy(video), "<tensor>"),
        ([Image.fromarray(f) for f in video], "<frames list>"),
        (list(video), "<frames list>"),
        (tuple(video), "<frames list>"),
    ]:
        frames, meta = load_video(source, num_frames=8)
        assert meta.decode_mode == "array" and meta.source == desc
        assert meta.frames_indices == expected
        np.testing.assert_array_equal(frames, video[expected])
    frames, meta = load_video(video, fps=1, source_fps=30)
    assert meta.frames_indices == list(range(0, 300, 30)) == _indices_in_pixels(frames)
    assert meta.timestamps == pytest.approx([float(i) for i in range(10)])
    frames, meta = load_video(video, max_frames=4)
    assert meta.frames_indices == _linspace(TOTAL, 4)
    frames, meta = load_video(video[:5], num_frames=32)
    assert meta.frames_indices == list(range(5)) and frames.shape[0] == 5


def test_pil_non_rgb_frames_are_converted() -> None:
    video = make_frames(4, 64, 64)
    frames, _ = load_video([Image.fromarray(f).convert("RGBA") for f in video])
    np.testing.assert_array_equal(frames, video)


def test_http_url(clips: dict[str, Path]) -> None:
    data = clips["mp4"].read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/clip.mp4"):
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        frames, meta = load_video(f"{base}/clip.mp4?sig=secret", num_frames=4)
        assert _indices_in_pixels(frames) == _linspace(TOTAL, 4)
        assert meta.source == f"{base}/clip.mp4"  # the query (tokens) is never echoed
        with pytest.raises(VideoLoadError, match="HTTP 404") as info:
            load_video(f"{base}/missing.mp4?sig=secret", num_frames=4)
        assert "secret" not in str(info.value)
    finally:
        server.shutdown()
        server.server_close()


def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def test_http_url_total_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            while not stop.is_set():  # 10 bytes every 20 ms: each read is quick, the whole never ends
                try:
                    self.wfile.write(b"x" * 10)
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.02)

        def log_message(self, *args: object) -> None:
            pass

    server, base = _serve(Trickle)
    monkeypatch.setattr(vio_sources, "URL_DEADLINE_S", 0.5)
    try:
        t0 = time.monotonic()
        with pytest.raises(
            VideoLoadError,
            match=r"clip\.mp4: the download took longer than the limit of 0\.5 s \(URL_DEADLINE_S\); \d+ bytes",
        ):
            load_video(f"{base}/clip.mp4", num_frames=4)
        assert time.monotonic() - t0 < 3.0  # the per-read timeout (30 s) never came into play
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def test_http_url_read_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()

    class Stall(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            stop.wait(5)  # then nothing more

        def log_message(self, *args: object) -> None:
            pass

    server, base = _serve(Stall)
    monkeypatch.setattr(vio_sources, "URL_TIMEOUT_S", 0.3)
    try:
        with pytest.raises(
            VideoLoadError, match=r"stall\.mp4: download failed \(no data for 0\.3 s \(URL_TIMEOUT_S\)\)"
        ):
            load_video(f"{base}/stall.mp4", num_frames=4)
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def test_http_url_size_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    class Big(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            if self.path == "/declared.mp4":
                self.send_header("Content-Length", "5000")
            self.end_headers()  # /undeclared.mp4: no length, the body ends when the connection closes
            try:
                self.wfile.write(b"x" * 5000)
            except OSError:
                pass

        def log_message(self, *args: object) -> None:
            pass

    Big.protocol_version = "HTTP/1.0"
    server, base = _serve(Big)
    monkeypatch.setattr(vio_sources, "MAX_URL_BYTES", 1000)
    try:
        with pytest.raises(
            VideoLoadError, match=r"5000 bytes is larger than the limit of 1000 bytes \(MAX_URL_BYTES\)"
        ):
            load_video(f"{base}/declared.mp4", num_frames=4)
        with pytest.raises(
            VideoLoadError,
            match=r"undeclared\.mp4: larger than the limit of 1000 bytes \(MAX_URL_BYTES\); the download was stopped",
        ):
            load_video(f"{base}/undeclared.mp4", num_frames=4)
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------- metadata


def test_metadata_is_frozen_and_serialisable(clips: dict[str, Path]) -> None:
    _, meta = load_video(clips["mp4"], num_frames=4)
    assert isinstance(meta, VideoMetadata)
    with pytest.raises(AttributeError):
        meta.fps = 1.0  # type: ignore[misc]
    d = json.loads(json.dumps(meta.to_dict()))
    assert d["frames_indices"] == [0, 99, 199, 299] and d["decode_mode"] == "seek"
    assert d["source"] == str(clips["mp4"]) and d["codec"] == "h264"
    hf = meta.to_transformers()
    assert hf.total_num_frames == TOTAL and list(hf.frames_indices) == [0, 99, 199, 299]


# ----------------------------------------------------------------------------- errors


def test_error_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoLoadError, match=r"nope\.mp4: video file not found"):
        load_video(tmp_path / "nope.mp4", num_frames=4)


def test_error_directory(tmp_path: Path) -> None:
    with pytest.raises(VideoLoadError, match="not a regular file"):
        load_video(tmp_path, num_frames=4)


def test_error_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoLoadError, match=r"empty\.mp4: the file is empty \(0 bytes\)"):
        load_video(tmp_path / "empty.mp4", num_frames=4)
    with pytest.raises(VideoLoadError, match=r"<bytes>: the video data is empty"):
        load_video(b"", num_frames=4)


def test_error_truncated_without_index(clips: dict[str, Path], tmp_path: Path) -> None:
    # mp4 writes its index (moov) last: the first half has none and cannot be opened.
    data = clips["mp4"].read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoLoadError, match=r"half\.mp4: not a readable video .*truncated"):
        load_video(tmp_path / "half.mp4", num_frames=4)


def test_error_truncated_with_index_names_readable_frames(clips: dict[str, Path], tmp_path: Path) -> None:
    # With the index first, the header promises 300 frames but the data stops half way.
    data = clips["faststart"].read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoLoadError, match=r"truncated: found \d+ of the 300 frames the header declares"):
        load_video(tmp_path / "half.mp4", num_frames=8)
    # Frames before the cut are still readable when the caller accepts a truncated file (issue 24).
    with pytest.warns(UserWarning, match="truncated"):
        frames, meta = load_video(tmp_path / "half.mp4", num_frames=1, allow_truncated=True)
    assert _indices_in_pixels(frames) == [0]


def test_error_text_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello world\n" * 100)
    with pytest.raises(VideoLoadError, match=r"notes\.txt: not a video"):
        load_video(tmp_path / "notes.txt", num_frames=4)
    with pytest.raises(VideoLoadError, match=r"<bytes>: not a readable video"):
        load_video(b"\x00garbage" * 100, num_frames=4)


def test_error_still_image(tmp_path: Path) -> None:
    Image.fromarray(make_frames(1, 64, 64)[0]).save(tmp_path / "still.jpg")
    with pytest.raises(VideoLoadError, match=r"still\.jpg: not a video .*still image"):
        load_video(tmp_path / "still.jpg", num_frames=4)


def test_error_audio_only(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(VideoLoadError, match=r"tone\.wav: no video stream \(streams found: audio\)"):
        load_video(path, num_frames=4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_frames": 0}, "num_frames must be an integer >= 1, got 0"),
        ({"num_frames": 4, "fps": 1}, "mutually exclusive"),
        ({"fps": 0}, "fps must be a finite number > 0"),
        ({"max_frames": 0}, "max_frames must be an integer >= 1"),
        ({"num_frames": 8, "max_frames": 4}, "num_frames=8 exceeds max_frames=4"),
        ({"decode_mode": "fast"}, "decode_mode must be"),
    ],
)
def test_error_bad_arguments(clips: dict[str, Path], kwargs: dict, match: str) -> None:
    with pytest.raises(VideoLoadError, match=match):
        load_video(clips["mp4"], **kwargs)


def test_error_bad_array_inputs() -> None:
    with pytest.raises(
        VideoLoadError, match=r"<array>: expected frames of shape \(T, H, W, 3\) and dtype uint8"
    ):
        load_video(np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(VideoLoadError, match=r"expected frames of shape \(T, H, W, 3\)"):
        load_video(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(VideoLoadError, match="<array>: zero frames"):
        load_video(np.zeros((0, 8, 8, 3), np.uint8), num_frames=4)
    with pytest.raises(VideoLoadError, match="<frames list>: zero frames"):
        load_video([], num_frames=4)
    with pytest.raises(VideoLoadError, match="all frames must have the same size"):
        load_video([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)])
    with pytest.raises(VideoLoadError, match="expected dtype uint8"):
        load_video(torch.zeros((2, 8, 8, 3)))
    with pytest.raises(VideoLoadError, match="needs the source frame rate"):
        load_video(np.zeros((4, 8, 8, 3), np.uint8), fps=1)
    with pytest.raises(VideoLoadError, match="unsupported video source of type int"):
        load_video(42)
    with pytest.raises(VideoLoadError, match="unsupported URL scheme 'ftp'"):
        load_video("ftp://example.com/v.mp4")


def test_errors_are_in_the_family() -> None:
    assert issubclass(VideoLoadError, LlavaNextVideoError) and issubclass(VideoLoadError, ValueError)


def test_limits(clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    data = clips["mp4"].read_bytes()
    monkeypatch.setattr(vio_sources, "MAX_SOURCE_BYTES", 1000)
    with pytest.raises(VideoLoadError, match=r"larger than the limit of 1000 bytes \(MAX_SOURCE_BYTES\)"):
        load_video(data, num_frames=4)
    with pytest.raises(VideoLoadError, match=r"larger than the limit of 1000 bytes"):
        load_video(io.BytesIO(data), num_frames=4)
    monkeypatch.undo()
    monkeypatch.setattr(vio_frames, "MAX_PIXELS", 100 * 90)
    with pytest.raises(VideoLoadError, match=r"160x96 = 15360 pixels exceeds the limit of 9000 pixels"):
        load_video(clips["mp4"], num_frames=4)
    with pytest.raises(VideoLoadError, match=r"exceeds the limit of 9000 pixels"):
        load_video(make_frames(2, H, W))
    monkeypatch.undo()
    monkeypatch.setattr(vio_frames, "MAX_OUTPUT_BYTES", 10 * H * W * 3)
    with pytest.raises(
        VideoLoadError, match=r"300 frames of 160x96 need .* \(MAX_OUTPUT_BYTES\); pass num_frames"
    ):
        load_video(clips["mp4"])
    frames, _ = load_video(clips["mp4"], num_frames=10)
    assert frames.shape[0] == 10


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_frames_roundtrip_and_determinism() -> None:
    a = make_frames(5, 64, 64, seed=1)
    assert a.shape == (5, 64, 64, 3) and a.dtype == np.uint8
    assert _indices_in_pixels(a) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(a, make_frames(5, 64, 64, seed=1))
    assert not np.array_equal(a, make_frames(5, 64, 64, seed=2))
    big = make_frames(1, 360, 640)[0]
    big[:96, :256] = 0  # paint index 0 ...
    big[:32, 224:256] = 255  # ... then set the lowest bit of the first row: 2**16
    assert read_frame_index(big) == 2**16
    with pytest.raises(ValueError, match="too small"):
        make_frames(1, 32, 32)
