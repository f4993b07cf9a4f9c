"""The web app driven through ``gradio_client``: the demo clip gets the shipped model's answer, a second
question neither decodes nor encodes the video again, bad input is a message, sessions are separate."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402

from llava_next_video_hf.app import backend as app_backend  # noqa: E402
from llava_next_video_hf.app import launch, make_backend  # noqa: E402
from llava_next_video_hf.testing import tasks  # noqa: E402
from llava_next_video_hf.video_io import load_video  # noqa: E402

NO_IMAGES = None


@pytest.fixture(scope="module")
def demo_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("app") / "clip.mp4"
    question, expected = tasks.make_demo_clip(path)  # what `llava-next-video demo` asks and expects
    return path, question, expected


@pytest.fixture(scope="module")
def app():
    backend = make_backend()  # the embedded tiny checkpoint
    demo = launch(backend, port=None, block=False)
    assert demo.server_name == "127.0.0.1"  # loopback unless told otherwise
    yield backend, demo.local_url
    demo.close()


@pytest.fixture
def counters(app, monkeypatch):
    """Calls of the real decoder (``video_io.load_video`` as the app calls it) and of the vision encoder."""
    backend, _ = app
    calls = {"decode": 0, "encode": 0}
    real_load, real_encode = app_backend.load_video, backend.model.get_video_features

    def load(*args, **kwargs):
        calls["decode"] += 1
        return real_load(*args, **kwargs)

    def encode(*args, **kwargs):
        calls["encode"] += 1
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(app_backend, "load_video", load)
    monkeypatch.setattr(backend.model, "get_video_features", encode)
    backend.cache._items.clear()
    return calls


def ask(client, video, question, frames=0, fps=0, max_frames=0, url=""):
    chat, gallery, budget, timing, status, _question = client.predict(
        handle_file(str(video)) if video else None, url, NO_IMAGES, frames, fps, max_frames, question,
        api_name="/ask",
    )  # fmt: skip
    return {"chat": chat, "gallery": gallery, "budget": budget, "timing": timing, "status": status}


def _text(message: dict) -> str:
    content = message["content"]
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def test_demo_clip_gets_the_right_answer_and_a_second_question_reuses_the_video(app, demo_clip, counters):
    _, url = app
    path, question, expected = demo_clip
    client = Client(url, verbose=False)
    first = ask(client, path, question)
    assert first["status"] == ""
    assert [m["role"] for m in first["chat"]] == ["user", "assistant"]
    assert tasks.parse_answer(_text(first["chat"][1])) == expected == "yellow"
    assert counters == {"decode": 1, "encode": 1}

    # the thumbnails are the frames load_video samples for the checkpoint's 8 frames, labelled with them
    _, meta = load_video(path, num_frames=8)
    assert [g["caption"] for g in first["gallery"]] == [
        f"#{i}  {t:.3f} s" for i, t in zip(meta.frames_indices, meta.timestamps, strict=True)
    ]
    assert "8 frames = 128 video tokens" in first["budget"] and "256-token context" in first["budget"]

    second = ask(client, path, "Which direction does the object move?")
    assert second["status"] == ""
    assert len(second["chat"]) == 4 and _text(second["chat"][3]).strip()
    assert counters == {"decode": 1, "encode": 1}  # neither decoded nor encoded again
    assert "answer 1:" in second["timing"] and "answer 2:" in second["timing"]
    assert "not decoded or encoded again" in second["timing"]

    other = ask(client, path, question, frames=4)  # other sampling options: another cache entry
    assert counters == {"decode": 2, "encode": 2} and len(other["chat"]) == 2  # and a new conversation


def test_corrupt_upload_is_a_message_and_the_app_keeps_working(app, demo_clip, tmp_path):
    _, url = app
    path, question, expected = demo_clip
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 500)
    client = Client(url, verbose=False)
    out = ask(client, bad, question)
    assert out["status"].startswith("**error:**") and "broken.mp4" in out["status"]
    assert out["chat"] == []
    good = ask(client, path, question)
    assert tasks.parse_answer(_text(good["chat"][1])) == expected


def test_too_many_frames_says_what_would_fit(app, demo_clip):
    _, url = app
    path, question, _ = demo_clip
    out = ask(Client(url, verbose=False), path, question, frames=16)
    prompt = int(re.search(r"prompt (\d+) tokens of a 256-token context", out["status"]).group(1))
    text = prompt - 16 * 16  # 16 tokens a frame (24x24 patches pooled at stride 6)
    fit = (256 - text) // 16
    assert "does NOT fit" in out["status"] and f"at most {fit} frames" in out["status"]
    assert out["chat"] == [] and len(out["gallery"]) == 16  # the frames are still shown


def test_files_of_this_machine_only_under_an_allowed_folder(app, demo_clip):
    _, url = app
    path, question, _ = demo_clip
    out = ask(Client(url, verbose=False), None, question, url=str(path))
    assert "reading files from this machine is off" in out["status"]


def test_two_sessions_keep_their_own_chat(app, demo_clip):
    _, url = app
    path, question, _ = demo_clip
    a, b = Client(url, verbose=False), Client(url, verbose=False)
    ask(a, path, question)
    follow_up = "Which direction does the object move?"
    jobs = [  # at the same time: the queue runs them one after the other, each on its own session
        c.submit(handle_file(str(path)), "", NO_IMAGES, 0, 0, 0, follow_up, api_name="/ask") for c in (b, a)
    ]
    chat_b, chat_a = (job.result()[0] for job in jobs)
    assert len(chat_b) == 2 and len(chat_a) == 4
    assert _text(chat_a[0]) == question and _text(chat_b[0]) == follow_up


def test_an_unexpected_failure_is_a_message_too(app, demo_clip, monkeypatch):
    backend, url = app
    path, question, expected = demo_clip

    def broken(*args, **kwargs):
        raise RuntimeError("something nobody planned for")

    client = Client(url, verbose=False)
    monkeypatch.setattr(backend, "answer", broken)
    out = ask(client, path, question)
    assert out["status"] == "**error:** something nobody planned for" and out["chat"] == []
    monkeypatch.undo()
    assert tasks.parse_answer(_text(ask(client, path, question)["chat"][1])) == expected


def test_binds_loopback_by_default():
    import inspect

    from llava_next_video_hf.app import launch as launch_fn
    from llava_next_video_hf.cli import build_parser

    assert inspect.signature(launch_fn).parameters["host"].default == "127.0.0.1"
    args = build_parser("app").parse_args(["app"])
    assert args.host == "127.0.0.1" and args.allow_path == [] and args.checkpoint is None


def test_cached_video_answers_as_the_uncached_model_does(app, demo_clip):
    """The second turn from the cache (features given to generate) = transformers encoding the pixels itself."""
    import torch

    backend, url = app
    path, question, _ = demo_clip
    follow_up = "Which direction does the object move?"
    out = ask(Client(url, verbose=False), path, question)
    first = _text(out["chat"][1])
    ask_again = ask(Client(url, verbose=False), path, question)  # a fresh session: same first answer
    assert _text(ask_again["chat"][1]) == first
    client = Client(url, verbose=False)
    ask(client, path, question)
    second = _text(ask(client, path, follow_up)["chat"][3])

    messages = [
        {
            "role": "user",
            "content": [{"type": "video", "path": str(path)}, {"type": "text", "text": question}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": first}]},
        {"role": "user", "content": [{"type": "text", "text": follow_up}]},
    ]
    inputs = backend.processor.apply_chat_template(
        messages,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        num_frames=8,
    )
    with torch.inference_mode():
        ids = backend.model.generate(**inputs, max_new_tokens=64, do_sample=False)
    expected = backend.processor.decode(
        ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
    ).strip()
    assert second.strip() == expected


def test_uploads_follow_video_ios_byte_and_pixel_limits(app, demo_clip, monkeypatch):
    from llava_next_video_hf.video_io import frames as vio_frames

    _, url = app
    path, question, _ = demo_clip
    client = Client(url, verbose=False)
    monkeypatch.setattr(app_backend, "MAX_SOURCE_BYTES", 1000)
    out = ask(client, path, question)
    assert "over the limit of 1000 bytes" in out["status"] and out["chat"] == []
    monkeypatch.undo()
    monkeypatch.setattr(vio_frames, "MAX_PIXELS", 100 * 100)  # the demo clip is 112x112
    out = ask(client, path, question, frames=3)  # frames=3: not in the cache
    assert "exceeds" in out["status"] and "pixel" in out["status"] and out["chat"] == []


def test_paths_are_read_only_under_allowed_folders(demo_clip, tmp_path):
    from llava_next_video_hf.errors import LlavaNextVideoError

    path, _, _ = demo_clip
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    inside = allowed / "clip.mp4"
    inside.write_bytes(path.read_bytes())
    assert app_backend.read_video_bytes(None, str(inside), [allowed]) == path.read_bytes()
    assert app_backend.read_video_bytes(None, f"file://{inside}", [allowed]) == path.read_bytes()
    (allowed / "link.mp4").symlink_to(path)  # a link out of the folder is outside it
    for outside in (str(path), str(allowed / ".." / path.name), str(allowed / "link.mp4")):
        with pytest.raises(LlavaNextVideoError, match="not under an allowed folder"):
            app_backend.read_video_bytes(None, outside, [allowed])
    with pytest.raises(LlavaNextVideoError, match="reading files from this machine is off"):
        app_backend.read_video_bytes(None, str(inside), [])


def test_cache_is_bounded():
    import numpy as np

    cache = app_backend.VideoCache(max_entries=2, max_bytes=10_000)
    frames = np.zeros((1, 10, 10, 3), np.uint8)  # 300 bytes
    for key in "abc":
        cache.put(app_backend.PreparedVideo(key, b"", frames, None))
    assert len(cache) == 2 and cache.get("a") is None and cache.get("c") is not None
    cache.put(app_backend.PreparedVideo("big", b"x" * 20_000, frames, None))
    assert len(cache) == 1 and cache.get("big") is not None  # over the bytes: the others went first
