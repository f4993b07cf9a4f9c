"""The Gradio page: video (upload, URL or allowed path) and images, frame options, thumbnails, the
token budget, a streamed multi-turn chat, and how long each answer took.

Per-browser-session state (the video's cache key, the turns so far, the answer times) lives in a
``gr.State``, so two tabs never see each other's chat; the model and the video cache are shared
(the cache is keyed by content, so sharing it is safe) and the queue runs one answer at a time.
Every failure is caught and shown as a message on the page.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import LlavaNextVideoError
from ..inspection import frame_label, thumbnail
from .backend import Backend, Sampling, Turn, read_video_bytes

log = logging.getLogger(__name__)

#: Thumbnail width in the strip (pixels).
THUMB_WIDTH = 160


def _option(value: Any, kind: type) -> Any:
    """A Number field's value: ``None`` when empty or 0."""
    if value in (None, "") or float(value) == 0:
        return None
    return kind(value)


def new_session() -> dict:
    """A browser session's state."""
    return {"key": None, "history": [], "times": []}


def _chat(history: Sequence[Turn]) -> list[dict]:
    messages = []
    for turn in history:
        messages.append({"role": "user", "content": turn.question})
        messages.append({"role": "assistant", "content": turn.answer})
    return messages


def _timing(times: Sequence[tuple[float, bool, float]]) -> str:
    parts = []
    for i, (seconds, cached, prepare) in enumerate(times, 1):
        how = (
            "video from the cache: not decoded or encoded again"
            if cached
            else f"video decoded and encoded in {prepare:.2f} s"
        )
        parts.append(f"answer {i}: **{seconds:.2f} s** ({how})")
    return " · ".join(parts)


_THUMBS = {"folder": None}


def thumbnail_files(video: Any) -> list[str]:
    """PNG files of the video's thumbnails, written once per prepared video (the page fetches them
    while answers stream; files that never change under it)."""
    import atexit
    import shutil
    import tempfile

    if _THUMBS["folder"] is None:
        _THUMBS["folder"] = tempfile.mkdtemp(prefix="llava-next-video-app-")
        atexit.register(shutil.rmtree, _THUMBS["folder"], True)
    folder = os.path.join(_THUMBS["folder"], video.key.replace(":", "_"))
    paths = [os.path.join(folder, f"{i:05d}.png") for i in range(len(video.frames))]
    if not all(os.path.exists(p) for p in paths):
        os.makedirs(folder, exist_ok=True)
        for frame, path in zip(video.frames, paths, strict=True):
            thumbnail(frame, THUMB_WIDTH).save(path + ".part", format="PNG")
            os.replace(path + ".part", path)
    return paths


def _load_images(paths: Sequence[Any] | None) -> list[Any]:
    from ..image_processing import load_image_checked

    return [load_image_checked(getattr(p, "name", p)) for p in (paths or [])]


def build_app(
    backend: Backend,
    *,
    allowed_folders: Sequence[str | os.PathLike] = (),
    max_new_tokens: int = 64,
    title: str = "LLaVA-NeXT-Video",
) -> Any:
    """The Gradio ``Blocks`` for ``backend`` (not launched; see ``app.launch``)."""
    import gradio as gr

    def ask(
        video_file: Any,
        video_url: str,
        image_files: Any,
        frames: Any,
        fps: Any,
        max_frames: Any,
        question: str,
        state: dict | None,
    ) -> Iterator[tuple]:
        state = state or new_session()
        gallery = budget_line = gr.skip()
        try:
            question = (question or "").strip()
            if not question:
                raise LlavaNextVideoError("type a question first")
            sampling = Sampling(_option(frames, int), _option(fps, float), _option(max_frames, int)).check()
            upload = getattr(video_file, "name", video_file)
            data = read_video_bytes(upload, video_url, allowed_folders)
            images = _load_images(image_files)
            name = os.path.basename(upload) if upload else (video_url or "").strip()
            video, cached = backend.prepare(data, sampling, name)
            if video.key != state["key"]:  # another video (or other frames): a new conversation
                state = {**new_session(), "key": video.key}
            history = list(state["history"])
            meta = video.metadata
            times = list(meta.timestamps) or [None] * len(video.frames)
            gallery = list(zip(thumbnail_files(video), (
                frame_label(index, t) for index, t in zip(meta.frames_indices, times, strict=True)
            ), strict=True))  # fmt: skip
            budget = backend.budget(video, history, question, images)
            if budget is not None:
                budget_line = budget.summary()
                if not budget.fits:
                    raise LlavaNextVideoError(budget_line)
            else:
                budget_line = f"{len(video.frames)} frames; tokens counted by the server"
            turn = Turn(question)
            start = time.perf_counter()

            def shown(status: str) -> tuple:
                times = _timing(state["times"])
                return (_chat([*history, turn]), gallery, budget_line, times, status, state, "")

            yield shown("answering...")
            for text in backend.answer(video, history, question, images, max_new_tokens):
                turn.answer = text
                yield shown("answering...")
            seconds = time.perf_counter() - start + (0.0 if cached else video.seconds)
            usage = getattr(backend, "last_usage", None)
            if usage and budget is None:  # the server's count
                budget_line += f"; prompt {usage.get('prompt_tokens')} tokens"
                context = getattr(backend, "context_length", None)
                budget_line += f" of a {context}-token context" if context else ""
            times = [*state["times"], (seconds, cached, video.seconds)]
            state = {**state, "history": [*history, turn], "times": times}
            yield (_chat(state["history"]), gallery, budget_line, _timing(times), "", state, "")
        except Exception as err:  # every failure is a message; the app keeps running
            if not isinstance(err, LlavaNextVideoError | ValueError | OSError):
                log.exception("the app failed to answer")
            chat, times = _chat(state["history"]), _timing(state["times"])
            yield (chat, gallery, budget_line, times, f"**error:** {err}", state, question)

    def clear(state: dict | None) -> tuple:
        return [], [], "", "", "", new_session()

    source = getattr(backend, "checkpoint", None) or getattr(backend, "url", "")
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(
            f"## {title}\nengine: {backend.name} · `{os.path.basename(str(source).rstrip('/')) or source}`"
        )
        state = gr.State(new_session())
        gallery = gr.Gallery(
            label="Sampled frames (index, time)", columns=8, rows=1, height=170, object_fit="contain",
            elem_id="thumbnails", allow_preview=False,
        )  # fmt: skip
        budget = gr.Markdown(elem_id="budget")
        with gr.Row():
            with gr.Column(scale=1):
                video_file = gr.File(label="Video", file_types=["video"], elem_id="video-upload")
                video_url = gr.Textbox(
                    label="or a video URL" + (" / a path under an allowed folder" if allowed_folders else ""),
                    elem_id="video-url",
                )
                image_files = gr.File(label="Images (optional)", file_count="multiple", file_types=["image"])
                with gr.Row():
                    frames = gr.Number(label="frames (0: the default)", value=0, precision=0, minimum=0)
                    fps = gr.Number(label="fps (0: off)", value=0, minimum=0)
                    max_frames = gr.Number(label="max frames (0: none)", value=0, precision=0, minimum=0)
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="Chat", height=380, elem_id="chat")
                timing = gr.Markdown(elem_id="timing")
                status = gr.Markdown(elem_id="status")
                question = gr.Textbox(label="Question", placeholder="Ask about the video", elem_id="question")
                with gr.Row():
                    send = gr.Button("Ask", variant="primary", elem_id="ask")
                    reset = gr.Button("New chat")
        inputs = [video_file, video_url, image_files, frames, fps, max_frames, question, state]
        outputs = [chatbot, gallery, budget, timing, status, state, question]
        send.click(ask, inputs, outputs, api_name="ask")
        question.submit(ask, inputs, outputs, api_name=False)
        reset.click(clear, [state], [chatbot, gallery, budget, timing, status, state], api_name="clear")
    return demo
