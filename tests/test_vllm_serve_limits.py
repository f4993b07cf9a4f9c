"""``vllm serve`` decodes our model's videos with ``video_io.load_video`` and stays bounded and healthy.

One server (no ``--media-io-kwargs``: the checkpoint's frame defaults apply) for the module:

* a valid 1-frame clip is answered; default and ``fps`` sampling give the frames ``generate`` uses
  (answers equal our transformers model fed the file through our processor);
* a frame flood (``num_frames=100000``) is a 400 naming the limit, decided before decoding: the server's
  resident memory (API server + engine processes) grows by less than ``RSS_BOUND`` over the flood;
* missing local files, unreadable images and our processor's refusals are 400s, not 500s;
* 32 concurrent mixed good/bad requests: every good one gets the single-request answer, every bad one
  a 400, and the server stays healthy.
"""

from __future__ import annotations

import base64
import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from llava_next_video_hf import rope, testing
from llava_next_video_hf.modeling import LlavaNextVideoAnyResForConditionalGeneration

pytestmark = pytest.mark.vllm

MAX_TOKENS = 6
RSS_BOUND = 300 * 1024**2  # bytes the server may grow by over a 16-request frame flood
QUESTION = {"type": "text", "text": "What is happening in this video?"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-limits")
    ckpt = testing.make_tiny_checkpoint(root / "ckpt", seed=2)
    media = root / "media"
    media.mkdir()
    clip = testing.make_video(media / "clip.mp4", num_frames=30, fps=10, width=160, height=120, seed=3)
    one = testing.make_video(media / "one.mp4", num_frames=1, fps=10, width=160, height=120, seed=5)
    good = io.BytesIO()
    Image.fromarray((np.random.RandomState(4).rand(120, 200, 3) * 255).astype(np.uint8)).save(good, "PNG")
    return {"ckpt": ckpt, "media": media, "clip": clip, "one": one, "png": good.getvalue(), "root": root}


@pytest.fixture(scope="module")
def server(files):
    from llava_next_video_hf.vllm_plugin.testing import serve

    args = [
        "--dtype", "float32", "--enforce-eager", "--gpu-memory-utilization", "0.3",
        "--allowed-local-media-path", str(files["media"]), "--trust-request-mm-kwargs",
    ]  # fmt: skip
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with serve(files["ckpt"], *args, env=env, log_path=files["root"] / "server.log") as base:
        yield base


@pytest.fixture(scope="module")
def config(files):
    return LlavaNextVideoAnyResForConditionalGeneration.config_class.from_pretrained(files["ckpt"])


@pytest.fixture(scope="module")
def reference(files):
    """Our transformers model, greedy, on the server's prompt ids and the media through our processor."""
    from llava_next_video_hf.processing import LlavaNextVideoAnyResProcessor, register_auto_classes

    register_auto_classes()
    processor = LlavaNextVideoAnyResProcessor.from_pretrained(files["ckpt"])
    model = LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(files["ckpt"]).eval()

    def run(prompt_ids: list[int], **media) -> list[int]:
        pixels = processor(text=None, return_tensors="pt", **media)
        ids = torch.tensor([prompt_ids])
        with torch.inference_mode():
            out = model.generate(input_ids=ids, **pixels, max_new_tokens=MAX_TOKENS, do_sample=False)
        return out[0, ids.shape[1] :].tolist()

    run.processor = processor
    return run


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _video(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


def _image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def chat(base: str, files: dict, parts: list[dict], **extra) -> requests.Response:
    body = {
        "model": str(files["ckpt"]),
        "messages": [{"role": "user", "content": parts}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "return_token_ids": True,
        **extra,
    }
    return requests.post(f"{base}/v1/chat/completions", json=body, timeout=300)


def _answer(resp: requests.Response) -> tuple[list[int], list[int]]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return body["prompt_token_ids"], body["choices"][0]["token_ids"]


def _server_rss(base: str) -> int:
    """Resident bytes of the server process and its children (engine core, workers)."""
    import psutil

    port = int(base.rsplit(":", 1)[1])
    (listener,) = {
        c.pid
        for c in psutil.net_connections("tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid
    }
    root = psutil.Process(listener)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def test_one_frame_clip_and_default_and_fps_sampling_match_generate(server, files, config, reference):
    prompt, tokens = _answer(chat(server, files, [_video(files["one"].as_uri()), QUESTION]))
    assert prompt.count(config.video_token_id) == config.num_video_tokens(1)
    assert tokens == reference(prompt, videos=[str(files["one"])])

    # no options: the checkpoint's default frames, decoded from the file as `generate` does
    default = reference.processor.video_processor.num_frames
    prompt, tokens = _answer(chat(server, files, [_video(files["clip"].as_uri()), QUESTION]))
    assert prompt.count(config.video_token_id) == config.num_video_tokens(default)
    assert tokens == reference(prompt, videos=[str(files["clip"])])

    # fps: one frame every round(10 / 2) = 5 frames of the 30 -> 6 frames
    data = _data_url(files["clip"].read_bytes(), "video/mp4")
    resp = chat(server, files, [_video(data), QUESTION], media_io_kwargs={"video": {"fps": 2}})
    prompt, tokens = _answer(resp)
    assert prompt.count(config.video_token_id) == config.num_video_tokens(6)
    assert tokens == reference(prompt, videos=[str(files["clip"])], fps=2)


def test_frame_flood_is_refused_before_decoding(server, files, config):
    limit = rope.max_frames_that_fit(config.context_length, 1, **config.video_token_kwargs())
    part = _video(_data_url(files["clip"].read_bytes(), "video/mp4"))
    before = _server_rss(server)
    for _ in range(16):
        resp = chat(server, files, [part, QUESTION], media_io_kwargs={"video": {"num_frames": 100000}})
        assert resp.status_code == 400, resp.text
        assert f"limit of {limit} frames" in resp.json()["error"]["message"]
    grown = _server_rss(server) - before
    print(f"server RSS {before / 2**20:.0f} MiB, grew by {grown / 2**20:.1f} MiB over the flood")
    assert grown < RSS_BOUND
    resp = chat(server, files, [part, QUESTION], media_io_kwargs={"video": {"num_frames": limit}})
    prompt, _ = _answer(resp)
    assert prompt.count(config.video_token_id) == config.num_video_tokens(limit)


def _bad_requests(files) -> list[tuple[list[dict], dict, str]]:
    clip = _video(files["clip"].as_uri())
    truncated_png = files["png"][: len(files["png"]) // 2]
    return [
        ([_video((files["media"] / "missing.mp4").as_uri()), QUESTION], {}, "missing.mp4"),
        ([_image(_data_url(b"\x89PNG\r\n\x1a\n garbage", "image/png")), QUESTION], {}, "image"),
        ([_image(_data_url(truncated_png, "image/png")), QUESTION], {}, "image"),
        ([clip, QUESTION], {"mm_processor_kwargs": {"max_frames": 0}}, "max_frames"),
        ([clip, QUESTION], {"media_io_kwargs": {"video": {"num_frames": 100000}}}, "limit of"),
        ([_video(_data_url(b"\x00\x00\x00\x18ftypmp42" + b"x" * 300, "video/mp4")), QUESTION], {}, "video"),
    ]


def test_client_errors_are_400_not_500(server, files):
    for parts, extra, word in _bad_requests(files):
        resp = chat(server, files, parts, **extra)
        assert resp.status_code == 400, (word, resp.status_code, resp.text)
        assert word in resp.json()["error"]["message"], resp.text


def test_32_concurrent_mixed_requests_leave_the_server_healthy(server, files):
    good = ([_video(files["clip"].as_uri()), QUESTION], {})
    image_good = ([_image(_data_url(files["png"], "image/png")), QUESTION], {})
    expected = {name: _answer(chat(server, files, parts, **extra)) for name, (parts, extra) in
                {"video": good, "image": image_good}.items()}  # fmt: skip
    bad = _bad_requests(files)
    jobs = []
    for i in range(32):
        if i % 2:
            parts, extra, _ = bad[i // 2 % len(bad)]
            jobs.append(("bad", parts, extra))
        else:
            name = "video" if i % 4 == 0 else "image"
            jobs.append((name, *(good if name == "video" else image_good)))
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda job: chat(server, files, job[1], **job[2]), jobs))
    for (name, _, _), resp in zip(jobs, results, strict=True):
        if name == "bad":
            assert resp.status_code == 400, resp.text
        else:
            assert _answer(resp) == expected[name]
    assert requests.get(f"{server}/health", timeout=10).status_code == 200
    assert _answer(chat(server, files, good[0])) == expected["video"]


def test_loader_is_registered_for_our_processor_and_bounds_options_before_decoding(files):
    from vllm.multimodal.video import VIDEO_LOADER_REGISTRY
    from vllm.transformers_utils.processor import get_video_processor_cls_name_from_config

    from llava_next_video_hf.vllm_plugin import register, video_loader

    register()
    register()  # idempotent
    name = get_video_processor_cls_name_from_config(str(files["ckpt"]))
    assert name == "LlavaNextVideoAnyResVideoProcessor"
    assert VIDEO_LOADER_REGISTRY.get_backend_for_video_processor(name) == video_loader.LOADER_NAME

    video_loader.configure(10, "a test limit")
    try:
        # vLLM passes its num_frames default along with a requested fps: fps wins, within the limit
        assert video_loader.sampling_options(num_frames=32, fps=2) == {
            "num_frames": None,
            "fps": 2,
            "max_frames": 10,
        }
        assert video_loader.sampling_options(num_frames=-1) == {
            "num_frames": None,
            "fps": None,
            "max_frames": 10,
        }
        with pytest.raises(ValueError, match="num_frames=11 exceeds this server's limit of 10 frames"):
            video_loader.sampling_options(num_frames=11)
        with pytest.raises(ValueError, match="unsupported option"):
            video_loader.load_video_bytes(b"", frame_recovery=True)
        frames, meta = video_loader.load_video_bytes(files["one"].read_bytes(), num_frames=8)
        assert frames.shape == (1, 120, 160, 3) and meta["frames_indices"] == [0]
    finally:
        video_loader.configure(None)
