"""Offline inference through vLLM: the ``--engine vllm`` side of ``llava-next-video generate``.

The prompt is rendered with the checkpoint's own chat template and the video is sampled by our
video processor (``video_io.load_video`` with the checkpoint's frame defaults), exactly as the
transformers engine does; vLLM then receives the frames as an array, so both engines see the same
frames and the same tokens.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..errors import LlavaNextVideoError


def build_messages(prompt: str, *, video: bool, num_images: int) -> list[dict[str, Any]]:
    """One user turn: the images, then the video, then the question (the CLI's layout)."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(num_images)]
    if video:
        content.append({"type": "video"})
    content.append({"type": "text", "text": prompt})
    return [{"role": "user", "content": content}]


def engine_kwargs(**overrides: Any) -> dict[str, Any]:
    """``vllm.LLM`` arguments for this machine: on the CPU backend, a modest share of host memory.

    With several CPU workers (tensor/pipeline parallel) and no ``VLLM_CPU_OMP_THREADS_BIND`` set,
    this also sets that variable to an even split of this process's cores (see
    [`cpu_thread_binding`]): vLLM's automatic binding wants one NUMA node per worker and refuses to
    start on a one-node machine.
    """
    from vllm.platforms import current_platform

    kwargs: dict[str, Any] = {}
    if current_platform.is_cpu():
        kwargs["gpu_memory_utilization"] = float(os.environ.get("LLAVA_NEXT_VIDEO_VLLM_MEMORY", "0.3"))
    kwargs.update(overrides)
    workers = int(kwargs.get("tensor_parallel_size", 1)) * int(kwargs.get("pipeline_parallel_size", 1))
    if current_platform.is_cpu() and workers > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_thread_binding(workers)
    return kwargs


def cpu_thread_binding(workers: int, cores: Sequence[int] | None = None) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` giving each of ``workers`` CPU workers its own cores.

    ``cores`` defaults to the cores this process may run on; they are split into ``workers``
    contiguous groups as evenly as possible (``"0-3|4-7"``; one core: ``"0|1"``).

    Raises:
        LlavaNextVideoError: fewer cores than workers (each worker needs at least one).
    """
    ids = sorted(cores if cores is not None else os.sched_getaffinity(0))
    if workers > len(ids):
        raise LlavaNextVideoError(
            f"{workers} vLLM CPU workers need at least {workers} cores; this process may use {len(ids)}"
        )
    groups, start = [], 0
    for rank in range(workers):
        size = len(ids) // workers + (rank < len(ids) % workers)
        group = ids[start : start + size]
        start += size
        contiguous = group == list(range(group[0], group[-1] + 1))
        groups.append(f"{group[0]}-{group[-1]}" if contiguous and size > 1 else ",".join(map(str, group)))
    return "|".join(groups)


def prompt_token_ids(processor: Any, text: str) -> tuple[list[int], bool]:
    """``text`` (a rendered chat) as the prompt ids vLLM gets, and whether special tokens were added.

    Tokenized as the transformers processor tokenizes a rendered chat: BOS added unless the template
    wrote it, and by the original LLaVA rule unless the processor says ``tokenization="transformers"``.
    Placeholders stay single tokens (vLLM expands them).
    """
    bos = processor.tokenizer.bos_token
    special = not (bos is not None and text.startswith(bos))
    if getattr(processor, "tokenization", "original") == "original":
        from ..tokenization import tokenize_like_original

        marks = [processor.image_token, processor.video_token]
        ids = tokenize_like_original(processor.tokenizer, text, marks, add_special_tokens=special)[
            "input_ids"
        ]
    else:
        ids = processor.tokenizer(text, add_special_tokens=special)["input_ids"]
    return list(ids), special


def prepare_prompt(
    processor: Any,
    prompt: str,
    *,
    video: str | None = None,
    images: Sequence[Any] = (),
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
) -> tuple[list[int], dict[str, Any]]:
    """vLLM's inputs for one question: (prompt token ids, ``multi_modal_data``).

    The prompt is the checkpoint's chat template over [`build_messages`], tokenized by
    :func:`prompt_token_ids`; the video is sampled by our video processor and handed over as a
    ``(T, H, W, 3)`` uint8 array, so vLLM sees the frames and tokens transformers sees. ``images``
    are paths/URLs or PIL images.

    Raises:
        ContextLengthError: the prompt and its frames do not fit the model's context (checked by
            the transformers processor, before any engine work).
    """
    from ..image_processing import load_image_checked

    text = processor.apply_chat_template(
        build_messages(prompt, video=video is not None, num_images=len(images)),
        add_generation_prompt=True,
        tokenize=False,
    )
    media: dict[str, Any] = {}
    if images:
        media["image"] = [load_image_checked(i) if isinstance(i, str | os.PathLike) else i for i in images]
    if video is not None:
        (clip,) = processor.video_processor.load_clips(
            video, num_frames=num_frames, fps=fps, max_frames=max_frames
        )
        media["video"] = clip.permute(0, 2, 3, 1).numpy()  # (T, H, W, 3) uint8, used as given
    prompt_ids, special = prompt_token_ids(processor, text)
    # the transformers processor refuses a prompt the context cannot hold (ContextLengthError, saying
    # how many frames would fit) before an engine is started for nothing
    videos = [media["video"]] if video is not None else None
    processor(text=text, images=media.get("image"), videos=videos, add_special_tokens=special)
    return prompt_ids, media


def generate_one(
    model_path: str,
    prompt: str,
    *,
    video: str | None = None,
    images: Sequence[str] = (),
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    max_new_tokens: int = 64,
    dtype: str = "float32",
    tensor_parallel_size: int = 1,
    pipeline_parallel_size: int = 1,
) -> str:
    """Answer ``prompt`` about ``video`` and/or ``images`` with vLLM (greedy), return the text.

    Args:
        model_path: checkpoint folder (our format).
        prompt: the question.
        video: video path or URL (decoded by ``video_io``; frames sampled with ``num_frames``, or
            ``fps`` bounded by ``max_frames``, defaulting to the checkpoint's processor settings).
        images: image paths or URLs.
        max_new_tokens: generation budget.
        dtype: ``float32`` (exact parity with transformers), ``bfloat16`` or ``float16``.
        tensor_parallel_size, pipeline_parallel_size: vLLM's ``LLM`` arguments (workers that split
            each layer / the stack of layers); the answer is the same as with one worker.

    Raises:
        LlavaNextVideoError: nothing to ask about; ``VideoLoadError`` for unreadable videos;
        ``ContextLengthError`` when the prompt and its frames do not fit the model's context.
    """
    if video is None and not images:
        raise LlavaNextVideoError("give a video or at least one image to ask about")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout carries only the answer
    from vllm import LLM, SamplingParams

    from ..processing import LlavaNextVideoAnyResProcessor, register_auto_classes

    register_auto_classes()
    processor = LlavaNextVideoAnyResProcessor.from_pretrained(model_path)
    prompt_ids, media = prepare_prompt(
        processor, prompt, video=video, images=images, num_frames=num_frames, fps=fps, max_frames=max_frames
    )
    llm = LLM(
        **engine_kwargs(
            model=str(model_path),
            dtype=dtype,
            limit_mm_per_prompt={"image": len(images), "video": int(video is not None)},
            tensor_parallel_size=tensor_parallel_size,
            pipeline_parallel_size=pipeline_parallel_size,
        )
    )
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    try:
        (out,) = llm.generate(
            {"prompt_token_ids": prompt_ids, "multi_modal_data": media}, params, use_tqdm=False
        )
    finally:
        llm.llm_engine.engine_core.shutdown()  # free the engine processes now, not at interpreter exit
    return out.outputs[0].text.strip()


__all__ = [
    "build_messages",
    "cpu_thread_binding",
    "engine_kwargs",
    "generate_one",
    "prepare_prompt",
    "prompt_token_ids",
]
