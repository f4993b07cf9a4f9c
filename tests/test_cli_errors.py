"""Bad input to ``generate`` (and the processor's frame settings) ends with exit 1 and one ``error:`` line
naming the problem, or a usage error (exit 2); ``--video -`` reads the video from stdin."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

from llava_next_video_hf import cli, testing
from llava_next_video_hf.errors import ImageLoadError, VideoLoadError
from llava_next_video_hf.image_processing import load_image_checked
from llava_next_video_hf.processing import LlavaNextVideoAnyResProcessor
from llava_next_video_hf.video_io import MAX_PIXELS


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return testing.make_video(
        tmp_path_factory.mktemp("cli") / "clip.mp4", num_frames=12, fps=6, width=64, height=48
    )


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_missing_or_wrong_checkpoint(tmp_path, clip, capsys):
    assert cli.main(["generate", str(tmp_path / "nope"), "--video", str(clip), "--prompt", "q"]) == 1
    assert "nope does not exist" in _error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert cli.main(["generate", str(tmp_path / "empty"), "--video", str(clip), "--prompt", "q"]) == 1
    assert "no config.json" in _error_line(capsys)
    assert cli.main(["generate", str(clip), "--video", str(clip), "--prompt", "q"]) == 1
    assert "is a file" in _error_line(capsys)
    assert (
        cli.main(["generate", "org/not-here", "--video", str(clip), "--prompt", "q"]) == 1
    )  # offline in tests
    assert "Hub is offline" in _error_line(capsys)


def test_corrupt_missing_and_oversized_images(tiny_ckpt, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    bomb = tmp_path / "bomb.png"  # 20000 x 20000 = 4e8 pixels, a few hundred KB on disk
    Image.new("L", (20000, 20000)).save(bomb)
    big = tmp_path / "big.png"  # over our limit but under PIL's own bomb check
    side = int(MAX_PIXELS**0.5) + 64
    Image.new("L", (side, side)).save(big)
    cases = {corrupt: "not a readable image", bomb: f"limit of {MAX_PIXELS} pixels",
             big: f"exceeds the limit of {MAX_PIXELS} pixels", tmp_path / "none.png": "no such file"}  # fmt: skip
    for path, message in cases.items():
        assert cli.main(["generate", str(tiny_ckpt), "--image", str(path), "--prompt", "q"]) == 1
        line = _error_line(capsys)
        assert message in line and path.name in line, line
        with pytest.raises(ImageLoadError, match=message):
            load_image_checked(path)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--frames", "0"], "argument --frames: must be an integer >= 1, got 0"),
        (["--frames", "-5"], "argument --frames: must be an integer >= 1, got -5"),
        (["--max-frames", "0"], "argument --max-frames: must be an integer >= 1, got 0"),
        (["--fps", "0"], "argument --fps: must be a finite number > 0"),
        (["--fps", "nan"], "argument --fps: must be a finite number > 0"),
    ],
)
def test_frame_arguments_out_of_range_are_usage_errors(clip, argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["generate", "ckpt", "--video", str(clip), "--prompt", "q", *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_processor_names_the_frame_argument_given(tiny_ckpt):
    processor = LlavaNextVideoAnyResProcessor.from_pretrained(tiny_ckpt)
    frames = np.zeros((10, 32, 32, 3), np.uint8)
    for kwargs, message in [
        ({"max_frames": 0}, "max_frames must be an integer >= 1, got 0"),
        ({"num_frames": 0}, "num_frames must be an integer >= 1, got 0"),
        ({"fps": -1.0}, "fps must be a finite number > 0, got -1.0"),
    ]:
        with pytest.raises(VideoLoadError, match=message):
            processor(text="<video> q", videos=[frames], **kwargs)
    with pytest.raises(
        VideoLoadError, match="video processor setting max_frames must be an integer >= 1, got 0"
    ):
        LlavaNextVideoAnyResProcessor.from_pretrained(tiny_ckpt, max_frames=0)


def test_video_from_stdin_gives_the_same_answer_as_the_file(tiny_ckpt, clip, capsys, monkeypatch):
    def run(video: str, stdin: bytes) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        argv = ["generate", str(tiny_ckpt), "--video", video, "--prompt", "What?", "--frames", "3",
                "--max-new-tokens", "4"]  # fmt: skip
        code = cli.main(argv)
        out = capsys.readouterr()
        return code, out.out, out.err

    piped = run("-", clip.read_bytes())
    assert piped[:2] == run(str(clip), b"")[:2] and piped[0] == 0 and piped[1].strip()
    code, _, err = run("-", b"")
    assert code == 1 and err.startswith("error: --video -: stdin is empty")


@pytest.mark.parametrize("option", ["--tensor-parallel-size", "-pp"])
def test_parallel_workers_need_the_vllm_engine(tmp_path, clip, capsys, option):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    assert cli.main(["generate", str(ckpt), "--video", str(clip), "--prompt", "q", option, "2"]) == 1
    assert "need --engine vllm" in _error_line(capsys)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["generate", str(ckpt), "--video", str(clip), "--prompt", "q", option, "0"])
    assert exit_.value.code == 2


@pytest.mark.parametrize("bad", ["0.5", "nan", "inf", "two"])
def test_rope_factor_is_checked_the_same_way_by_generate_and_convert(tmp_path, clip, capsys, bad):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    assert cli.main(["generate", str(ckpt), "--video", str(clip), "--prompt", "q", "--rope-factor", bad]) == 1
    assert f"--rope-factor must be a number >= 1 or 'auto', got {bad!r}" in _error_line(capsys)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["convert", str(ckpt), str(tmp_path / "out"), "--rope-factor", bad])
    assert exit_.value.code == 2
    assert f"a number >= 1 or 'auto', got {bad!r}" in capsys.readouterr().err
