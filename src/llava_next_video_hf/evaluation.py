"""Evaluating our checkpoints with lmms-eval (PyPI ``lmms-eval``, 0.7): a model backend and a local task.

* ``--model llava_next_video_anyres``: [`LlavaNextVideoLmms`], registered through lmms-eval 0.7's
  entry-point group ``lmms_eval.models`` (see ``pyproject.toml``; [`manifest`] is the payload), so
  installing this package is all lmms-eval needs. The paper's inference settings are model
  arguments: ``num_frames`` (or ``fps`` + ``max_frames``), ``rope_factor`` (a number, or ``auto``:
  the paper's rule for ``max_frames``/``num_frames``), ``spatial_pool_stride`` /
  ``spatial_pool_mode`` (pooling), ``max_new_tokens``, ``dtype``. Generation is greedy through the
  checkpoint's chat template and processor, as in ``llava-next-video generate``.
  Runs in one process or under ``accelerate launch`` / ``torchrun`` (rank and world size from
  accelerate; lmms-eval splits the documents and gathers the results), or with ``engine=vllm``
  through the vLLM plugin. Errors exit non-zero (``SystemExit``), not lmms-eval's silent exit 0.
* [`write_task`]: a local lmms-eval task (YAML + ``utils.py`` from ``assets/lmms_eval_task``) over
  synthetic clips of ``llava_next_video_hf.testing.tasks`` (no Hub download): ``--include_path FOLDER
  --tasks video_qa_synthetic`` reports the answer accuracy.

Example (the shipped tiny model; ``pip install 'llava-next-video-hf[eval]'``)::

    python -c "from llava_next_video_hf.evaluation import write_task; write_task('evaltask', 32)"
    lmms-eval eval --model llava_next_video_anyres --model_args pretrained=CKPT \\
        --tasks video_qa_synthetic --include_path evaltask --batch_size 1 --output_path out

(a real checkpoint on a real benchmark: ``--model_args pretrained=CKPT,num_frames=32,rope_factor=auto``).
"""

from __future__ import annotations

import functools
import json
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from lmms_eval.api.instance import GenerationResult
from lmms_eval.api.model import lmms

from . import rope
from .errors import LlavaNextVideoError
from .testing import tasks

MODEL_NAME = "llava_next_video_anyres"
TASK_NAME = "video_qa_synthetic"
TASK_TEMPLATE = Path(__file__).parent / "assets" / "lmms_eval_task"
#: ``engine=`` values of [`LlavaNextVideoLmms`]
ENGINES = ("transformers", "vllm")

__all__ = ["MODEL_NAME", "TASK_NAME", "LlavaNextVideoLmms", "LoglikelihoodResult", "manifest", "write_task"]


def manifest() -> Any:
    """lmms-eval's ``ModelManifest`` for [`LlavaNextVideoLmms`] (entry point ``lmms_eval.models``)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.LlavaNextVideoLmms")


class LoglikelihoodResult(GenerationResult):
    """One ``loglikelihood`` answer, ``(log-probability, is greedy)``, that reaches lmms-eval's tasks.

    lmms-eval 0.7.3's evaluator passes every model output through ``unwrap_generation_output``,
    which keeps strings and ``GenerationResult`` but turns anything else, the ``(float, bool)``
    tuples of its own ``loglikelihood`` contract included, into ``str(output)``: every
    ``multiple_choice`` task then fails in ``process_results`` (``"(-1.2, True)"`` cannot be
    unpacked). This ``GenerationResult`` carries the tuple as its ``text``, so the task receives the
    tuple; it also behaves as that tuple (indexing, unpacking, ``==``) for direct callers.
    """

    def __init__(self, logprob: float, greedy: bool) -> None:
        super().__init__(text=(float(logprob), bool(greedy)))  # type: ignore[arg-type]

    def __iter__(self) -> Any:
        return iter(self.text)

    def __getitem__(self, index: int) -> Any:
        return self.text[index]

    def __len__(self) -> int:
        return 2

    def __eq__(self, other: object) -> bool:
        return tuple(self.text) == (tuple(other) if isinstance(other, tuple | LoglikelihoodResult) else other)

    def __repr__(self) -> str:
        return repr(self.text)


def _fail_loudly(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turn an exception of ``method`` into ``SystemExit``: lmms-eval's CLI catches ``Exception``,
    prints it and exits 0 with no results, which a pipeline reads as success. ``SystemExit`` passes
    its handler, so ``lmms-eval`` (and ``accelerate launch``, whose other ranks are then stopped)
    exits non-zero with the message below the traceback."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as error:
            traceback.print_exc()
            raise SystemExit(f"{MODEL_NAME}: {type(error).__name__}: {error}") from error

    return wrapper


def _processes(device: str | None) -> tuple[Any, Any]:
    """(accelerate ``Accelerator``, torch device) for this process of an lmms-eval run.

    Under ``accelerate launch`` / ``torchrun`` the accelerator spans ``WORLD_SIZE`` processes; lmms-eval
    splits the documents by its rank and gathers through it. On a machine without GPUs accelerate
    (as lmms-eval's CLI creates it, without ``cpu=True``) reports one process even though the launcher
    started several and initialised their process group; the state is then rebuilt for CPU (gloo),
    as ``ACCELERATE_USE_CPU=true`` would have done.

    Raises:
        LlavaNextVideoError: the launcher's world size and accelerate's still disagree.
    """
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    world = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = Accelerator()
    if world > 1 and accelerator.num_processes != world and not torch.accelerator.is_available():
        AcceleratorState._reset_state(reset_partial_state=True)
        accelerator = Accelerator(cpu=True)
    if accelerator.num_processes != world:
        raise LlavaNextVideoError(
            f"the launcher started WORLD_SIZE={world} processes but accelerate sees "
            f"{accelerator.num_processes} ({accelerator.distributed_type}); launch with "
            "`accelerate launch --multi_gpu --num_processes N -m lmms_eval eval ...` "
            "(on CPU also ACCELERATE_USE_CPU=true)"
        )
    if device is None:
        return accelerator, accelerator.device
    resolved = torch.device(device)
    if world > 1 and resolved.type != "cpu" and resolved.index is None:  # one device per rank
        resolved = torch.device(resolved.type, accelerator.local_process_index)
    return accelerator, resolved


class LlavaNextVideoLmms(lmms):
    """lmms-eval backend for LLaVA-NeXT-Video checkpoints of this package (greedy).

    Runs in one process or under ``accelerate launch`` / ``torchrun`` (rank and world size from
    accelerate, as lmms-eval's own models take them: lmms-eval gives each rank its share of the
    documents and gathers the results; each rank holds a whole model on its own device).

    Args:
        pretrained: checkpoint folder (or Hub id).
        num_frames, fps, max_frames: frame sampling (default: the checkpoint processor's).
        rope_factor: linear RoPE factor to load with (``"auto"``: the paper's rule for the frame budget).
        spatial_pool_stride, spatial_pool_mode: override the checkpoint's pooling (model and processor).
        max_new_tokens: answer budget unless a task's ``generation_kwargs`` sets it.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        batch_size: accepted for lmms-eval's CLI; the transformers engine runs requests one at a time.
        device: torch device (default: accelerate's, ``cuda:<local rank>`` on GPUs, else ``cpu``).
        engine: ``transformers`` (default) or ``vllm``: the vLLM plugin answers ``generate_until``
            with continuous batching over lmms-eval's request list (same frames, same prompt tokens)
            and ``loglikelihood`` from vLLM's prompt log-probabilities.
        tensor_parallel_size, max_model_len, gpu_memory_utilization: ``vllm.LLM`` arguments
            (``engine=vllm`` only).
        vllm_chunk: requests handed to vLLM at once (their decoded frames are held in memory).
    """

    @_fail_loudly
    def __init__(
        self,
        pretrained: str,
        num_frames: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        rope_factor: float | str | None = None,
        spatial_pool_stride: int | None = None,
        spatial_pool_mode: str | None = None,
        max_new_tokens: int = 64,
        dtype: str = "float32",
        batch_size: int | str = 1,
        device: str | None = None,
        engine: str = "transformers",
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        vllm_chunk: int = 256,
        **unused: Any,
    ) -> None:
        super().__init__()
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from .processing import register_auto_classes

        if engine not in ENGINES:
            raise LlavaNextVideoError(f"engine={engine!r}: choose one of {', '.join(ENGINES)}")
        self.engine = engine
        self.accelerator, self._device = _processes(device)
        self._rank = self.accelerator.process_index
        self._world_size = self.accelerator.num_processes
        if engine == "vllm" and self._world_size > 1:
            raise LlavaNextVideoError(
                f"engine=vllm runs in one process ({self._world_size} were launched): vLLM batches the "
                "whole request list itself; spread a model over GPUs with tensor_parallel_size=N"
            )
        from loguru import logger  # lmms-eval's logger

        logger.info(
            f"{MODEL_NAME}: process {self._rank} of {self._world_size} "
            f"({self.accelerator.distributed_type.value}), device {self._device}, engine {engine}"
        )
        register_auto_classes()
        overrides: dict[str, Any] = {}
        if rope_factor is not None:
            overrides["rope_scaling_factor"] = rope.parse_rope_factor(rope_factor)  # ValueError names it
            if max_frames or num_frames:
                overrides["max_frames"] = int(max_frames or num_frames)
        if spatial_pool_stride is not None:
            overrides["spatial_pool_stride"] = int(spatial_pool_stride)
        if spatial_pool_mode is not None:
            overrides["spatial_pool_mode"] = spatial_pool_mode
        self.processor = AutoProcessor.from_pretrained(pretrained)
        if engine == "transformers":
            self.model = AutoModelForImageTextToText.from_pretrained(
                pretrained, dtype=getattr(torch, dtype), **overrides
            ).eval()
            self.model.to(self._device)
            config = self.model.config
        else:
            from transformers import AutoConfig

            if overrides:  # as `llava-next-video generate --engine vllm`: the checkpoint carries them
                raise LlavaNextVideoError(
                    f"{', '.join(sorted(overrides))} (rope_factor / spatial_pool_*) work with "
                    "engine=transformers; for engine=vllm write them into the checkpoint: llava-next-video "
                    "convert CKPT OUT --rope-factor F (or --max-frames N --rope-factor auto)"
                )
            config = AutoConfig.from_pretrained(pretrained)
            self.vllm_kwargs: dict[str, Any] = {
                "model": str(pretrained),
                "dtype": dtype,
                "tensor_parallel_size": int(tensor_parallel_size),
                "limit_mm_per_prompt": {"image": 1, "video": 1},
            }
            if max_model_len is not None:
                self.vllm_kwargs["max_model_len"] = int(max_model_len)
            if gpu_memory_utilization is not None:
                self.vllm_kwargs["gpu_memory_utilization"] = float(gpu_memory_utilization)
            self.vllm_chunk = int(vllm_chunk)
            self._llm: Any = None
        # the processor follows the loaded model: pooling and context
        self.processor.spatial_pool_stride = int(config.spatial_pool_stride)
        self.processor.spatial_pool_mode = config.spatial_pool_mode
        self.processor.context_length = int(config.context_length)
        frames = {"num_frames": num_frames, "fps": fps, "max_frames": max_frames}
        self.frame_kwargs = {k: v for k, v in frames.items() if v is not None}
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size_per_gpu = int(batch_size) if str(batch_size).isdigit() else 1

    @property
    def device(self) -> Any:
        """The torch device this rank's model runs on (lmms-eval puts its gather tensors there)."""
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    # ---- prompts ------------------------------------------------------------------------------
    def _visuals(self, request: Any) -> list[Any]:
        """The request's visuals as its task's ``doc_to_visual`` gives them (video paths / PIL images)."""
        doc_to_visual, doc_id, task, split = request.args[2:6]
        return list(doc_to_visual(self.task_dict[task][split][doc_id]) or [])

    def _inputs(self, request: Any, text: str, add_generation_prompt: bool = True) -> Any:
        """Chat-template inputs for one request: its visuals (video paths / PIL images), then ``text``."""
        content: list[dict[str, Any]] = []
        for visual in self._visuals(request):
            if isinstance(visual, str | os.PathLike):
                content.append({"type": "video", "path": str(visual)})
            else:
                content.append({"type": "image", "image": visual})
        content.append({"type": "text", "text": text})
        return self.processor.apply_chat_template(
            [{"role": "user", "content": content}],
            add_generation_prompt=add_generation_prompt,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            **self.frame_kwargs,
        ).to(self._device)

    def _vllm_prompt(self, request: Any, text: str) -> tuple[list[int], dict[str, Any]]:
        """vLLM's (prompt ids, multi_modal_data) for one request, built as [`_inputs`] builds them."""
        from .vllm_plugin.offline import prepare_prompt

        visuals = self._visuals(request)
        videos = [v for v in visuals if isinstance(v, str | os.PathLike)]
        images = [v for v in visuals if not isinstance(v, str | os.PathLike)]
        if len(videos) > 1 or len(images) > 1:
            raise LlavaNextVideoError(
                f"engine=vllm takes one video and one image per request; {request.args[4]} doc "
                f"{request.args[3]} has {len(videos)} videos and {len(images)} images (use engine=transformers)"
            )
        video = str(videos[0]) if videos else None
        return prepare_prompt(self.processor, text, video=video, images=images, **self.frame_kwargs)

    @property
    def llm(self) -> Any:
        """The vLLM engine (started on first use; ``clean`` shuts it down)."""
        if self._llm is None:
            os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
            from vllm import LLM

            from .vllm_plugin.offline import engine_kwargs

            self._llm = LLM(**engine_kwargs(**self.vllm_kwargs))
        return self._llm

    @staticmethod
    def _stop_strings(gen_kwargs: dict[str, Any]) -> list[str]:
        until = gen_kwargs.get("until") or []
        return [until] if isinstance(until, str) else [stop for stop in until if stop]

    # ---- lmms-eval's interface ----------------------------------------------------------------
    @_fail_loudly
    def generate_until(self, requests: list[Any]) -> list[str]:
        """Greedy answers; each stops at the first of the task's ``until`` strings."""
        if self.engine == "vllm":
            return self._generate_vllm(requests)
        import torch

        answers = []
        for request in requests:
            context, gen_kwargs = request.args[0], dict(request.args[1])
            inputs = self._inputs(request, context)
            budget = int(gen_kwargs.get("max_new_tokens") or self.max_new_tokens)
            with torch.inference_mode():
                out = self.model.generate(**inputs, max_new_tokens=budget, do_sample=False)
            text = self.processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            for stop in self._stop_strings(gen_kwargs):
                text = text.split(stop)[0]
            answers.append(text.strip())
        return answers

    def _generate_vllm(self, requests: list[Any]) -> list[str]:
        """``generate_until`` through vLLM: chunks of ``vllm_chunk`` requests, each chunk one
        ``LLM.generate`` call (continuous batching inside it)."""
        from vllm import SamplingParams

        answers: list[str] = []
        for start in range(0, len(requests), self.vllm_chunk):
            prompts, params, stops = [], [], []
            for request in requests[start : start + self.vllm_chunk]:
                context, gen_kwargs = request.args[0], dict(request.args[1])
                ids, media = self._vllm_prompt(request, context)
                prompts.append({"prompt_token_ids": ids, "multi_modal_data": media})
                budget = int(gen_kwargs.get("max_new_tokens") or self.max_new_tokens)
                stops.append(self._stop_strings(gen_kwargs))
                params.append(SamplingParams(temperature=0.0, max_tokens=budget))
            for out, stop_list in zip(self.llm.generate(prompts, params, use_tqdm=False), stops, strict=True):
                text = out.outputs[0].text
                for stop in stop_list:  # cut as the transformers engine cuts (after decoding)
                    text = text.split(stop)[0]
                answers.append(text.strip())
        return answers

    def _continuation(self, request: Any) -> str:
        target = request.args[1]
        doc_id, task, split = request.args[3:6]
        return str(target(self.task_dict[task][split][doc_id]) if callable(target) else target)

    @_fail_loudly
    def loglikelihood(self, requests: list[Any]) -> list[LoglikelihoodResult]:
        """Log-probability of each continuation after its context, and whether greedy decoding picks it
        (as [`LoglikelihoodResult`]: a ``(float, bool)`` that lmms-eval 0.7.3 does not stringify)."""
        if self.engine == "vllm":
            return self._loglikelihood_vllm(requests)
        import torch

        results = []
        for request in requests:
            inputs = self._inputs(request, request.args[0])
            prompt_len = inputs["input_ids"].shape[1]
            cont = self.processor.tokenizer(
                self._continuation(request), add_special_tokens=False, return_tensors="pt"
            )
            ids = torch.cat([inputs["input_ids"], cont["input_ids"].to(self._device)], dim=1)
            mask = torch.ones_like(ids)
            extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=mask, **extra).logits.float()
            logprobs = torch.log_softmax(logits[0, prompt_len - 1 : -1], dim=-1)
            wanted = ids[0, prompt_len:]
            total = logprobs.gather(-1, wanted[:, None]).sum().item()
            results.append(LoglikelihoodResult(total, bool((logprobs.argmax(-1) == wanted).all())))
        return results

    def _loglikelihood_vllm(self, requests: list[Any]) -> list[LoglikelihoodResult]:
        """``loglikelihood`` from vLLM's prompt log-probabilities of context + continuation."""
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1)
        results: list[LoglikelihoodResult] = []
        for start in range(0, len(requests), self.vllm_chunk):
            prompts, lengths = [], []
            for request in requests[start : start + self.vllm_chunk]:
                ids, media = self._vllm_prompt(request, request.args[0])
                cont = self.processor.tokenizer(self._continuation(request), add_special_tokens=False)
                prompts.append({"prompt_token_ids": ids + list(cont["input_ids"]), "multi_modal_data": media})
                lengths.append(len(cont["input_ids"]))
            for out, n in zip(self.llm.generate(prompts, params, use_tqdm=False), lengths, strict=True):
                wanted = out.prompt_token_ids[-n:]
                entries = out.prompt_logprobs[-n:]
                total = sum(entry[token].logprob for entry, token in zip(entries, wanted, strict=True))
                greedy = all(entry[token].rank == 1 for entry, token in zip(entries, wanted, strict=True))
                results.append(LoglikelihoodResult(total, greedy))
        return results

    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
        raise NotImplementedError("multi-round generation is not implemented for llava_next_video_anyres")

    def clean(self) -> None:
        """Shut the vLLM engine down (its processes), then lmms-eval's own clean-up."""
        llm = getattr(self, "_llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            self._llm = None
        super().clean()


def write_task(folder: str | os.PathLike, num_clips: int = 32, *, seed: int = 1234) -> Path:
    """Write the lmms-eval task ``video_qa_synthetic`` into ``folder``; returns it (``--include_path``).

    ``num_clips`` held-out synthetic clips of ``llava_next_video_hf.testing.tasks`` (all four question kinds)
    as mp4 files under ``folder/clips``, their questions and answers in ``folder/data.jsonl``, and
    the task's YAML and ``utils.py`` (scored by ``tasks.parse_answer`` == answer: ``accuracy``).
    """
    root = Path(folder)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(num_clips):
        example = tasks.sample_example(rng, tasks.KINDS[i % len(tasks.KINDS)])
        clip = tasks.write_mp4(example.frames(tasks.file_frames()), root / "clips" / f"{i:04d}.mp4")
        lines.append(
            {"id": i, "kind": example.kind, "video": str(clip.resolve()), "question": example.question,
             "answer": example.answer}
        )  # fmt: skip
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    yaml = (TASK_TEMPLATE / f"{TASK_NAME}.yaml").read_text()
    (root / f"{TASK_NAME}.yaml").write_text(yaml.replace("DATA_FILE", json.dumps(str(data.resolve()))))
    (root / "utils.py").write_text((TASK_TEMPLATE / "utils.py").read_text())
    return root
