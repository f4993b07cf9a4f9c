"""Helpers to run the vLLM side without (or around) an engine: for tests, benchmarks and debugging.

* :func:`build_model`: the vLLM model class with its weights, in this process (a one-rank
  ``gloo`` group), so the encoder path can be inspected, compiled and compared with transformers.
* :func:`serve`: ``vllm serve <checkpoint>`` as a subprocess on a free local port, torn down on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def build_model(model_path: str | os.PathLike, dtype: str = "float32", **engine_args: Any) -> Iterator[Any]:
    """Yield ``(model, vllm_config)``: our vLLM model with the checkpoint's weights, in this process.

    Builds the config as ``vllm serve`` would (``EngineArgs(model=..., dtype=..., enforce_eager=True)``),
    initialises a one-rank ``gloo`` process group, constructs the model, loads and post-processes the
    weights. The process group is torn down on exit.
    """
    import torch
    from safetensors.torch import load_file
    from vllm.config import set_current_vllm_config
    from vllm.distributed import parallel_state
    from vllm.engine.arg_utils import EngineArgs
    from vllm.model_executor.model_loader.utils import process_weights_after_loading
    from vllm.utils.torch_utils import set_default_torch_dtype

    from . import register
    from .model import LlavaNextVideoAnyResForConditionalGeneration

    register()
    args = {"enforce_eager": True, **engine_args}
    vllm_config = EngineArgs(model=str(model_path), dtype=dtype, **args).create_engine_config()
    model_config = vllm_config.model_config
    try:
        with set_current_vllm_config(vllm_config):
            parallel_state.init_distributed_environment(
                world_size=1,
                rank=0,
                local_rank=0,
                distributed_init_method=f"tcp://127.0.0.1:{free_port()}",
                backend="gloo",
            )
            parallel_state.initialize_model_parallel(1, 1)
            with set_default_torch_dtype(model_config.dtype):
                model = LlavaNextVideoAnyResForConditionalGeneration(vllm_config=vllm_config)
            for shard in sorted(Path(model_path).glob("*.safetensors")):
                model.load_weights(load_file(shard).items())
            process_weights_after_loading(model, model_config, torch.device("cpu"))
            yield model.eval(), vllm_config
    finally:
        parallel_state.destroy_model_parallel()
        parallel_state.destroy_distributed_environment()


def vllm_command() -> list[str]:
    """The ``vllm`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("vllm")
    return [str(script)] if script.exists() else [shutil.which("vllm") or "vllm"]


@contextlib.contextmanager
def serve(
    model_path: str | os.PathLike,
    *args: str,
    port: int | None = None,
    env: dict[str, str] | None = None,
    startup_timeout: float = 300.0,
    log_path: str | os.PathLike | None = None,
    command: list[str] | None = None,
    host: str | None = "127.0.0.1",
    cwd: str | os.PathLike | None = None,
) -> Iterator[str]:
    """Run ``vllm serve model_path *args`` on 127.0.0.1 and yield its base URL once ``/health`` is 200.

    ``command`` replaces ``vllm serve`` (e.g. ``["llava-next-video", "serve"]``); ``host=None`` passes
    no ``--host`` (the command's default); the base URL is always on 127.0.0.1.

    Raises ``RuntimeError`` (with the end of the server log) if the server exits or is not healthy
    within ``startup_timeout`` seconds. On exit the server is terminated; if it has not stopped after
    30 s, its process group (the server and the engine processes it started) is killed.
    """
    port = port or free_port()
    hosting = ["--host", host] if host is not None else []
    cmd = [*(command or [*vllm_command(), "serve"]), str(model_path), *hosting, "--port", str(port), *args]
    log = Path(log_path) if log_path else Path(os.environ.get("TMPDIR", "/tmp")) / f"vllm-serve-{port}.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            cmd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + startup_timeout
            while not _healthy(base):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-4000:]
                    raise RuntimeError(
                        f"vllm serve did not become healthy (exit code {proc.poll()}):\n{tail}"
                    )
                time.sleep(1.0)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the server and the engine processes it started
                proc.wait(timeout=30)


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def data_url(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,...`` for a chat request's ``video_url``/``image_url`` part."""
    import base64

    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


__all__ = ["build_model", "data_url", "free_port", "serve", "vllm_command"]
