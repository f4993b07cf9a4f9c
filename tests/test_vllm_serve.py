"""``vllm serve <tiny checkpoint>`` answers OpenAI chat requests with videos and images.

The server runs as a subprocess (the ``vllm`` command of this environment, which works thanks to
``scripts/post_install.py``). Answers are checked against our transformers model run greedily on
the very prompt the server used (``return_token_ids``) and the same 8 decoded frames / image.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import requests
from _parity import chat as parity_chat
from _parity import chat_answer, served_reference
from PIL import Image

from llava_next_video_hf import testing
from llava_next_video_hf.modeling import LlavaNextVideoAnyResForConditionalGeneration

pytestmark = pytest.mark.vllm

FRAMES = 8  # the server's decoding default, set with --media-io-kwargs
MAX_TOKENS = 8
QUESTION = {"type": "text", "text": "What is happening in this video?"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    ckpt = testing.make_tiny_checkpoint(root / "ckpt", seed=2)
    media = root / "media"
    media.mkdir()
    video = testing.make_video(media / "clip.mp4", num_frames=30, fps=10, width=320, height=240, seed=3)
    image = media / "image.png"
    Image.fromarray((np.random.RandomState(4).rand(300, 500, 3) * 255).astype(np.uint8)).save(image)
    return {"ckpt": ckpt, "media": media, "video": video, "image": image, "root": root}


@pytest.fixture(scope="module")
def server(files):
    from llava_next_video_hf.vllm_plugin.testing import serve

    args = [
        "--dtype", "float32", "--enforce-eager", "--gpu-memory-utilization", "0.3",
        "--media-io-kwargs", json.dumps({"video": {"num_frames": FRAMES}}),
        "--allowed-local-media-path", str(files["media"]),
        "--trust-request-mm-kwargs",
    ]  # fmt: skip
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with serve(files["ckpt"], *args, env=env, log_path=files["root"] / "server.log") as base:
        yield base


def chat(base: str, model: str, parts: list[dict], **extra) -> requests.Response:
    return parity_chat(base, model, parts, MAX_TOKENS, **extra)


def _video_part(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


@pytest.fixture(scope="module")
def reference(files):
    """Our transformers model, greedy, on a prompt the server tokenized and the same media."""
    return served_reference(files["ckpt"], MAX_TOKENS)


def test_video_base64_mp4_then_image_then_corrupt_then_valid(server, files, reference):
    from llava_next_video_hf.vllm_plugin.testing import data_url

    model = str(files["ckpt"])
    video_url = data_url(files["video"].read_bytes(), "video/mp4")

    prompt, tokens = chat_answer(chat(server, model, [_video_part(video_url), QUESTION]))
    config = LlavaNextVideoAnyResForConditionalGeneration.config_class.from_pretrained(files["ckpt"])
    assert prompt.count(config.video_token_id) == config.num_video_tokens(FRAMES)
    assert tokens == reference(prompt, videos=[str(files["video"])], num_frames=FRAMES)

    image_url = data_url(files["image"].read_bytes(), "image/png")
    image_part = {"type": "image_url", "image_url": {"url": image_url}}
    prompt, tokens = chat_answer(chat(server, model, [image_part, QUESTION]))
    assert prompt.count(config.image_token_id) == config.num_image_tokens(300, 500)
    assert tokens == reference(prompt, images=[Image.open(io.BytesIO(files["image"].read_bytes()))])

    corrupt = data_url(b"\x00\x00\x00\x18ftypmp42" + b"not a video" * 64, "video/mp4")
    resp = chat(server, model, [_video_part(corrupt), QUESTION])
    assert resp.status_code == 400, resp.text
    assert "video" in resp.json()["error"]["message"].lower()

    again, tokens_again = chat_answer(chat(server, model, [_video_part(video_url), QUESTION]))
    assert tokens_again == reference(again, videos=[str(files["video"])], num_frames=FRAMES)


def test_local_files_only_under_the_allowed_path(server, files):
    model = str(files["ckpt"])
    prompt, _ = chat_answer(chat(server, model, [_video_part(files["video"].as_uri()), QUESTION]))
    assert len(prompt) > 0
    outside = files["root"] / "outside.mp4"
    outside.write_bytes(files["video"].read_bytes())
    assert chat(server, model, [_video_part(outside.as_uri()), QUESTION]).status_code == 400


def test_per_request_frame_options(server, files):
    """With --trust-request-mm-kwargs: frames at decoding (media_io_kwargs) or in the processor
    (mm_processor_kwargs); the placeholder runs follow the one token function."""
    from llava_next_video_hf.vllm_plugin.testing import data_url

    model = str(files["ckpt"])
    part = _video_part(data_url(files["video"].read_bytes(), "video/mp4"))
    config = LlavaNextVideoAnyResForConditionalGeneration.config_class.from_pretrained(files["ckpt"])

    def video_tokens(**extra) -> int:
        prompt, _ = chat_answer(chat(server, model, [part, QUESTION], **extra))
        return prompt.count(config.video_token_id)

    assert video_tokens(media_io_kwargs={"video": {"num_frames": 5}}) == config.num_video_tokens(5)
    assert video_tokens(media_io_kwargs={"video": {"fps": 1}}) == config.num_video_tokens(3)  # 3 s clip
    assert video_tokens(mm_processor_kwargs={"num_frames": 3}) == config.num_video_tokens(3)
    bad = chat(server, model, [part, QUESTION], mm_processor_kwargs={"num_frames": 0})
    assert bad.status_code == 400 and "num_frames" in bad.json()["error"]["message"], bad.text
