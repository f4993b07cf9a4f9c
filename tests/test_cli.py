"""The ``llava-next-video`` console script: generate, demo, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from llava_next_video_hf import cli, testing


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return testing.make_video(
        tmp_path_factory.mktemp("cli") / "clip.mp4", num_frames=40, fps=20, width=96, height=64
    )


def test_generate_prints_the_models_greedy_answer(tiny_ckpt, clip, capsys):
    assert cli.main(["generate", str(tiny_ckpt), "--video", str(clip), "--prompt", "What?", "--frames", "4",
                     "--max-new-tokens", "5"]) == 0  # fmt: skip
    printed = capsys.readouterr().out.strip()
    processor = AutoProcessor.from_pretrained(tiny_ckpt)
    model = AutoModelForImageTextToText.from_pretrained(tiny_ckpt)
    messages = [
        {"role": "user", "content": [{"type": "video", "path": str(clip)}, {"type": "text", "text": "What?"}]}
    ]
    inputs = processor.apply_chat_template(
        messages,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        num_frames=4,
    )
    assert inputs["pixel_values_videos"].shape[1] == 4
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    expected = processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert printed == expected


def test_demo_runs_on_the_embedded_checkpoint():
    done = subprocess.run(
        [sys.executable, "-m", "llava_next_video_hf.cli", "demo", "--engine", "hf"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[hf] answer:" in done.stdout and "question:" in done.stdout


def test_errors_exit_1_with_a_message(tiny_ckpt, tmp_path, capsys):
    missing = tmp_path / "nope.mp4"
    assert cli.main(["generate", str(tiny_ckpt), "--video", str(missing), "--prompt", "What?"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "nope.mp4" in err
    assert cli.main(["generate", str(tiny_ckpt), "--prompt", "What?"]) == 1
    assert "--video" in capsys.readouterr().err


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as exc:
        cli.main(["generate", "ckpt", "--video", "v.mp4", "--prompt", "q", "--frames", "4", "--fps", "1"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2
