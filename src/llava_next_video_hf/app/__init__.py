"""``llava-next-video app [CKPT] [--server URL]``: chat about a video in the browser (extra ``[app]``).

The page shows what the model sees: the sampled frames with their indices and timestamps, the
token budget (video tokens, prompt tokens, context, RoPE factor) and a streamed multi-turn chat;
a second question about the same video reuses its cached encoding (see ``app.backend``).

Engines: the embedded tiny checkpoint (default), any converted checkpoint (transformers), or
``--server URL``: a running ``vllm serve`` / ``llava-next-video serve``.

Safety: the page listens on 127.0.0.1 unless ``--host`` says otherwise; videos come from uploads
(at most ``video_io.MAX_SOURCE_BYTES``) or http(s) URLs (``video_io``'s download limits), and files
of this machine only from folders named with ``--allow-path`` (none by default).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from ..errors import LlavaNextVideoError

__all__ = ["add_cli", "launch", "make_backend"]


def _require_gradio() -> None:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise LlavaNextVideoError("the app needs Gradio: pip install 'llava-next-video-hf[app]'")


def make_backend(
    checkpoint: str | os.PathLike | None = None,
    server: str | None = None,
    dtype: str = "float32",
    server_frames: int = 8,
) -> Any:
    """The engine: ``server`` (an OpenAI-compatible URL; ``server_frames`` asked for when the page
    names no frame option) or a checkpoint (default: the embedded one)."""
    from .backend import HfBackend, ServerBackend

    if server:
        if checkpoint is not None:
            raise LlavaNextVideoError("give a checkpoint or --server URL, not both")
        return ServerBackend(server, default_frames=server_frames)
    if checkpoint is None:
        from ..cli import default_checkpoint

        checkpoint = default_checkpoint()
    return HfBackend(checkpoint, dtype=dtype)


def launch(
    backend: Any,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    allowed_folders: Sequence[str | os.PathLike] = (),
    max_new_tokens: int = 64,
    block: bool = True,
) -> Any:
    """Build the page and serve it (queued: one answer at a time; uploads within the byte limit).

    Returns the launched ``gradio.Blocks`` (``block=False``: at once, serving in a thread; close it
    with ``.close()``).
    """
    _require_gradio()
    from ..video_io import MAX_SOURCE_BYTES
    from .ui import build_app

    for folder in allowed_folders:
        if not os.path.isdir(folder):
            raise LlavaNextVideoError(f"--allow-path {folder}: not a folder")
    demo = build_app(backend, allowed_folders=allowed_folders, max_new_tokens=max_new_tokens)
    demo.queue(default_concurrency_limit=1, max_size=64)
    demo.launch(
        server_name=host,
        server_port=port,
        max_file_size=MAX_SOURCE_BYTES,
        show_error=False,
        prevent_thread_lock=not block,
        quiet=not block,
        share=False,
    )
    return demo


def add_cli(sub: argparse._SubParsersAction) -> None:
    """Add ``app`` to the ``llava-next-video`` parser."""
    from ..cli import COMMANDS

    p = sub.add_parser("app", help=COMMANDS["app"][1])
    p.add_argument("checkpoint", nargs="?", help="checkpoint folder (default: the embedded tiny checkpoint)")
    p.add_argument("--server", help="URL of a running vllm serve / llava-next-video serve (OpenAI API)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0: reachable from other machines)"
    )
    p.add_argument("--port", type=int, help="port (default: Gradio's, 7860 or the next free one)")
    p.add_argument(
        "--allow-path", action="append", default=[], metavar="FOLDER",
        help="let users name video files under FOLDER (repeatable; none by default)",
    )  # fmt: skip
    p.add_argument(
        "--server-frames", type=int, default=8,
        help="with --server: frames to sample when the page names none (the API does not tell the model's)",
    )  # fmt: skip
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length budget (tokens)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.set_defaults(func=_run_app)


def _run_app(args: argparse.Namespace) -> int:
    _require_gradio()
    backend = make_backend(args.checkpoint, args.server, args.dtype, args.server_frames)
    launch(
        backend,
        host=args.host,
        port=args.port,
        allowed_folders=args.allow_path,
        max_new_tokens=args.max_new_tokens,
    )
    return 0
