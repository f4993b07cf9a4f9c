"""vLLM feeds the model the original LLaVA token ids too (issue 11): ``vllm serve`` with a
SentencePiece-style (Vicuna) tokenizer, for a chat request with a video and for a raw prompt.

vLLM renders the chat template and tokenizes the prompt itself; the expected ids are written out
from the original rule (``tokenizer_image_token``), as in ``test_fidelity.py``.
"""

from __future__ import annotations

import json
import os

import pytest
import requests

from llava_next_video_hf import testing
from llava_next_video_hf.configuration import LlavaNextVideoAnyResConfig

pytestmark = pytest.mark.vllm

FRAMES = 4
VICUNA_BEFORE = (
    "<s> ▁A ▁chat ▁between ▁a ▁curious ▁user ▁and ▁an ▁artificial ▁intelligence ▁assistant . ▁The "
    "▁assistant ▁gives ▁helpful , ▁detailed , ▁and ▁polite ▁answers ▁to ▁the ▁user 's ▁questions . "
    "▁USER : ▁"
).split()
VICUNA_AFTER = "▁ <0x0A> What ▁is ▁happening ▁in ▁this ▁video ? ▁ASSISTANT :".split()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fidelity")
    tokenizer = testing.make_sentencepiece_tokenizer("vicuna")
    ckpt = testing.make_tiny_checkpoint(root / "ckpt", seed=4, tokenizer=tokenizer)
    media = root / "media"
    media.mkdir()
    video = testing.make_video(media / "clip.mp4", num_frames=12, fps=6, width=160, height=120, seed=1)
    return {"ckpt": ckpt, "video": video, "media": media, "root": root, "tokenizer": tokenizer}


@pytest.fixture(scope="module")
def server(files):
    from llava_next_video_hf.vllm_plugin.testing import serve

    args = [
        "--dtype", "float32", "--enforce-eager", "--gpu-memory-utilization", "0.3",
        "--max-model-len", "2048",
        "--media-io-kwargs", json.dumps({"video": {"num_frames": FRAMES}}),
        "--allowed-local-media-path", str(files["media"]),
    ]  # fmt: skip
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with serve(files["ckpt"], *args, env=env, log_path=files["root"] / "server.log") as base:
        yield base


def _ids(tok, pieces: list[str]) -> list[int]:
    ids = tok.convert_tokens_to_ids(pieces)
    assert tok.unk_token_id not in ids, pieces
    return ids


def test_chat_request_prompt_ids_are_the_originals(server, files):
    tok = files["tokenizer"]
    config = LlavaNextVideoAnyResConfig.from_pretrained(files["ckpt"])
    body = {
        "model": str(files["ckpt"]),
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": files["video"].as_uri()}},
                    {"type": "text", "text": "What is happening in this video?"},
                ],
            }
        ],
        "max_tokens": 1,
        "temperature": 0.0,
        "return_token_ids": True,
    }
    resp = requests.post(f"{server}/v1/chat/completions", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    n = config.num_video_tokens(FRAMES)
    expected = _ids(tok, VICUNA_BEFORE) + [config.video_token_id] * n + _ids(tok, VICUNA_AFTER)
    assert out["prompt_token_ids"] == expected
    assert out["usage"]["prompt_tokens"] == len(expected)


def test_raw_prompt_ids_are_the_originals(server, files):
    """A raw prompt (no chat template) through vLLM's tokenizer: BOS from the tokenizer, "▁" after the
    media token."""
    tok = files["tokenizer"]
    body = {"model": str(files["ckpt"]), "prompt": "USER: <video>\nWhat is happening? ASSISTANT:"}
    resp = requests.post(f"{server}/tokenize", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    expected = _ids(tok, "<s> ▁USER : ▁ <video> ▁ <0x0A> What ▁is ▁happening ? ▁ASSISTANT :".split())
    assert resp.json()["tokens"] == expected


def test_vllm_tokenizer_hook_without_an_engine():
    """The tokenizer vLLM's renderer holds (wrapped by vLLM's own caching proxy), called the way the
    renderer calls it: a raw prompt (``tokenizer(text, truncation=..., max_length=...,
    add_special_tokens=True)``) and a chat request (``apply_chat_template(tokenize=True)``)."""
    import pickle

    from vllm.tokenizers.hf import get_cached_tokenizer, maybe_make_thread_pool

    from llava_next_video_hf.vllm_plugin.processing import use_original_tokenization

    tok = get_cached_tokenizer(testing.make_sentencepiece_tokenizer("vicuna"))
    use_original_tokenization(tok, ["<image>", "<video>"])
    use_original_tokenization(tok, ["<image>", "<video>"])  # idempotent
    # vLLM's renderer then routes calls to deep copies of it (its thread pool), and pickles it
    tok = maybe_make_thread_pool(tok, 2)
    tok = pickle.loads(pickle.dumps(tok))
    raw = tok("USER: <video>\nWhat? ASSISTANT:", truncation=True, max_length=100, add_special_tokens=True)
    assert raw["input_ids"] == _ids(tok, "<s> ▁USER : ▁ <video> ▁ <0x0A> What ? ▁ASSISTANT :".split())
    assert tok.encode("<video>\nWhat", add_special_tokens=True) == _ids(
        tok, "<s> <video> ▁ <0x0A> What".split()
    )
    messages = [
        {
            "role": "user",
            "content": [{"type": "video"}, {"type": "text", "text": "What is happening in this video?"}],
        }
    ]
    chat = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert chat == _ids(tok, VICUNA_BEFORE) + [tok.video_token_id] + _ids(tok, VICUNA_AFTER)
    # texts without a media placeholder are the tokenizer's own business
    assert tok("What is happening?")["input_ids"] == _ids(tok, "<s> ▁What ▁is ▁happening ?".split())
    # vLLM's length guard: max_length = max_input_tokens + 1, truncation on the tokenizer's side
    assert len(tok("USER: <video>\nWhat? ASSISTANT:", truncation=True, max_length=5)["input_ids"]) == 5
