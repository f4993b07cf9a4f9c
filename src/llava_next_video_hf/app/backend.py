"""The web app's engines and its video cache (no Gradio here; ``app.ui`` draws the page).

* :class:`HfBackend`: a checkpoint through transformers, loaded once with ``hf_engine.load_hf_engine``
  (the ``generate`` command's setup). A video is decoded by ``video_io.load_video``, turned into
  pixels by the checkpoint's processor and encoded by the model's ``get_video_features`` (vision
  tower, pooling, projector, newlines: the features scattered at the ``<video>`` tokens). The
  encoded features are what the cache keeps, with the decoded frames (for the thumbnails and the
  processor's placeholder expansion) and the metadata. Every question then renders the chat so
  far with the processor's template, lets the processor count and expand the tokens, and hands
  the cached features to ``generate`` as ``mm_encoder_outputs`` (transformers' way to pass
  pre-encoded media): neither the decoder nor the vision tower runs again.
* :class:`ServerBackend`: a running ``vllm serve`` / ``llava-next-video serve`` through its OpenAI
  API (streamed chat completions with a ``video_url`` data URL and per-request
  ``media_io_kwargs``; the server needs ``--trust-request-mm-kwargs`` for the frame options). The
  frames are decoded here too, with the same sampling, for the thumbnails; the server caches
  processed media by content itself (vLLM's multimodal processor cache).

:class:`VideoCache` is keyed by the SHA-256 of the video's bytes plus the sampling options and
bounded both in entries and in bytes (least recently used first out).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LlavaNextVideoError, VideoLoadError
from ..inspection import TokenBudget, token_budget
from ..video_io import MAX_SOURCE_BYTES, VideoMetadata, load_video

#: Entries and bytes (frames + features) the video cache keeps at most.
CACHE_ENTRIES = 8
CACHE_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Sampling:
    """Frame options, as ``video_io.load_video`` takes them (at most one of ``num_frames``/``fps``)."""

    num_frames: int | None = None
    fps: float | None = None
    max_frames: int | None = None

    def check(self) -> Sampling:
        """Refuse impossible combinations with a message naming them."""
        if self.num_frames is not None and self.fps is not None:
            raise LlavaNextVideoError("give either frames or fps, not both")
        for name, value in (("frames", self.num_frames), ("max frames", self.max_frames)):
            if value is not None and value < 1:
                raise LlavaNextVideoError(f"{name} must be >= 1, got {value}")
        if self.fps is not None and not (self.fps > 0 and np.isfinite(self.fps)):
            raise LlavaNextVideoError(f"fps must be a number > 0, got {self.fps}")
        return self


@dataclass
class PreparedVideo:
    """A decoded (and, for the transformers engine, encoded) video, as the cache keeps it."""

    key: str
    data: bytes
    frames: np.ndarray
    metadata: VideoMetadata
    sampling: Sampling = field(default_factory=Sampling)
    features: Any = None
    seconds: float = 0.0  # decoding + encoding time when it was prepared

    @property
    def nbytes(self) -> int:
        size = self.frames.nbytes + len(self.data)
        for tensor in getattr(self.features, "pooler_output", None) or ():
            size += tensor.numel() * tensor.element_size()
        return size


class VideoCache:
    """Least-recently-used cache of :class:`PreparedVideo`, bounded in entries and bytes; thread-safe."""

    def __init__(self, max_entries: int = CACHE_ENTRIES, max_bytes: int = CACHE_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, PreparedVideo] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str) -> PreparedVideo | None:
        """The entry of ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, item: PreparedVideo) -> None:
        """Keep ``item``; drop the least recently used entries beyond the bounds (never ``item``)."""
        with self._lock:
            self._items[item.key] = item
            self._items.move_to_end(item.key)
            while len(self._items) > 1 and (
                len(self._items) > self.max_entries or self.total_bytes() > self.max_bytes
            ):
                self._items.popitem(last=False)

    def total_bytes(self) -> int:
        """Bytes the entries hold (frames, video bytes, features)."""
        return sum(item.nbytes for item in self._items.values())

    def __len__(self) -> int:
        return len(self._items)


def cache_key(data: bytes, sampling: Sampling) -> str:
    """SHA-256 of the video's bytes plus the sampling options."""
    digest = hashlib.sha256(data).hexdigest()
    return f"{digest}:{sampling.num_frames}:{sampling.fps}:{sampling.max_frames}"


def read_video_bytes(
    upload: str | os.PathLike | None,
    url: str | None,
    allowed_folders: Sequence[str | os.PathLike] = (),
) -> bytes:
    """The bytes of the video the user gave: an uploaded file, an http(s) URL, or a path under an
    allowed folder (none by default), within ``video_io``'s byte limits."""
    from ..video_io.sources import _download

    url = (url or "").strip()
    if upload:
        return _read_file(Path(upload), str(Path(upload).name))
    if not url:
        raise LlavaNextVideoError("upload a video (or give a URL) first")
    if url.startswith(("http://", "https://")):
        return _download(url)
    path = Path(url[len("file://") :] if url.startswith("file://") else url).expanduser()
    if not allowed_folders:
        raise LlavaNextVideoError(
            f"{url}: reading files from this machine is off; upload the video, give an http(s) URL, "
            "or start the app with --allow-path FOLDER"
        )
    real = path.resolve()
    if not any(real.is_relative_to(Path(folder).resolve()) for folder in allowed_folders):
        raise LlavaNextVideoError(
            f"{url}: not under an allowed folder ({', '.join(map(str, allowed_folders))})"
        )
    return _read_file(real, url)


def _read_file(path: Path, desc: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_SOURCE_BYTES:
            raise VideoLoadError(f"{desc}: {size} bytes is over the limit of {MAX_SOURCE_BYTES} bytes")
        if size == 0:
            raise VideoLoadError(f"{desc}: the file is empty")
        return path.read_bytes()
    except FileNotFoundError:
        raise VideoLoadError(f"{desc}: no such file") from None
    except IsADirectoryError:
        raise VideoLoadError(f"{desc}: is a folder, not a video file") from None


@dataclass
class Turn:
    """One question and its answer."""

    question: str
    answer: str = ""


@dataclass
class Answer:
    """What answering yields while it streams: the text so far, and at the end the timings."""

    text: str
    done: bool = False
    seconds: float = 0.0
    video_from_cache: bool = False
    budget: TokenBudget | None = None
    usage: dict = field(default_factory=dict)


class Backend:
    """What the UI needs from an engine (see :class:`HfBackend`, :class:`ServerBackend`)."""

    name = "?"
    cache: VideoCache

    def default_sampling(self, sampling: Sampling) -> Sampling:
        return sampling

    def prepare(self, data: bytes, sampling: Sampling, name: str = "the video") -> tuple[PreparedVideo, bool]:
        """The prepared video and whether it came from the cache (``name``: for messages)."""
        sampling = self.default_sampling(sampling.check())
        key = cache_key(data, sampling)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, True
        start = time.perf_counter()
        try:
            frames, metadata = load_video(
                data, num_frames=sampling.num_frames, fps=sampling.fps, max_frames=sampling.max_frames
            )
        except VideoLoadError as err:  # name the file the user gave, not "<bytes>"
            raise VideoLoadError(str(err).replace("<bytes>", name, 1)) from None
        item = PreparedVideo(key, data, frames, metadata, sampling)
        self.encode(item)
        item.seconds = time.perf_counter() - start
        self.cache.put(item)
        return item, False

    def encode(self, item: PreparedVideo) -> None:
        """Encode the frames for the model where the engine runs here (transformers)."""

    def budget(
        self, video: PreparedVideo, history: Sequence[Turn], question: str, images: Sequence[Any]
    ) -> TokenBudget | None:
        return None

    def answer(
        self,
        video: PreparedVideo,
        history: Sequence[Turn],
        question: str,
        images: Sequence[Any],
        max_new_tokens: int,
    ) -> Iterator[str]:
        raise NotImplementedError


def chat_messages(history: Sequence[Turn], question: str, num_images: int, video: bool = True) -> list[dict]:
    """The conversation in transformers' chat format: the media in the first user turn."""
    messages: list[dict] = []
    turns = [*history, Turn(question)]
    for i, turn in enumerate(turns):
        content: list[dict] = []
        if i == 0:
            content += [{"type": "image"} for _ in range(num_images)]
            if video:
                content.append({"type": "video"})
        content.append({"type": "text", "text": turn.question})
        messages.append({"role": "user", "content": content})
        if i < len(turns) - 1:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": turn.answer}]})
    return messages


class HfBackend(Backend):
    """A checkpoint through transformers, with encoded videos cached (see the module docstring)."""

    name = "transformers"

    def __init__(
        self, checkpoint: str | os.PathLike, *, dtype: str = "float32", cache: VideoCache | None = None
    ):
        from ..cli import _check_checkpoint
        from ..hf_engine import load_hf_engine
        from ..inspection import load_checkpoint_config

        _check_checkpoint(checkpoint)
        self.checkpoint = str(checkpoint)
        self.config = load_checkpoint_config(checkpoint)
        self.processor, self.model = load_hf_engine(checkpoint, dtype=dtype)
        self.cache = cache or VideoCache()
        self._lock = threading.Lock()  # one generate at a time on the one model
        self._last_inputs: tuple[tuple, Any] | None = None

    def default_sampling(self, sampling: Sampling) -> Sampling:
        if sampling.num_frames is None and sampling.fps is None:
            frames = int(self.config.num_frames)
            if sampling.max_frames is not None:
                frames = min(frames, sampling.max_frames)
            return Sampling(frames, None, sampling.max_frames)
        return sampling

    def encode(self, item: PreparedVideo) -> None:
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        pixels = self.processor(videos=[item.frames], return_tensors="pt")
        with self._lock, torch.inference_mode():
            out = self.model.get_video_features(
                pixel_values_videos=pixels["pixel_values_videos"].to(self.model.dtype),
                video_num_frames=pixels["video_num_frames"],
                return_dict=True,
            )
        item.features = BaseModelOutputWithPooling(pooler_output=tuple(out.pooler_output))

    def _inputs(
        self, video: PreparedVideo, history: Sequence[Turn], question: str, images: Sequence[Any]
    ) -> Any:
        """The processor's inputs for this chat (its template, tokens, placeholder expansion, no
        length check); the last one is kept, so the budget and the answer share one processor call."""
        text = self.processor.apply_chat_template(
            chat_messages(history, question, len(images)), tokenize=False, add_generation_prompt=True
        )
        memo = (video.key, text, tuple(id(image) for image in images))
        if self._last_inputs is not None and self._last_inputs[0] == memo:
            return self._last_inputs[1]
        saved = self.processor.context_length
        self.processor.context_length = None  # the budget says whether it fits
        try:
            inputs = self.processor(
                text=text, videos=[video.frames], images=list(images) or None, return_tensors="pt"
            )
        finally:
            self.processor.context_length = saved
        self._last_inputs = (memo, inputs)
        return inputs

    def budget(
        self, video: PreparedVideo, history: Sequence[Turn], question: str, images: Sequence[Any]
    ) -> TokenBudget:
        ids = self._inputs(video, history, question, images)["input_ids"][0]
        image_tokens = int((ids == self.processor.image_token_id).sum())
        return token_budget(self.config, int(ids.shape[0]), len(video.frames), image_tokens)

    def answer(
        self,
        video: PreparedVideo,
        history: Sequence[Turn],
        question: str,
        images: Sequence[Any],
        max_new_tokens: int,
    ) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        prepared = self._inputs(video, history, question, images)
        self._last_inputs = None  # the budget's call served this answer; never a later one
        skip = ("pixel_values_videos", "video_num_frames")  # encoded already: the cached features go in
        inputs = {k: v for k, v in prepared.items() if k not in skip}
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with self._lock, torch.inference_mode():
                    self.model.generate(
                        **inputs,
                        mm_encoder_outputs={"video": video.features},
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        streamer=streamer,
                    )
            except BaseException as err:  # reported to the UI, never a traceback page
                failure.append(err)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        text = ""
        for piece in streamer:
            text += piece
            yield text
        thread.join()
        if failure:
            raise LlavaNextVideoError(f"generation failed: {failure[0]}") from failure[0]


class ServerBackend(Backend):
    """A running OpenAI-compatible vLLM server (``vllm serve`` / ``llava-next-video serve``)."""

    name = "server"

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        default_frames: int = 8,
        timeout: float = 600.0,
        cache: VideoCache | None = None,
    ):
        import httpx

        self.default_frames = default_frames  # asked for when the page names no frame option

        self.url = url.rstrip("/")
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        self._http = httpx.Client(timeout=timeout)
        self.cache = cache or VideoCache()
        try:
            listing = self._http.get(f"{self.url}/models").json()["data"]
        except Exception as err:
            raise LlavaNextVideoError(f"no OpenAI-compatible server at {self.url}: {err}") from err
        if not listing:
            raise LlavaNextVideoError(f"the server at {self.url} serves no model")
        entry = next((m for m in listing if m["id"] == model), listing[0]) if model else listing[0]
        self.model = entry["id"]
        self.context_length = entry.get("max_model_len")

    def default_sampling(self, sampling: Sampling) -> Sampling:
        if sampling.num_frames is None and sampling.fps is None:  # the API does not tell the model's default
            frames = self.default_frames
            if sampling.max_frames is not None:
                frames = min(frames, sampling.max_frames)
            return Sampling(frames, None, sampling.max_frames)
        return sampling

    def budget(
        self, video: PreparedVideo, history: Sequence[Turn], question: str, images: Sequence[Any]
    ) -> None:
        return None  # counted by the server: the usage it reports is shown after the answer

    def answer(
        self,
        video: PreparedVideo,
        history: Sequence[Turn],
        question: str,
        images: Sequence[Any],
        max_new_tokens: int,
    ) -> Iterator[str]:
        messages = chat_messages(history, question, len(images))
        parts = messages[0]["content"]
        pending = list(images)
        for i, part in enumerate(parts):
            if part["type"] == "image":
                parts[i] = {"type": "image_url", "image_url": {"url": _image_data_url(pending.pop(0))}}
            elif part["type"] == "video":
                encoded = base64.b64encode(video.data).decode()
                parts[i] = {"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{encoded}"}}
        options = (
            ("num_frames", video.sampling.num_frames),
            ("fps", video.sampling.fps),
            ("max_frames", video.sampling.max_frames),
        )
        media = {k: v for k, v in options if v is not None}
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_new_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "media_io_kwargs": {"video": media},
        }
        text = ""
        self.last_usage: dict = {}
        with self._http.stream("POST", f"{self.url}/chat/completions", json=body) as response:
            if response.status_code != 200:
                response.read()
                raise LlavaNextVideoError(
                    f"the server answered {response.status_code}: {_server_error(response.text)}"
                )
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: ") :])
                if chunk.get("usage"):
                    self.last_usage = chunk["usage"]
                for choice in chunk.get("choices") or ():
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        text += piece
                        yield text


def _image_data_url(image: Any) -> str:
    import io

    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _server_error(text: str) -> str:
    try:
        data = json.loads(text)
        return str(data.get("error", {}).get("message") or data.get("message") or text)[:500]
    except (ValueError, AttributeError):
        return text[:500]
