"""``llava-next-video inspect``: the report and the contact sheet against ``load_video``'s metadata."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from llava_next_video_hf.cli import default_checkpoint, main
from llava_next_video_hf.inspection import contact_sheet
from llava_next_video_hf.testing.synthetic import make_video, read_frame_index
from llava_next_video_hf.video_io import load_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    # 128x96 frames: thumbnails keep every pixel, so the index pattern of each frame can be read back
    return make_video(
        tmp_path_factory.mktemp("inspect") / "clip.mp4", num_frames=90, fps=30, width=128, height=96
    )


def _line(out: str, name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith(name + ":"))


def test_report_and_sheet_match_load_video(clip, tmp_path, capsys):
    sheet_path = tmp_path / "sheet.png"
    assert main(["inspect", str(clip), "--frames", "7", "-o", str(sheet_path)]) == 0
    out = capsys.readouterr().out
    frames, meta = load_video(clip, num_frames=7)
    assert meta.frames_indices == [0, 14, 29, 44, 59, 74, 89]  # linspace(0, 89, 7), as the original samples
    assert _line(out, "indices") == ", ".join(map(str, meta.frames_indices))
    shown = [float(t) for t in _line(out, "timestamps").split(" (s)")[0].split(", ")]
    np.testing.assert_allclose(shown, [i / 30 for i in meta.frames_indices], atol=1e-3)
    assert _line(out, "decode").startswith(meta.decode_mode)
    assert _line(out, "resolution").startswith("128x96")
    assert _line(out, "rotation") == "0 degrees"

    sheet = contact_sheet(frames, meta)
    written = np.asarray(Image.open(sheet_path).convert("RGB"))
    assert np.array_equal(written, np.asarray(sheet.image))  # the command wrote this sheet
    for box, index, t, label in zip(
        sheet.boxes, meta.frames_indices, meta.timestamps, sheet.labels, strict=True
    ):
        cell = written[box[1] : box[3], box[0] : box[2]]
        assert read_frame_index(cell) == index  # the frame drawn in this cell is the sampled frame
        assert label == f"#{index}  {t:.3f} s"


def test_fps_sampling_and_rotation(tmp_path, capsys):
    path = make_video(tmp_path / "rot.mp4", num_frames=30, fps=30, width=128, height=96, rotation=90)
    assert main(["inspect", str(path), "--fps", "5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)["metadata"]
    _, meta = load_video(path, fps=5)
    assert data["frames_indices"] == meta.frames_indices == [0, 6, 12, 18, 24]
    assert data["rotation"] == 90 and (data["width"], data["height"]) == (96, 128)


def test_budget_with_the_tiny_checkpoint(clip, capsys):
    ckpt = str(default_checkpoint())
    # its config: 336 px CLIP/14 -> 24x24 patches, pooled at stride 6 -> 4x4 = 16 tokens a frame, 256 positions
    assert main(["inspect", str(clip), "--checkpoint", ckpt, "--json"]) == 0
    budget = json.loads(capsys.readouterr().out)["budget"]
    assert budget["num_frames"] == 8 and budget["video_tokens"] == 8 * 16
    assert budget["context_length"] == 256 and budget["rope_factor"] == 1 and budget["fits"]

    assert main(["inspect", str(clip), "--checkpoint", ckpt, "--frames", "16"]) == 0
    out = capsys.readouterr().out
    assert main(["inspect", str(clip), "--checkpoint", ckpt, "--frames", "16", "--json"]) == 0
    budget = json.loads(capsys.readouterr().out)["budget"]
    text = budget["prompt_tokens"] - 16 * 16
    assert not budget["fits"] and budget["prompt_tokens"] > 256
    fit = budget["frames_that_fit"]
    assert text + fit * 16 <= 256 < text + (fit + 1) * 16
    assert budget["rope_factor_needed"] == math.ceil(budget["prompt_tokens"] / 256) == 2
    assert "does NOT fit" in out and f"at most {fit} frames" in out and "factor of at least 2" in out


def test_bad_input_is_a_message(clip, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    assert main(["inspect", str(bad)]) == 1
    assert "not a readable video" in capsys.readouterr().err
    assert main(["inspect", str(clip), "-o", str(tmp_path / "x.jpg")]) == 1
    assert "PNG" in capsys.readouterr().err
