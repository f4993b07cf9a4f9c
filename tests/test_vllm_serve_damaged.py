"""``vllm serve`` with damaged media: every bad video is a 400, never a 500, and a decoder that dies
costs its own request only (issue 24).

One server (decoding in 2 worker processes, ``LLAVA_NEXT_VIDEO_DECODE_WORKERS=2``) for the module:

* the files that escaped as HTTP 500 ``AttributeError`` (a damaged stream header: no codec context)
  and a cut Matroska clip are 400s naming the problem;
* a few hundred seeded mutants (``testing.fuzz``) sent as data URLs: each a 200 or a 400; the server
  stays healthy and answers a good clip as it did before;
* the decoding workers killed while a request is being decoded: that request is a 400 naming the
  crash, the next one is answered.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from llava_next_video_hf import testing
from llava_next_video_hf.testing import fuzz
from llava_next_video_hf.video_io.isolated import WORKER_NAME
from llava_next_video_hf.vllm_plugin.testing import data_url

pytestmark = pytest.mark.vllm

MUTANTS = 300
QUESTION = {"type": "text", "text": "What is happening in this video?"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-damaged")
    ckpt = testing.make_tiny_checkpoint(root / "ckpt", seed=2)
    clip = testing.make_video_bytes(num_frames=30, fps=10, width=160, height=120, seed=3)
    return {"ckpt": ckpt, "clip": clip, "root": root}


@pytest.fixture(scope="module")
def server(files):
    from llava_next_video_hf.vllm_plugin.testing import serve

    args = ["--dtype", "float32", "--enforce-eager", "--gpu-memory-utilization", "0.3"]
    env = {
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        "LLAVA_NEXT_VIDEO_DECODE_WORKERS": "2",
        "LLAVA_NEXT_VIDEO_DECODE_DEADLINE_S": "60",
    }
    with serve(files["ckpt"], *args, env=env, log_path=files["root"] / "server.log") as base:
        yield base


def chat(base: str, files: dict, data: bytes, mime: str = "video/mp4") -> requests.Response:
    body = {
        "model": str(files["ckpt"]),
        "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": data_url(data, mime)}}, QUESTION]}],
        "max_tokens": 2,
        "temperature": 0.0,
        "return_token_ids": True,
    }  # fmt: skip
    return requests.post(f"{base}/v1/chat/completions", json=body, timeout=300)


def _answer(resp: requests.Response) -> tuple[list[int], list[int]]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return body["prompt_token_ids"], body["choices"][0]["token_ids"]


def _decode_workers(base: str) -> list:
    import psutil

    port = int(base.rsplit(":", 1)[1])
    (listener,) = {
        c.pid
        for c in psutil.net_connections("tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid
    }
    found = []
    for p in psutil.Process(listener).children(recursive=True):
        try:
            if p.name() == WORKER_NAME:
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


def test_damaged_headers_and_cut_files_are_400(server, files):
    clip = files["clip"]
    mkv = testing.make_video_bytes(
        num_frames=300, fps=30, width=160, height=120, seed=3, container_format="matroska"
    )
    cases = [
        (clip.replace(b"avc1", b"zzzz"), "video/mp4", "the video stream has no decoder"),
        (mkv.replace(b"V_MPEG4/ISO/AVC", b"V_XXXXX/XXX/XXX"), "video/x-matroska", "no decoder"),
        (mkv[: len(mkv) // 10], "video/x-matroska", "truncated: found"),
    ]
    for data, mime, words in cases:
        resp = chat(server, files, data, mime)
        assert resp.status_code == 400, (words, resp.status_code, resp.text[:500])
        assert words in resp.json()["error"]["message"], resp.text[:500]


def test_mutants_as_data_urls_are_200_or_400_and_the_server_stays_correct(server, files):
    expected = _answer(chat(server, files, files["clip"]))
    clips = fuzz.make_clips(fuzz.FAST_KINDS, seed=7)
    rng = random.Random(2024)
    mutants = []
    for _ in range(MUTANTS):
        kind = rng.choice(sorted(clips))
        mutants.append((kind, *fuzz.mutate(clips[kind], rng)))
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda m: chat(server, files, m[2]), mutants))
    codes = Counter(r.status_code for r in responses)
    print(
        f"{MUTANTS} mutants through vllm serve in {time.monotonic() - t0:.1f} s: status codes {dict(codes)}"
    )
    bad = [(k, m, r.status_code, r.text[:300]) for (k, m, _), r in zip(mutants, responses, strict=True)
           if r.status_code not in (200, 400)]  # fmt: skip
    assert not bad, bad
    assert codes[200] > 0 and codes[400] > 0
    assert requests.get(f"{server}/health", timeout=10).status_code == 200
    assert _answer(chat(server, files, files["clip"])) == expected


def test_a_decoder_killed_mid_request_costs_that_request_only(server, files):
    expected = _answer(chat(server, files, files["clip"]))
    assert len(_decode_workers(server)) == 2
    # One keyframe for 600 frames at 640x360: reaching the last frame means decoding all of them.
    slow = testing.make_video_bytes(num_frames=600, fps=30, width=640, height=360, seed=4, gop=600)
    result: dict = {}

    def request() -> None:
        result["resp"] = chat(server, files, slow)

    thread = threading.Thread(target=request)
    thread.start()
    killed = 0
    while thread.is_alive():  # kill every decoding worker until the request is answered
        for proc in _decode_workers(server):
            try:
                proc.kill()
                killed += 1
            except Exception:  # noqa: BLE001 - it may have gone already
                pass
        time.sleep(0.05)
    thread.join()
    resp = result["resp"]
    assert killed > 0
    assert resp.status_code == 400, resp.text[:500]
    # "the decoder crashed (killed by SIGKILL)", or "a decoding worker did not start (killed by
    # SIGKILL)" when the kill lands while a replacement starts
    assert "(killed by SIGKILL)" in resp.json()["error"]["message"], resp.text[:500]
    assert requests.get(f"{server}/health", timeout=10).status_code == 200
    assert _answer(chat(server, files, files["clip"])) == expected
    assert _answer(chat(server, files, slow))[0]  # the slow clip itself decodes once left alone
