"""Our ``video_io.load_video`` as vLLM's video loader for this model's requests.

vLLM decodes a request's ``video_url`` in the API server with the loader registered for the model's
video processor class (``VIDEO_LOADER_REGISTRY.register(name, video_processor=...)``); without one it
uses OpenCV, whose sampling rule, frame count, rotation and limits differ from ours (a valid 1-frame
clip was refused as "has no frames"). :func:`register_video_loader` maps our
``LlavaNextVideoAnyResVideoProcessor`` to :class:`LlavaNextVideoAnyResVideoLoader`, so a clip gives
the same frames through ``generate``, ``vllm serve`` and ``LLM.chat``.

Frame options come from ``--media-io-kwargs '{"video": {...}}'`` (and, with
``--trust-request-mm-kwargs``, a request's ``media_io_kwargs``): ``num_frames`` (``-1``: every
frame), ``fps`` and ``max_frames``, with ``video_io``'s rules. The server's defaults are the
checkpoint's (its processor's ``num_frames``/``fps``/``max_frames``), set when the model's processor
is built (:func:`configure`). Requests are bounded *before* decoding by the server's frame limit:
the frames whose tokens fit ``max_model_len`` (at least one text token left), lowered by an
operator's ``max_frames`` in ``--media-io-kwargs``. Asking for more is a ``ValueError`` naming the
limit (HTTP 400); bytes and pixels are bounded by ``video_io``'s limits.

Decoding runs in a :class:`~llava_next_video_hf.video_io.DecodePool` (worker processes, started on
the first video), not in the API-server process: a file that makes FFmpeg crash or spin costs its
own request a 400 (``VideoLoadError`` naming the crash or the deadline), the worker is replaced and
the server keeps answering. ``LLAVA_NEXT_VIDEO_DECODE_WORKERS`` sets the number of workers (default:
up to 4, at most the cores; ``0`` decodes in the server's own process, as before), and
``LLAVA_NEXT_VIDEO_DECODE_DEADLINE_S`` the wall time one video may take (default
``video_io.DEFAULT_DECODE_DEADLINE_S``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

#: Name of the loader in vLLM's ``VIDEO_LOADER_REGISTRY``.
LOADER_NAME = "llava_next_video_hf"
#: Our video processor's class name, as written in checkpoints' ``video_processor_type``.
VIDEO_PROCESSOR = "LlavaNextVideoAnyResVideoProcessor"
#: Frame options the loader accepts (``media_io_kwargs["video"]``).
OPTIONS = ("num_frames", "fps", "max_frames")

#: Environment variables: decoding workers (``0``: in-process) and the per-video deadline (s).
WORKERS_ENV = "LLAVA_NEXT_VIDEO_DECODE_WORKERS"
DEADLINE_ENV = "LLAVA_NEXT_VIDEO_DECODE_DEADLINE_S"

_lock = threading.Lock()
_server: dict[str, Any] = {"max_frames": None, "why": None}
_pool: dict[str, Any] = {"pool": None, "pid": None}


def configure(max_frames: int | None, why: str | None = None) -> None:
    """Set this process's frame limit (``None``: none) and the reason quoted in refusals."""
    with _lock:
        _server["max_frames"] = max_frames
        _server["why"] = why


def server_max_frames() -> tuple[int | None, str | None]:
    """The frame limit :func:`configure` set in this process, and why."""
    with _lock:
        return _server["max_frames"], _server["why"]


def _int_option(name: str, value: Any, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"media_io_kwargs video {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def sampling_options(
    num_frames: Any = None, fps: Any = None, max_frames: Any = None
) -> dict[str, int | float | None]:
    """``load_video`` arguments for vLLM's frame options, bounded by the server's frame limit.

    ``fps`` wins over ``num_frames`` (vLLM passes its default ``num_frames=32`` along with an
    ``fps``); ``num_frames=-1`` means every frame (up to the limit).

    Raises:
        ValueError: an option out of range, or more frames asked than the server's limit.
    """
    limit, why = server_max_frames()
    max_frames = _int_option("max_frames", max_frames, 1)
    if fps is not None:
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not np.isfinite(fps) or fps <= 0:
            raise ValueError(f"media_io_kwargs video fps must be a finite number > 0, got {fps!r}")
        num_frames = None
    else:
        num_frames = _int_option("num_frames", num_frames, -1)
        if num_frames == 0:
            raise ValueError("media_io_kwargs video num_frames must be >= 1 (or -1 for every frame), got 0")
        if num_frames == -1:
            num_frames = None
    if limit is not None:
        for name, value in (("num_frames", num_frames), ("max_frames", max_frames)):
            if value is not None and value > limit:
                raise ValueError(
                    f"{name}={value} exceeds this server's limit of {limit} frames per video ({why}); "
                    f"ask for at most {limit}"
                )
        max_frames = limit if max_frames is None else max_frames
    if num_frames is not None and max_frames is not None and num_frames > max_frames:
        raise ValueError(f"num_frames={num_frames} exceeds max_frames={max_frames}")
    return {"num_frames": num_frames, "fps": fps, "max_frames": max_frames}


def _env_number(name: str, kind: type, minimum: float, default: Any) -> Any:
    import os

    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if not value >= minimum:
        raise ValueError(f"{name}={raw!r} must be >= {minimum}")
    return value


def decode_settings() -> tuple[int | None, float]:
    """(workers, deadline in s) from the environment: workers ``0`` means in-process, ``None`` the
    pool's default."""
    from ..video_io import DEFAULT_DECODE_DEADLINE_S

    workers = _env_number(WORKERS_ENV, int, 0, None)
    deadline = _env_number(DEADLINE_ENV, float, 0.001, DEFAULT_DECODE_DEADLINE_S)
    return workers, deadline


def decode_pool() -> Any:
    """This process's :class:`~llava_next_video_hf.video_io.DecodePool` (started on first use), or
    ``None`` when ``LLAVA_NEXT_VIDEO_DECODE_WORKERS=0`` asks for in-process decoding."""
    import atexit
    import os

    from ..video_io import DecodePool

    workers, deadline = decode_settings()
    if workers == 0:
        return None
    with _lock:
        if _pool["pool"] is None or _pool["pid"] != os.getpid():  # a forked child makes its own
            pool = DecodePool(workers=workers, deadline_s=deadline)
            _pool["pool"], _pool["pid"] = pool, os.getpid()
            atexit.register(pool.close)
        return _pool["pool"]


def load_video_bytes(data: bytes, **options: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode ``data`` with ``video_io.load_video`` in the decoding workers (:func:`decode_pool`);
    ``(frames (T, H, W, 3) uint8, vLLM metadata)``.

    Raises:
        ValueError: unknown options, options out of range or over the server's limit, or a video
            ``load_video`` refuses, a decoder crash or the deadline (``VideoLoadError`` is a
            ``ValueError``): vLLM answers 400.
    """
    from ..video_io import load_video

    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"media_io_kwargs video: unsupported option(s) {', '.join(unknown)}; this model's video "
            f"loader takes {', '.join(OPTIONS)}"
        )
    kwargs = sampling_options(**options)
    pool = decode_pool()
    if pool is None:
        frames, meta = load_video(bytes(data), deadline_s=decode_settings()[1], **kwargs)
    else:
        frames, meta = pool.load_video(bytes(data), **kwargs)
    metadata = {
        "total_num_frames": meta.total_num_frames,
        "fps": meta.fps or 0.0,
        "duration": meta.duration or 0.0,
        "video_backend": LOADER_NAME,
        "frames_indices": list(meta.frames_indices),
        "do_sample_frames": False,  # already sampled: the processor uses them as given
    }
    return frames, metadata


def frames_that_fit(max_model_len: int, config: Any) -> int:
    """The most frames of one video whose tokens leave one text token within ``max_model_len``
    (the server's frame limit before an operator lowers it; the dummy video and the encoder CUDA
    graphs use it too)."""
    from ..visual_tokens import max_frames_that_fit

    return max_frames_that_fit(int(max_model_len), 1, **config.video_token_kwargs())


def configure_for_model(model_config: Any, config: Any, video_processor: Any) -> int:
    """Set this server's frame limit and default frame options from the model; returns the limit.

    * Limit: the most frames whose tokens leave one text token within ``max_model_len``, lowered
      by an operator's ``--media-io-kwargs '{"video": {"max_frames": N}}'``.
    * Defaults: without ``num_frames``/``fps`` in ``--media-io-kwargs``, the checkpoint's own
      (its video processor's ``num_frames``, or ``fps`` with ``max_frames``), so a request without
      options gets the frames ``llava-next-video generate`` would use (capped at the limit).
    """
    decode_settings()  # a bad LLAVA_NEXT_VIDEO_DECODE_* value stops the server at start, not each request
    max_len = int(model_config.max_model_len)
    limit = frames_that_fit(max_len, config)
    why = f"frames whose tokens fit max_model_len={max_len}"
    mm = getattr(model_config, "multimodal_config", None)
    io_kwargs = getattr(mm, "media_io_kwargs", None)
    operator = dict(io_kwargs.get("video") or {}) if isinstance(io_kwargs, dict) else {}
    op_max = operator.get("max_frames")
    if isinstance(op_max, int) and not isinstance(op_max, bool) and 1 <= op_max < limit:
        limit, why = op_max, "--media-io-kwargs video max_frames"
    configure(limit, why)
    if isinstance(io_kwargs, dict) and "num_frames" not in operator and "fps" not in operator:
        defaults: dict[str, Any] = {}
        budget = video_processor.max_frames
        if video_processor.fps is not None:
            defaults = {"fps": video_processor.fps, "max_frames": min(budget or limit, limit)}
        else:
            defaults = {"num_frames": min(video_processor.num_frames, budget or limit, limit)}
        io_kwargs["video"] = {**defaults, **operator}
    return limit


_registered = False


def register_video_loader() -> None:
    """Register the loader for our video processor, and make vLLM find that processor's name.

    * ``VIDEO_LOADER_REGISTRY.register(LOADER_NAME, video_processor=VIDEO_PROCESSOR)``.
    * vLLM looks the name up in ``video_preprocessor_config.json``/``preprocessor_config.json``, then
      in transformers' ``model_type -> video processor`` names; our checkpoints keep the processor in
      ``processor_config.json``, so our ``model_type`` is added to those names.
    * A local ``file://`` video that is missing or unreadable, or larger than ``video_io``'s byte limit,
      is a ``ValueError`` (HTTP 400) before it is read, for this loader only.

    Idempotent; imports no model code.
    """
    global _registered
    if _registered:
        return
    from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING_NAMES
    from vllm.multimodal.media.video import VideoMediaIO
    from vllm.multimodal.video import VIDEO_LOADER_REGISTRY, VideoLoader

    from ..configuration import LlavaNextVideoAnyResConfig

    class LlavaNextVideoAnyResVideoLoader(VideoLoader):
        """vLLM video loader decoding with ``llava_next_video_hf.video_io.load_video``."""

        @classmethod
        def load_bytes(cls, data: bytes, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
            return load_video_bytes(data, **kwargs)

    VIDEO_LOADER_REGISTRY.register(LOADER_NAME, video_processor=VIDEO_PROCESSOR)(
        LlavaNextVideoAnyResVideoLoader
    )
    VIDEO_PROCESSOR_MAPPING_NAMES.setdefault(
        LlavaNextVideoAnyResConfig.model_type, {"torchvision": VIDEO_PROCESSOR}
    )

    original = VideoMediaIO.load_file
    if not getattr(original, "_llava_next_video_hf", False):

        def load_file(self: Any, filepath: Path) -> Any:
            if isinstance(self.video_loader, LlavaNextVideoAnyResVideoLoader):
                _check_local_video(Path(filepath))
            return original(self, filepath)

        load_file._llava_next_video_hf = True  # type: ignore[attr-defined]
        VideoMediaIO.load_file = load_file  # type: ignore[method-assign]
    _registered = True


def _check_local_video(path: Path) -> None:
    from ..video_io import MAX_SOURCE_BYTES

    try:
        size = path.stat().st_size
        if not path.is_file():
            raise ValueError(f"video {path.name}: not a file")
        with path.open("rb"):
            pass
    except OSError as err:
        raise ValueError(f"video {path.name}: cannot be read ({err.strerror or err})") from None
    if size > MAX_SOURCE_BYTES:
        raise ValueError(
            f"video {path.name}: {size} bytes is larger than the limit of {MAX_SOURCE_BYTES} bytes "
            "(video_io.MAX_SOURCE_BYTES)"
        )


__all__ = [
    "DEADLINE_ENV",
    "LOADER_NAME",
    "OPTIONS",
    "VIDEO_PROCESSOR",
    "WORKERS_ENV",
    "configure",
    "configure_for_model",
    "decode_pool",
    "decode_settings",
    "load_video_bytes",
    "register_video_loader",
    "sampling_options",
    "server_max_frames",
]
