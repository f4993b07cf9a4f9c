"""``llava-next-video batch``: answer a prompt about thousands of videos, pipelined and resumable.

:func:`run` (and the ``batch`` subcommand) reads rows from a folder, glob, text file or manifest
(``inputs``), decodes and prepares each video in worker processes (``prepare``), feeds the engine
through a bounded queue (``pipeline``; vLLM with continuous batching, or transformers' batched
``generate``: ``engines``), and appends one whole JSON line per row to the output (``output``), which
a re-run resumes. ``ray_job`` runs the same job on a Ray cluster.

Nothing heavy is imported until a job runs.
"""

from __future__ import annotations

import argparse

from ..arg_types import non_negative_float, positive_float, positive_int
from .inputs import BatchInputError, Row, read_rows
from .output import BatchOutputError
from .pipeline import BatchEngineError, Summary, run

HELP = "answer a prompt about every video of a folder/manifest: pipelined, resumable, on Ray (--ray)"


def add_cli(sub: argparse._SubParsersAction) -> None:
    """Add the ``batch`` subcommand to the ``llava-next-video`` parser."""
    p = sub.add_parser("batch", help=HELP, description=HELP)
    p.add_argument("model", help="checkpoint folder")
    p.add_argument(
        "input",
        help="a folder (searched recursively for videos), a glob, a text file of paths/URLs, or a "
        ".jsonl/.csv/.parquet manifest with 'video' and optional 'id', 'prompt' (other columns are carried)",
    )
    p.add_argument("-o", "--output", required=True, help="JSONL output; re-running resumes it")
    p.add_argument("--prompt", help="prompt for rows without their own 'prompt'")
    p.add_argument("--engine", choices=("vllm", "hf"), default="vllm", help="vLLM (offline) or transformers")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--frames", type=positive_int, help="sample N frames (default: the checkpoint's)")
    group.add_argument(
        "--fps", type=positive_float, help="sample F frames per second (bounded by --max-frames)"
    )
    p.add_argument("--max-frames", type=positive_int, help="upper bound on sampled frames")
    p.add_argument("--rope-factor", help="linear RoPE factor, a number or 'auto' (hf engine; as in generate)")
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="answer length budget (tokens)")
    p.add_argument("--temperature", type=non_negative_float, default=0.0, help="0: greedy")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (with --temperature > 0)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--workers", type=positive_int, help="decoding processes (default: one per core)")
    p.add_argument(
        "--decode-deadline",
        type=positive_float,
        default=180.0,
        help="seconds one video's decoding may take before its worker is killed and the row fails",
    )
    p.add_argument(
        "--queue-size", type=int, help="decoded videos that may wait for the engine (default: 2 x workers)"
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        help="rows per generate (hf, default 4) / kept in vLLM (default 16)",
    )
    p.add_argument(
        "--tensor-parallel-size", "-tp", type=positive_int, default=1, help="vLLM workers per engine"
    )
    p.add_argument("--shard", help="K/N: only every N-th row starting at row K (0-based), e.g. a SLURM array")
    p.add_argument("--retry-failed", action="store_true", help="run rows recorded as errors again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--ray", action="store_true", help="run on a Ray cluster (pip install 'llava-next-video-hf[ray]')"
    )
    p.add_argument("--replicas", type=positive_int, default=1, help="engine replicas (with --ray)")
    p.add_argument("--ray-address", help="the cluster to join (default: RAY_ADDRESS, else 'auto')")
    p.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    rope = args.rope_factor
    if rope is not None:
        from ..errors import LlavaNextVideoError
        from ..rope import parse_rope_factor

        try:
            rope = parse_rope_factor(rope)
        except ValueError as err:
            raise LlavaNextVideoError(f"--rope-factor must be {err}") from None
    if args.queue_size is not None and args.queue_size < 0:
        raise BatchInputError(f"--queue-size must be >= 0, got {args.queue_size}")
    run(
        args.model,
        args.input,
        args.output,
        prompt=args.prompt,
        engine=args.engine,
        num_frames=args.frames,
        fps=args.fps,
        max_frames=args.max_frames,
        rope_factor=rope,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        dtype=args.dtype,
        workers=args.workers,
        queue_size=args.queue_size,
        decode_deadline_s=args.decode_deadline,
        batch_size=args.batch_size,
        tensor_parallel_size=args.tensor_parallel_size,
        shard=args.shard,
        retry_failed=args.retry_failed,
        progress=not args.no_progress,
        ray=args.ray,
        replicas=args.replicas,
        ray_address=args.ray_address,
    )
    return 0


__all__ = [
    "BatchEngineError",
    "BatchInputError",
    "BatchOutputError",
    "Row",
    "Summary",
    "add_cli",
    "read_rows",
    "run",
]
