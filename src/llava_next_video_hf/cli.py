"""``llava-next-video``: answer questions about videos, and convert, publish and fine-tune checkpoints.

Exit codes: 0 ok, 1 failure (a clear message on stderr), 2 usage error (argparse).
Each subcommand lives next to the code it drives and registers itself through ``add_cli``;
:data:`COMMANDS` lists them, and only the module of the command being run is imported (``--help``
imports none of them, hence neither torch nor transformers).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .arg_types import positive_float, positive_int
from .errors import ContextLengthError, LlavaNextVideoError
from .hf_engine import load_hf_engine

#: The command table: name -> (module whose ``add_cli(subparsers)`` adds it, one-line help for the
#: top-level listing). The module is imported only when its command runs (or ``COMMAND --help``).
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("cli", "answer a question about a video (and/or images)"),
    "demo": ("cli", "the main job on the embedded tiny checkpoint and a synthetic clip"),
    "convert": (
        "convert",
        "convert llava-hf, LLaVA-NeXT image or original lmms-lab checkpoints to this package's format",
    ),
    "export": ("hub_cards", "write a Hub-ready folder: checkpoint + model card + remote code"),
    "publish": ("hub_cards", "check an exported folder and upload it to the Hugging Face Hub"),
    "train": ("train", "fine-tune a checkpoint on video conversations (SFT) or preference pairs (DPO)"),
    "serve": (
        "serve",
        "serve a checkpoint with vLLM's OpenAI-compatible server (our defaults, every vLLM option)",
    ),
    "inspect": (
        "inspection",
        "what loading a video does: frames, timestamps, tokens, context fit, contact sheet",
    ),
    "app": ("app", "the web app: chat about a video in the browser (extra [app], Gradio)"),
    "batch": (
        "batch",
        "answer a prompt about every video of a folder/manifest: pipelined, resumable, on Ray (--ray)",
    ),
}


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help=COMMANDS["generate"][1])
    p.add_argument("model", help="checkpoint folder (or Hub id when online)")
    p.add_argument("--video", help="video path, URL or '-' to read the video's bytes from stdin")
    p.add_argument("--image", action="append", default=[], help="image path (repeatable)")
    p.add_argument("--prompt", required=True, help="the question")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--frames", type=positive_int, help="sample N frames uniformly (default: the checkpoint's)"
    )
    group.add_argument(
        "--fps", type=positive_float, help="sample F frames per second (bounded by --max-frames)"
    )
    p.add_argument(
        "--max-frames",
        type=positive_int,
        help="upper bound on sampled frames; with --rope-factor auto, the frame budget the factor is chosen for",
    )
    p.add_argument(
        "--rope-factor",
        help="linear RoPE factor to load the model with (a number, or 'auto': the paper's rule for "
        "--max-frames/--frames), so more frames fit the context (hf engine; default: the checkpoint's)",
    )
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf", help="transformers or vLLM")
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="answer length budget (tokens)")
    p.add_argument(
        "--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="weights' dtype"
    )
    p.add_argument(
        "--tensor-parallel-size", "-tp", type=positive_int, default=1,
        help="vLLM workers that split every layer (vllm engine)",
    )  # fmt: skip
    p.add_argument(
        "--pipeline-parallel-size", "-pp", type=positive_int, default=1,
        help="vLLM workers that split the stack of layers (vllm engine)",
    )  # fmt: skip
    p.set_defaults(func=_run_generate)


def _messages(prompt: str, video: str | None, images: Sequence[str]) -> list[dict]:
    content: list[dict] = [{"type": "image", "path": path} for path in images]
    if video is not None:
        content.append({"type": "video", "path": video})
    content.append({"type": "text", "text": prompt})
    return [{"role": "user", "content": content}]


def generate(
    model: str | os.PathLike,
    prompt: str,
    *,
    video: str | None = None,
    images: Sequence[str] = (),
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    engine: str = "hf",
    max_new_tokens: int = 64,
    dtype: str = "float32",
    stream: bool = False,
    rope_factor: float | str | None = None,
    tensor_parallel_size: int = 1,
    pipeline_parallel_size: int = 1,
) -> str:
    """Answer ``prompt`` about ``video``/``images`` with ``model`` through transformers or vLLM.

    With ``stream=True`` (hf engine) tokens are printed to stdout as they are generated.
    ``rope_factor`` (hf engine): load the model with this linear RoPE factor (``"auto"``: the
    paper's rule for ``max_frames``, else ``num_frames``), and check prompts against that context.
    ``tensor_parallel_size`` / ``pipeline_parallel_size`` (vllm engine): workers for vLLM.
    """
    if video is None and not images:
        raise LlavaNextVideoError("give a --video or at least one --image to ask about")
    rope_factor = _parse_rope_factor(rope_factor)
    if engine == "vllm" and rope_factor is not None:
        raise LlavaNextVideoError(
            "--rope-factor works with --engine hf; for vLLM write the factor into the checkpoint: "
            "llava-next-video convert CKPT OUT --rope-factor F (or --max-frames N --rope-factor auto)"
        )
    if engine != "vllm" and (tensor_parallel_size > 1 or pipeline_parallel_size > 1):
        raise LlavaNextVideoError(
            "--tensor-parallel-size/--pipeline-parallel-size need --engine vllm "
            "(the transformers engine runs in one process)"
        )
    _check_checkpoint(model)
    if images:
        from .image_processing import load_image_checked

        for path in images:  # refused before a model is loaded
            load_image_checked(path)
    if engine == "vllm":
        from .vllm_plugin.offline import generate_one

        return generate_one(
            str(model),
            prompt,
            video=video,
            images=list(images),
            num_frames=num_frames,
            fps=fps,
            max_frames=max_frames,
            max_new_tokens=max_new_tokens,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            pipeline_parallel_size=pipeline_parallel_size,
        )
    import torch
    from transformers import TextStreamer

    processor, net = load_hf_engine(
        model, dtype=dtype, rope_factor=rope_factor, max_frames=max_frames or num_frames
    )
    frames = dict(num_frames=num_frames, fps=fps, max_frames=max_frames)
    frame_kwargs = {k: v for k, v in frames.items() if v is not None}
    inputs = processor.apply_chat_template(
        _messages(prompt, video, images),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        **frame_kwargs,
    )
    streamer = (
        TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None
    )
    with torch.inference_mode():
        out = net.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer)
    return processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _check_checkpoint(model: str | os.PathLike) -> None:
    """Refuse a MODEL that is neither a checkpoint folder nor (online) a Hub id, before loading anything."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LlavaNextVideoError(f"{model} is not a checkpoint folder (it has no config.json)")
        return
    if path.exists():
        raise LlavaNextVideoError(f"{model} is a file; MODEL must be a checkpoint folder or a Hub id")
    from huggingface_hub import constants

    text = str(model)
    hub_id = not text.startswith((".", "/", "~")) and text.count("/") <= 1 and "\\" not in text
    if not hub_id:
        raise LlavaNextVideoError(f"checkpoint folder {model} does not exist")
    if constants.HF_HUB_OFFLINE:
        raise LlavaNextVideoError(
            f"{model} is not a local folder and the Hub is offline (HF_HUB_OFFLINE=1): no checkpoint to load"
        )


def _stdin_video(folder: str) -> str:
    """The video piped on stdin, saved to a file in ``folder`` (both engines decode it from there)."""
    from .video_io import MAX_SOURCE_BYTES

    if sys.stdin is None or sys.stdin.isatty():
        raise LlavaNextVideoError("--video - reads the video from stdin, but nothing is piped in")
    data = sys.stdin.buffer.read(MAX_SOURCE_BYTES + 1)
    if not data:
        raise LlavaNextVideoError("--video -: stdin is empty (pipe a video file into the command)")
    if len(data) > MAX_SOURCE_BYTES:
        raise LlavaNextVideoError(f"--video -: more than the limit of {MAX_SOURCE_BYTES} bytes on stdin")
    path = Path(folder) / "stdin-video"
    path.write_bytes(data)
    return str(path)


def _parse_rope_factor(value: float | str | None) -> float | str | None:
    """``None``, ``"auto"`` or a number >= 1 (from the command line: a string; whole numbers as int)."""
    if value is None:
        return None
    from .rope import parse_rope_factor

    try:
        factor = parse_rope_factor(value)
    except ValueError as err:
        raise LlavaNextVideoError(f"--rope-factor must be {err}") from None
    return int(factor) if isinstance(factor, float) and factor.is_integer() else factor


def _run_generate(args: argparse.Namespace) -> int:
    if args.video == "-":
        with tempfile.TemporaryDirectory(prefix="llava-next-video-") as folder:
            args.video = _stdin_video(folder)
            return _run_generate(args)
    try:
        return _generate_and_print(args)
    except ContextLengthError as err:
        raise ContextLengthError(
            f"{err} From the command line: --frames N / --max-frames N for fewer frames, or "
            "--rope-factor F (or --rope-factor auto with --max-frames N) for a longer context."
        ) from err


def _generate_and_print(args: argparse.Namespace) -> int:
    answer = generate(
        args.model,
        args.prompt,
        video=args.video,
        images=args.image,
        num_frames=args.frames,
        fps=args.fps,
        max_frames=args.max_frames,
        engine=args.engine,
        max_new_tokens=args.max_new_tokens,
        dtype=args.dtype,
        stream=args.engine == "hf",
        rope_factor=args.rope_factor,
        tensor_parallel_size=args.tensor_parallel_size,
        pipeline_parallel_size=args.pipeline_parallel_size,
    )
    if args.engine != "hf":
        print(answer)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help=COMMANDS["demo"][1])
    p.add_argument("--engine", choices=("hf", "vllm", "both"), default="both")
    p.set_defaults(func=_run_demo)


def default_checkpoint() -> Path:
    """The embedded tiny checkpoint shipped with the package (trained on ``tasks``' synthetic video QA)."""
    return Path(__file__).parent / "assets" / "tiny-video-qa"


def _quiet_libraries() -> None:
    """Keep the demo's output to the answers: no weight-loading bars, no engine logs."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _run_demo(args: argparse.Namespace) -> int:
    from .testing import tasks

    _quiet_libraries()
    ckpt = default_checkpoint()
    clip = Path(tempfile.gettempdir()) / "llava_next_video_hf-demo" / "clip.mp4"
    clip.parent.mkdir(parents=True, exist_ok=True)
    question, expected = tasks.make_demo_clip(clip)
    print(f"checkpoint: {ckpt}\nvideo:      {clip}\nquestion:   {question}")
    engines = ["hf", "vllm"] if args.engine == "both" else [args.engine]
    answers = {}
    for engine in engines:
        if engine == "vllm" and importlib.util.find_spec("vllm") is None:
            print("vllm: not installed (pip install 'llava-next-video-hf[vllm]'); skipped")
            continue
        if engine == "hf":  # streams its tokens
            print("[hf] answer: ", end="", flush=True)
            answers[engine] = generate(ckpt, question, video=str(clip), engine=engine, stream=True)
        else:  # the engine's start-up logs go to stderr first
            answers[engine] = generate(ckpt, question, video=str(clip), engine=engine)
            print(f"[{engine}] answer: {answers[engine]}")
    print(f"expected:   {expected}")
    if len(set(answers.values())) > 1:
        print("warning: the engines disagree", file=sys.stderr)
        return 1
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands (``generate``, ``demo``) to the ``llava-next-video`` parser."""
    _add_generate(sub)
    _add_demo(sub)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to an option's help when X says something (not None/False/empty)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        empty = isinstance(default, list | tuple) and not default
        if (
            default is None
            or default is False
            or default is argparse.SUPPRESS
            or empty
            or "%(default)" in text
        ):
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Every (sub)command's ``--help`` shows the defaults (subparsers are made with this class too)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def package_version() -> str:
    """The installed distribution's version (``llava_next_video_hf.__version__``)."""
    from . import __version__

    return __version__


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``llava-next-video`` argument parser.

    Without ``command``, every subcommand is complete (every module in :data:`COMMANDS` is imported).
    With ``command``, only that command's module is imported and its arguments added; the other
    commands are listed by name and help only (enough for the top-level ``--help`` and usage errors).
    """
    parser = _Parser(
        prog="llava-next-video",
        description="Answer questions about videos with LLaVA-NeXT-Video; convert, export, publish and fine-tune.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    modules = dict.fromkeys(module for module, _ in COMMANDS.values())
    if command is not None:
        modules = {COMMANDS[command][0]: None} if command in COMMANDS else {}
    for module in modules:
        add = add_cli if module == "cli" else importlib.import_module(f"{__package__}.{module}").add_cli
        add(sub)
    for name, (_, help_) in COMMANDS.items():
        if name not in sub.choices:  # listed, not loaded
            sub.add_parser(name, help=help_)
    return parser


def _command_of(argv: Sequence[str]) -> str:
    """The subcommand named in ``argv`` (the first argument that is not an option), or ``""``."""
    return next((arg for arg in argv if not arg.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_of(argv)).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LlavaNextVideoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # file-system failures the commands did not foresee: still one line
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as shells report it


if __name__ == "__main__":
    sys.exit(main())
