"""The single-machine job: decoding workers -> a bounded queue -> the engine -> the JSONL output.

Memory bound: at most ``workers + queue_size`` prepared videos exist outside the engine at any time
(being decoded, or decoded and waiting), plus ``capacity`` rows inside the engine. A prepared video
is its *sampled* frames only (``video_io`` seeks to them), so a 10-minute clip costs what a 10-second
clip of the same resolution and frame count costs.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import LlavaNextVideoError
from .engines import Engine, Sampling
from .inputs import Row
from .output import OutputFile
from .prepare import Settings, error_of, prepare, warm_up
from .records import Summary, answer_record, error_record


class BatchEngineError(LlavaNextVideoError):
    """The engine failed in a way no single row explains (it died): the job cannot go on."""


#: wall time (s) one row's decoding + preparing may take in its worker before the worker is killed
#: and the row fails (the first row of each worker also imports transformers: hence above the
#: pool's own default)
DECODE_DEADLINE_S = 180.0


def decode_pool(workers: int, deadline_s: float | None = DECODE_DEADLINE_S) -> Any:
    """The process pool that runs :func:`prepare` (the one place that chooses it).

    ``video_io.isolated.DecodePool``: fresh worker processes; a decoder that crashes or hangs past
    ``deadline_s`` fails its row (a ``VideoLoadError`` naming the signal or the deadline) and its
    worker is replaced; workers ignore Ctrl-C and die with the job. Anything with
    ``submit(fn, *args) -> Future`` and ``close()``/``shutdown()`` would fit here.
    """
    from ..video_io.isolated import DecodePool

    return DecodePool(workers, deadline_s)


def _close_pool(pool: Any, wait: bool = True) -> None:
    if hasattr(pool, "shutdown"):
        pool.shutdown(wait=wait, cancel_futures=True)
    else:
        pool.close()


def default_workers() -> int:
    """One decoding worker per core this process may use."""
    return max(1, len(os.sched_getaffinity(0)))


def run_rows(
    rows: list[Row],
    settings: Settings,
    engine: Engine | Callable[[], Engine],
    out: OutputFile,
    summary: Summary,
    *,
    workers: int,
    queue_size: int,
    progress: bool = True,
    decode_deadline_s: float | None = DECODE_DEADLINE_S,
    pool: Any = None,
) -> None:
    """Answer ``rows`` with ``engine``, writing one record per row to ``out`` as each finishes.

    ``engine`` may be a function that makes it: the first videos are then decoded while it starts.
    ``pool``: a started decoding pool to use (kept open), else one is made for these rows.
    """
    from tqdm.auto import tqdm

    todo = deque(enumerate(rows))
    inflight: dict[cf.Future, tuple[int, Row]] = {}
    ready: deque[tuple[int, Row, dict[str, Any], float]] = deque()
    in_engine: dict[str, tuple[Row, dict[str, Any], dict[str, float], float]] = {}
    window = workers + queue_size
    own_pool = pool is None
    if pool is None:
        pool = decode_pool(workers, decode_deadline_s)
    for _ in range(workers):  # each worker loads the processor (imports transformers) before any row
        pool.submit(warm_up, settings)
    while todo and len(inflight) < window:  # decoding starts before the engine does
        n, row = todo.popleft()
        inflight[pool.submit(prepare, row.video, row.prompt, settings)] = (n, row)
    try:
        if callable(engine) and not hasattr(engine, "step"):
            engine = engine()
    except BaseException:
        if own_pool:
            _close_pool(pool, wait=False)
        raise
    bar = tqdm(
        total=len(rows),
        unit="video",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
    )

    def finish(record: dict) -> None:
        out.write(record)
        if "error" in record:
            summary.failed += 1
            kind = record["error"]["kind"]
            summary.errors[kind] = summary.errors.get(kind, 0) + 1
            bar.set_postfix(failed=summary.failed, refresh=False)
        else:
            summary.done += 1
        bar.update(1)

    finished = False
    try:
        while todo or inflight or ready or engine.pending():
            while todo and len(inflight) + len(ready) < window:
                n, row = todo.popleft()
                inflight[pool.submit(prepare, row.video, row.prompt, settings)] = (n, row)
            for fut in [f for f in inflight if f.done()]:
                n, row = inflight.pop(fut)
                try:
                    item = fut.result()
                except Exception as exc:  # the worker died or the pool broke: this row fails
                    item = {"error": error_of(exc), "decode_s": 0.0}
                if "error" in item:
                    finish(error_record(row, item["error"], {"decode": item["decode_s"]}))
                else:
                    ready.append((n, row, item, time.perf_counter()))
            while ready and engine.pending() < engine.capacity:
                n, row, item, t_ready = ready.popleft()
                now = time.perf_counter()
                times = {"decode": item.pop("decode_s"), "queue": now - t_ready}
                key = str(n)
                try:
                    engine.add(key, item)
                except Exception as exc:  # the engine refused this one request
                    err = error_of(exc)
                    err["kind"] = "engine" if err["kind"] == "internal" else err["kind"]
                    finish(error_record(row, err, times))
                    continue
                meta = {"frames": item["frames"], "prompt_tokens": item["prompt_tokens"]}
                in_engine[key] = (row, meta, times, now)
            if engine.pending():
                try:
                    done = engine.step()
                except Exception as exc:
                    raise BatchEngineError(
                        f"the engine failed: {type(exc).__name__}: {exc}; {out.written} record(s) written "
                        "by this run are kept; re-run the same command to resume"
                    ) from exc
                for key, answer, reason, n_out in done:
                    row, meta, times, t_added = in_engine.pop(key)
                    times["generate"] = time.perf_counter() - t_added
                    finish(answer_record(row, meta, answer, reason, n_out, times))
            elif inflight:
                cf.wait(list(inflight), timeout=1.0, return_when=cf.FIRST_COMPLETED)
        finished = True
    except KeyboardInterrupt:
        summary.interrupted = True
        raise
    finally:
        bar.close()
        if own_pool:
            _close_pool(pool, wait=finished)  # stopping: do not wait for decodes nobody will use
        elif not finished:
            for fut in inflight:
                fut.cancel()


def run(
    model: str | os.PathLike,
    inputs: Any,
    output: str | os.PathLike,
    *,
    prompt: str | None = None,
    engine: str | Engine = "vllm",
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    rope_factor: float | str | None = None,
    max_new_tokens: int = 64,
    min_new_tokens: int = 0,
    temperature: float = 0.0,
    seed: int = 0,
    dtype: str = "float32",
    workers: int | None = None,
    queue_size: int | None = None,
    decode_deadline_s: float | None = DECODE_DEADLINE_S,
    decode_workers_pool: Any = None,
    batch_size: int | None = None,
    tensor_parallel_size: int = 1,
    shard: tuple[int, int] | str | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    ray: bool = False,
    replicas: int = 1,
    ray_address: str | None = None,
    say: Callable[[str], None] | None = None,
) -> Summary:
    """Answer ``prompt`` (or each row's own) about every video of ``inputs``; one JSON line per row in ``output``.

    Args:
        model: checkpoint folder (our format).
        inputs: a folder, glob, text file of paths/URLs, ``.jsonl``/``.csv``/``.parquet`` manifest,
            or rows in memory (see :func:`~llava_next_video_hf.batch.inputs.read_rows`).
        output: the JSONL file; rows already answered there are skipped (resume).
        prompt: the prompt of rows that have none of their own.
        engine: ``"vllm"`` (default), ``"hf"`` (transformers), or an engine object made by the caller
            (kept open; :class:`~llava_next_video_hf.batch.engines.VllmEngine`/``HFEngine``).
        num_frames / fps / max_frames: frame sampling, as ``generate`` (default: the checkpoint's).
        rope_factor: linear RoPE factor (a number or ``"auto"``), transformers engine only, as ``generate``.
        max_new_tokens / temperature / seed: generation (``temperature=0``: greedy);
            ``min_new_tokens`` holds EOS back (benchmarks).
        workers: decoding processes (default: one per core); ``queue_size``: decoded videos that may
            wait for the engine (default ``2 * workers``); ``decode_deadline_s``: wall time one row's
            decoding may take before its worker is killed and the row fails;
            ``decode_workers_pool``: a started :func:`decode_pool` to reuse across jobs (kept open);
            ``batch_size``: rows per ``generate``
            (hf, default 4) or rows kept inside vLLM (default 16).
        shard: ``(K, N)`` or ``"K/N"``: only every N-th row from the K-th.
        retry_failed: run rows whose record in ``output`` is an error again (their old line is removed).
        ray / replicas / ray_address: run on a Ray cluster (see ``batch.ray_job``).

    Returns:
        the :class:`Summary` (also printed unless ``say`` is given).

    Raises:
        BatchInputError: the input cannot be read; BatchOutputError: the output cannot be written
        (records already written stay); BatchEngineError: the engine died. A bad row never raises.
    """
    from .engines import HFEngine, VllmEngine
    from .inputs import parse_shard, read_rows, shard_rows

    say = say or (lambda text: print(text, file=sys.stderr))
    if isinstance(shard, str):
        shard = parse_shard(shard)
    engine_name = engine if isinstance(engine, str) else ("vllm" if isinstance(engine, VllmEngine) else "hf")
    if engine_name not in ("vllm", "hf"):
        raise LlavaNextVideoError(f"engine must be 'vllm' or 'hf', got {engine_name!r}")
    if rope_factor is not None and engine_name == "vllm":
        raise LlavaNextVideoError(
            "--rope-factor works with --engine hf; for vLLM write the factor into the checkpoint: "
            "llava-next-video convert CKPT OUT --rope-factor F (or --max-frames N --rope-factor auto)"
        )
    if num_frames is not None and fps is not None:
        raise LlavaNextVideoError("--frames and --fps are exclusive: give one")
    model = str(model)
    if not (Path(model) / "config.json").is_file():
        raise LlavaNextVideoError(f"{model} is not a checkpoint folder (it has no config.json)")
    rows = shard_rows(read_rows(inputs, prompt), shard)
    sampling = Sampling(
        max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, min_new_tokens=min_new_tokens
    )
    started = time.perf_counter()
    out = OutputFile(output, drop_failed=retry_failed)
    summary = Summary(output=str(output), total=len(rows))
    try:
        skip = out.existing.done | (set() if retry_failed else out.existing.failed)
        todo = [r for r in rows if r.id not in skip]
        summary.skipped = len(rows) - len(todo)
        if out.existing.cut_bytes:
            say(
                f"{output}: removed an unfinished last line ({out.existing.cut_bytes} bytes) left by a killed run"
            )
        if not todo:
            return summary
        context = _context_length(model, rope_factor, max_frames or num_frames)
        settings = Settings(model, engine_name, num_frames, fps, max_frames, context)
        if ray:
            from .ray_job import run_on_ray

            run_on_ray(
                todo, settings, sampling, out, summary, rope_factor=rope_factor, decode_deadline_s=decode_deadline_s,
                replicas=replicas, address=ray_address, dtype=dtype,
                tensor_parallel_size=tensor_parallel_size, batch_size=batch_size, progress=progress,
            )  # fmt: skip
            return summary
        workers = workers or default_workers()
        made: list[Engine] = []

        def make_engine() -> Engine:
            eng: Engine
            if engine == "vllm":
                eng = VllmEngine(
                    model, sampling, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
                    capacity=batch_size or 16,
                )  # fmt: skip
            else:
                eng = HFEngine(
                    model, sampling, dtype=dtype, rope_factor=rope_factor, max_frames=max_frames or num_frames,
                    batch_size=batch_size or 4,
                )  # fmt: skip
            made.append(eng)
            return eng

        if not isinstance(engine, str):
            engine.set_sampling(sampling)  # type: ignore[attr-defined]
        try:
            run_rows(
                todo, settings, make_engine if isinstance(engine, str) else engine, out, summary,
                workers=workers, queue_size=2 * workers if queue_size is None else queue_size, progress=progress,
                decode_deadline_s=decode_deadline_s, pool=decode_workers_pool,
            )  # fmt: skip
        finally:
            for eng in made:  # the caller's own engine stays open
                eng.close()
        return summary
    except KeyboardInterrupt:
        summary.interrupted = True
        raise
    finally:
        out.close()
        summary.seconds = time.perf_counter() - started
        say(summary.line())


def _context_length(model: str, rope_factor: float | str | None, budget: int | None) -> int | None:
    """The context at ``rope_factor`` (``None``: the checkpoint's, which the processor knows)."""
    if rope_factor is None:
        return None
    from transformers import AutoConfig

    from ..processing import register_auto_classes

    register_auto_classes()
    kwargs: dict[str, Any] = {"rope_scaling_factor": rope_factor}
    if budget:
        kwargs["max_frames"] = budget
    config = AutoConfig.from_pretrained(model, **kwargs)
    return int(config.context_length)


__all__ = [
    "BatchEngineError",
    "Summary",
    "decode_pool",
    "default_workers",
    "run",
    "run_rows",
    "DECODE_DEADLINE_S",
]
