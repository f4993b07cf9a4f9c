"""The two engines a batch job drives, behind one small interface.

* :class:`VllmEngine`: ``vllm.LLM`` (the plugin's model) fed request by request through its engine
  (``add_request`` / ``step``): continuous batching, new videos join while others generate.
* :class:`HFEngine`: transformers' ``generate`` on batches of up to ``batch_size`` prepared rows
  (left-padded prompts, videos zero-padded over frames with ``video_num_frames``), for machines
  without vLLM.

Both take what :func:`~llava_next_video_hf.batch.prepare.prepare` made in a worker and return
``(key, answer, finish_reason, output_tokens)`` for each finished row.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Sampling:
    """How answers are generated (``temperature=0``: greedy, as ``generate`` does)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    seed: int = 0
    min_new_tokens: int = 0  # benchmarks: answers of exactly max_new_tokens (EOS held back until then)


Finished = tuple[str, str, str, int]  # key, answer, finish reason, output tokens


class Engine(Protocol):
    """What the pipeline needs from an engine."""

    #: rows the engine wants in hand before a step (more lets it batch)
    capacity: int

    def add(self, key: str, item: dict[str, Any]) -> None: ...

    def step(self) -> list[Finished]: ...

    def pending(self) -> int: ...

    def close(self) -> None: ...


class VllmEngine:
    """``vllm.LLM`` for the checkpoint, fed by :meth:`add`, advanced by :meth:`step`.

    ``capacity`` is how many rows are kept inside the engine (its scheduler batches what fits).
    """

    def __init__(
        self,
        model: str,
        sampling: Sampling,
        *,
        dtype: str = "float32",
        tensor_parallel_size: int = 1,
        capacity: int = 16,
        **engine_args: Any,
    ) -> None:
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        from vllm import LLM

        from ..vllm_plugin.offline import engine_kwargs

        self.model = str(model)
        self.capacity = capacity
        self.llm = LLM(
            **engine_kwargs(
                model=self.model,
                dtype=dtype,
                limit_mm_per_prompt={"image": 0, "video": 1},
                tensor_parallel_size=tensor_parallel_size,
                **engine_args,
            )
        )
        self.set_sampling(sampling)
        self._pending: set[str] = set()

    def set_sampling(self, sampling: Sampling) -> None:
        """Use ``sampling`` for rows added from now on (an engine can serve several jobs)."""
        from vllm import SamplingParams

        self.sampling = sampling
        self.params = SamplingParams(
            temperature=sampling.temperature,
            max_tokens=sampling.max_new_tokens,
            min_tokens=sampling.min_new_tokens,
            seed=sampling.seed if sampling.temperature > 0 else None,
        )

    def add(self, key: str, item: dict[str, Any]) -> None:
        prompt = {"prompt_token_ids": item["prompt_ids"], "multi_modal_data": {"video": item["video"]}}
        self.llm.llm_engine.add_request(key, prompt, self.params)
        self._pending.add(key)

    def step(self) -> list[Finished]:
        done = []
        for out in self.llm.llm_engine.step():
            if out.finished:
                self._pending.discard(out.request_id)
                completion = out.outputs[0]
                done.append(
                    (
                        out.request_id,
                        completion.text.strip(),
                        str(completion.finish_reason),
                        len(completion.token_ids),
                    )
                )
        return done

    def generate(self, items: list[tuple[str, dict[str, Any]]]) -> list[Finished]:
        """All of ``items`` at once (``LLM.generate``; what a Ray replica does with a batch)."""
        prompts = [
            {"prompt_token_ids": it["prompt_ids"], "multi_modal_data": {"video": it["video"]}}
            for _, it in items
        ]
        outs = self.llm.generate(prompts, self.params, use_tqdm=False)
        return [
            (key, o.outputs[0].text.strip(), str(o.outputs[0].finish_reason), len(o.outputs[0].token_ids))
            for (key, _), o in zip(items, outs, strict=True)
        ]

    def pending(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        """Stop the engine's processes now (not at interpreter exit)."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            if self._pending:
                llm.llm_engine.abort_request(list(self._pending))
                self._pending.clear()
            llm.llm_engine.engine_core.shutdown()
            self.llm = None


class HFEngine:
    """transformers' model of the checkpoint; :meth:`step` runs ``generate`` on up to ``batch_size`` rows."""

    def __init__(
        self,
        model: str,
        sampling: Sampling,
        *,
        dtype: str = "float32",
        rope_factor: float | str | None = None,
        max_frames: int | None = None,
        batch_size: int = 4,
    ) -> None:
        from ..hf_engine import load_hf_engine

        # as `generate --rope-factor` loads it
        self.processor, self.net = load_hf_engine(
            model, dtype=dtype, rope_factor=rope_factor, max_frames=max_frames
        )
        self.context_length = getattr(self.net.config, "context_length", None)
        self.capacity = batch_size
        self.sampling = sampling
        self._queue: list[tuple[str, dict[str, Any]]] = []
        tok = self.processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        eos = self.net.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    def set_sampling(self, sampling: Sampling) -> None:
        self.sampling = sampling

    def add(self, key: str, item: dict[str, Any]) -> None:
        self._queue.append((key, item))

    def pending(self) -> int:
        return len(self._queue)

    def step(self) -> list[Finished]:
        if not self._queue:
            return []
        batch, self._queue = self._queue[: self.capacity], self._queue[self.capacity :]
        return self.generate(batch)

    def generate(self, items: list[tuple[str, dict[str, Any]]]) -> list[Finished]:
        """One ``generate`` call over ``items`` (left padding; frames zero-padded to the longest video)."""
        import numpy as np
        import torch

        length = max(len(it["input_ids"]) for _, it in items)
        frames = max(it["pixel_values_videos"].shape[0] for _, it in items)
        ids = np.full((len(items), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(items), length), dtype=np.int64)
        shape = items[0][1]["pixel_values_videos"].shape[1:]
        pixels = np.zeros((len(items), frames, *shape), dtype=np.float32)
        counts = []
        for i, (_, it) in enumerate(items):
            n = len(it["input_ids"])
            ids[i, length - n :] = it["input_ids"]
            mask[i, length - n :] = 1
            t = it["pixel_values_videos"].shape[0]
            pixels[i, :t] = it["pixel_values_videos"]
            counts.append(t)
        kwargs: dict[str, Any] = {"max_new_tokens": self.sampling.max_new_tokens}
        if self.sampling.min_new_tokens:
            kwargs["min_new_tokens"] = self.sampling.min_new_tokens
        if self.sampling.temperature > 0:
            torch.manual_seed(self.sampling.seed)
            kwargs.update(do_sample=True, temperature=self.sampling.temperature)
        else:
            kwargs["do_sample"] = False
        with torch.inference_mode():
            out = self.net.generate(
                input_ids=torch.from_numpy(ids),
                attention_mask=torch.from_numpy(mask),
                pixel_values_videos=torch.from_numpy(pixels).to(self.net.dtype),
                video_num_frames=torch.tensor(counts),
                pad_token_id=self.pad_id,
                **kwargs,
            )
        results = []
        for i, (key, _) in enumerate(items):
            new = out[i, length:].tolist()
            stop = next((j for j, t in enumerate(new) if t in self.eos_ids), None)
            used = new if stop is None else new[: stop + 1]
            reason = "stop" if stop is not None else "length"
            text = self.processor.decode(used, skip_special_tokens=True).strip()
            results.append((key, text, reason, len(used)))
        return results

    def close(self) -> None:
        self._queue.clear()


__all__ = ["Engine", "Finished", "HFEngine", "Sampling", "VllmEngine"]
