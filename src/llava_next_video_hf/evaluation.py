"""Evaluating our checkpoints with lmms-eval (PyPI ``lmms-eval``, 0.7): a model backend and a local task.

* ``--model llava_next_video_anyres``: [`LlavaNextVideoLmms`], registered through lmms-eval 0.7's
  entry-point group ``lmms_eval.models`` (see ``pyproject.toml``; [`manifest`] is the payload), so
  installing this package is all lmms-eval needs. The paper's inference settings are model
  arguments: ``num_frames`` (or ``fps`` + ``max_frames``), ``rope_factor`` (a number, or ``auto``:
  the paper's rule for ``max_frames``/``num_frames``), ``spatial_pool_stride`` /
  ``spatial_pool_mode`` (pooling), ``max_new_tokens``, ``dtype``. Generation is greedy through the
  checkpoint's chat template and processor, as in ``llava-next-video generate``.
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

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from lmms_eval.api.model import lmms

from . import rope
from .testing import tasks

MODEL_NAME = "llava_next_video_anyres"
TASK_NAME = "video_qa_synthetic"
TASK_TEMPLATE = Path(__file__).parent / "assets" / "lmms_eval_task"

__all__ = ["MODEL_NAME", "TASK_NAME", "LlavaNextVideoLmms", "manifest", "write_task"]


def manifest() -> Any:
    """lmms-eval's ``ModelManifest`` for [`LlavaNextVideoLmms`] (entry point ``lmms_eval.models``)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.LlavaNextVideoLmms")


class LlavaNextVideoLmms(lmms):
    """lmms-eval backend for LLaVA-NeXT-Video checkpoints of this package (transformers, greedy).

    Args:
        pretrained: checkpoint folder (or Hub id).
        num_frames, fps, max_frames: frame sampling (default: the checkpoint processor's).
        rope_factor: linear RoPE factor to load with (``"auto"``: the paper's rule for the frame budget).
        spatial_pool_stride, spatial_pool_mode: override the checkpoint's pooling (model and processor).
        max_new_tokens: answer budget unless a task's ``generation_kwargs`` sets it.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        batch_size: accepted for lmms-eval's CLI; requests run one at a time.
    """

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
        **unused: Any,
    ) -> None:
        super().__init__()
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from .processing import register_auto_classes

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
        self.model = AutoModelForImageTextToText.from_pretrained(
            pretrained, dtype=getattr(torch, dtype), **overrides
        ).eval()
        self.processor = AutoProcessor.from_pretrained(pretrained)
        config = self.model.config  # the processor follows the loaded model: pooling and context
        self.processor.spatial_pool_stride = int(config.spatial_pool_stride)
        self.processor.spatial_pool_mode = config.spatial_pool_mode
        self.processor.context_length = int(config.context_length)
        frames = {"num_frames": num_frames, "fps": fps, "max_frames": max_frames}
        self.frame_kwargs = {k: v for k, v in frames.items() if v is not None}
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size_per_gpu = int(batch_size) if str(batch_size).isdigit() else 1

    # ---- prompts ------------------------------------------------------------------------------
    def _inputs(self, request: Any, text: str, add_generation_prompt: bool = True) -> Any:
        """Chat-template inputs for one request: its visuals (video paths / PIL images), then ``text``."""
        doc_to_visual, doc_id, task, split = request.args[2:6]
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
        content: list[dict[str, Any]] = []
        for visual in visuals:
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
        )

    # ---- lmms-eval's interface ----------------------------------------------------------------
    def generate_until(self, requests: list[Any]) -> list[str]:
        """Greedy answers; each stops at the first of the task's ``until`` strings."""
        import torch

        answers = []
        for request in requests:
            context, gen_kwargs = request.args[0], dict(request.args[1])
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            inputs = self._inputs(request, context)
            budget = int(gen_kwargs.get("max_new_tokens") or self.max_new_tokens)
            with torch.inference_mode():
                out = self.model.generate(**inputs, max_new_tokens=budget, do_sample=False)
            text = self.processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            for stop in until:
                text = text.split(stop)[0] if stop else text
            answers.append(text.strip())
        return answers

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        """Log-probability of each continuation after its context, and whether greedy decoding picks it."""
        import torch

        results = []
        for request in requests:
            context, target = request.args[0], request.args[1]
            doc_to_visual, doc_id, task, split = request.args[2:6]
            continuation = target(self.task_dict[task][split][doc_id]) if callable(target) else target
            inputs = self._inputs(request, context)
            prompt_len = inputs["input_ids"].shape[1]
            cont = self.processor.tokenizer(str(continuation), add_special_tokens=False, return_tensors="pt")
            ids = torch.cat([inputs["input_ids"], cont["input_ids"]], dim=1)
            mask = torch.ones_like(ids)
            extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=mask, **extra).logits.float()
            logprobs = torch.log_softmax(logits[0, prompt_len - 1 : -1], dim=-1)
            wanted = ids[0, prompt_len:]
            total = logprobs.gather(-1, wanted[:, None]).sum().item()
            results.append((total, bool((logprobs.argmax(-1) == wanted).all())))
        return results

    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
        raise NotImplementedError("multi-round generation is not implemented for llava_next_video_anyres")


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
