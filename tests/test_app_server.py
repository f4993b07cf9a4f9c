"""``llava-next-video app --server URL``: the app talking to a running vLLM server (OpenAI API) answers
the demo clip as the shipped model does, streams, and reports the server's prompt tokens, which must
equal what the checkpoint's processor counts for the same chat."""

from __future__ import annotations

import json
import os
import re

import pytest

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402

from llava_next_video_hf.cli import default_checkpoint  # noqa: E402
from llava_next_video_hf.testing import tasks  # noqa: E402

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def app_on_server(tmp_path_factory):
    from llava_next_video_hf.app import launch, make_backend
    from llava_next_video_hf.vllm_plugin.testing import serve

    root = tmp_path_factory.mktemp("app-server")
    args = [
        "--dtype", "float32", "--enforce-eager", "--gpu-memory-utilization", "0.3",
        "--media-io-kwargs", json.dumps({"video": {"num_frames": 8}}), "--trust-request-mm-kwargs",
    ]  # fmt: skip
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with serve(default_checkpoint(), *args, env=env, log_path=root / "server.log") as base:
        demo = launch(make_backend(server=base), port=None, block=False)
        try:
            yield demo.local_url, root
        finally:
            demo.close()


def test_server_engine_answers_the_demo_clip(app_on_server):
    from transformers import AutoProcessor

    from llava_next_video_hf.inspection import count_prompt_tokens
    from llava_next_video_hf.video_io import load_video

    url, root = app_on_server
    clip = root / "clip.mp4"
    question, expected = tasks.make_demo_clip(clip)
    client = Client(url, verbose=False)
    chat, gallery, budget, timing, status, _ = client.predict(
        handle_file(str(clip)), "", None, 8, 0, 0, question, api_name="/ask"
    )
    assert status == "", status
    assert tasks.parse_answer(chat[1]["content"][0]["text"]) == expected
    assert len(gallery) == 8
    frames, _ = load_video(clip, num_frames=8)
    tokens, _ = count_prompt_tokens(AutoProcessor.from_pretrained(default_checkpoint()), frames, question)
    served = int(re.search(r"prompt (\d+) tokens of a 256-token context", budget).group(1))
    assert served == tokens  # the server's count = the processor's (template, placeholders)

    # no frame option: the app asks for --server-frames (8), the same cache entry, the same conversation
    chat, *_rest, status, _ = client.predict(
        handle_file(str(clip)), "", None, 0, 0, 0, "Which direction does the object move?", api_name="/ask"
    )
    assert status == "" and len(chat) == 4 and "answer 2:" in _rest[2]
    assert "video from the cache" in _rest[2]
