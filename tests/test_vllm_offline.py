"""``llava-next-video generate --engine vllm`` (``vllm_plugin.offline.generate_one``) answers like the
transformers engine: same chat template, same frames from the same file, same greedy tokens."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from llava_next_video_hf import cli, testing
from llava_next_video_hf.errors import ContextLengthError

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("offline")
    ckpt = testing.make_tiny_checkpoint(root / "ckpt", seed=3)
    video = testing.make_video(root / "clip.mp4", num_frames=40, fps=20, width=320, height=240, seed=5)
    image = root / "image.png"
    Image.fromarray((np.random.RandomState(6).rand(260, 400, 3) * 255).astype(np.uint8)).save(image)
    return ckpt, video, image


def test_generate_one_equals_the_transformers_engine(files):
    from llava_next_video_hf.vllm_plugin.offline import generate_one

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    ckpt, video, image = files
    kwargs = dict(video=str(video), images=[str(image)], num_frames=5, max_new_tokens=10)
    expected = cli.generate(ckpt, "What is happening in this video?", engine="hf", **kwargs)
    assert generate_one(str(ckpt), "What is happening in this video?", **kwargs) == expected
    assert expected  # a real answer, not an empty string


def test_generate_one_refuses_what_the_context_cannot_hold_before_starting_an_engine(files):
    from llava_next_video_hf.vllm_plugin.offline import generate_one

    ckpt, video, _ = files
    with pytest.raises(ContextLengthError, match="at most 28 frames"):
        generate_one(str(ckpt), "What?", video=str(video), num_frames=30)
