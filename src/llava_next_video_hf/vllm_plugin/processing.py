"""vLLM's multimodal processing for LLaVA-NeXT-Video (AnyRes): processing info, dummy inputs, processor.

* [`LlavaNextVideoAnyResProcessingInfo`]: token counts, always from the checkpoint's config
  (``config.num_video_tokens(T)`` / ``config.num_image_tokens(h, w)``, i.e. ``visual_tokens.py``).
* [`LlavaNextVideoAnyResDummyInputsBuilder`]: the largest video (frames that fit the sequence) and
  the largest AnyRes image, for memory profiling.
* [`LlavaNextVideoAnyResMultiModalProcessor`]: vLLM tokenizes the prompt and expands placeholders
  itself (by the original tokenization rule: [`use_original_tokenization`]); the media go through
  our own torchvision-free image/video processors so vLLM and transformers see identical pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import torch
from transformers import BatchFeature
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import ImageSize, MultiModalDataItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
)

from ..configuration import LlavaNextVideoAnyResConfig
from ..errors import ContextLengthError, ImageLoadError
from ..layout import drop_padding, num_image_crops
from . import video_loader

#: Keyword arguments of our processors that ``--mm-processor-kwargs``/``mm_processor_kwargs`` may set.
VIDEO_KWARGS = ("num_frames", "fps", "max_frames", "do_sample_frames", "source_fps")


@lru_cache(maxsize=8)
def _load_processor(model: str, revision: str | None) -> Any:
    """Our ``LlavaNextVideoAnyResProcessor`` for a checkpoint (cached per process)."""
    from ..processing import LlavaNextVideoAnyResProcessor, register_auto_classes

    register_auto_classes()
    return LlavaNextVideoAnyResProcessor.from_pretrained(model, revision=revision)


def tokens_per_frame(config: LlavaNextVideoAnyResConfig) -> int:
    """Tokens each frame yields in the encoder (newline policies ``frame``/``grid`` included).

    ``num_video_tokens(2) - num_video_tokens(1)``: the per-frame slope of the one token function.
    """
    return config.num_video_tokens(2) - config.num_video_tokens(1)


def flatten_mm_kwargs(kwargs: Mapping[str, object]) -> dict[str, object]:
    """Flat processor kwargs: ``videos_kwargs``/``images_kwargs`` scopes merged into the top level."""
    flat = {k: v for k, v in kwargs.items() if not k.endswith("_kwargs")}
    for scope in ("images_kwargs", "videos_kwargs"):
        flat.update(kwargs.get(scope) or {})  # type: ignore[arg-type]
    return flat


def use_original_tokenization(tokenizer: Any, placeholders: Sequence[str]) -> None:
    """Make vLLM's ``tokenizer`` give texts with media placeholders the original LLaVA ids.

    vLLM renders chat templates and tokenizes prompts itself, with the tokenizer object it also hands
    to our multimodal processor, before the processor sees any token. So the processor gives that
    object (once; idempotent) a subclass whose ``__call__``/``encode`` tokenize a text containing
    ``placeholders`` by [`tokenize_like_original`] — the rule our transformers processor applies by
    default — and leave every other text (and batches) to the tokenizer, except when the checkpoint
    ships a SentencePiece model (``tokenizer.model``): then every single text is encoded by it, as the
    original's slow tokenizer and our transformers processor do (runs of whitespace differ otherwise). vLLM's own tokenizer proxy
    is built the same way (``vllm.tokenizers.hf.get_cached_tokenizer``). Chat requests (a template
    that renders a literal BOS) and raw prompts both get the BOS once, from the tokenizer.
    """
    from transformers import BatchEncoding

    from ..tokenization import sentencepiece_text, tokenize_like_original

    base = type(tokenizer)
    if getattr(base, "_llava_original_tokenization", False):
        return
    marks = tuple(placeholders)

    def original(tok: Any, text: Any, kwargs: Mapping[str, Any]) -> dict[str, list] | None:
        if not isinstance(text, str) or kwargs.get("text_pair"):
            return None
        if not any(m in text for m in marks) and sentencepiece_text(tok) is None:
            return None
        out = tokenize_like_original(
            tok,
            text,
            marks,
            add_special_tokens=bool(kwargs.get("add_special_tokens", True)),
            return_offsets_mapping=bool(kwargs.get("return_offsets_mapping", False)),
        )
        max_length = kwargs.get("max_length")
        if kwargs.get("truncation") and max_length is not None and len(out["input_ids"]) > max_length:
            # vLLM asks for max_input_tokens + 1 so that its own length check still fails as expected
            keep = slice(-max_length, None) if tok.truncation_side == "left" else slice(None, max_length)
            out = {k: v[keep] for k, v in out.items()}
        return out

    class OriginalTokenization(base):  # type: ignore[misc, valid-type]
        _llava_original_tokenization = True

        def __call__(self, text: Any = None, *args: Any, **kwargs: Any) -> Any:
            out = None if args else original(self, text, kwargs)
            if out is None:
                return super().__call__(text, *args, **kwargs)
            data = {**out, "attention_mask": [1] * len(out["input_ids"])}
            return BatchEncoding(data, tensor_type=kwargs.get("return_tensors"))

        def encode(self, text: Any, *args: Any, **kwargs: Any) -> Any:
            out = None if args else original(self, text, kwargs)
            return super().encode(text, *args, **kwargs) if out is None else out["input_ids"]

        def __reduce__(self) -> Any:
            # vLLM copies tokenizers by their reduction (its thread pool deep-copies the renderer's
            # tokenizer, whose vLLM proxy rebuilds a plain one): copies must keep this rule too
            return _restore_original_tokenization, (super().__reduce__(), marks)

    OriginalTokenization.__name__ = OriginalTokenization.__qualname__ = base.__name__
    tokenizer.__class__ = OriginalTokenization


def _restore_original_tokenization(reduced: Any, placeholders: Sequence[str]) -> Any:
    """Rebuild a tokenizer from its base class' reduction and give it the original rule again."""
    rebuild, args, *rest = reduced
    tokenizer = rebuild(*args)
    if rest and rest[0] is not None:
        if hasattr(tokenizer, "__setstate__"):
            tokenizer.__setstate__(rest[0])
        else:
            tokenizer.__dict__.update(rest[0])
    use_original_tokenization(tokenizer, placeholders)
    return tokenizer


# ============================================================================ processing info


class LlavaNextVideoAnyResProcessingInfo(BaseProcessingInfo):
    """What vLLM needs to know about the checkpoint's media: limits, sizes and token counts."""

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        # the API server builds this before serving: our video loader's frame limit and defaults
        self.max_frames_per_video = video_loader.configure_for_model(
            ctx.model_config, self.get_hf_config(), self.get_hf_processor().video_processor
        )

    def get_hf_config(self) -> LlavaNextVideoAnyResConfig:
        return self.ctx.get_hf_config(LlavaNextVideoAnyResConfig)

    def get_hf_processor(self, **kwargs: object) -> Any:
        """Our processor as saved with the checkpoint (frame defaults, pixel settings, tokens)."""
        model_config = self.ctx.model_config
        return _load_processor(model_config.model, model_config.revision)

    def get_supported_mm_processor_kwargs(self) -> dict[str, set[str]]:
        return {"text_kwargs": set(), "images_kwargs": set(), "videos_kwargs": set(VIDEO_KWARGS)}

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None, "video": None}

    def get_num_video_tokens(self, num_frames: int) -> int:
        """``<video>`` tokens of a clip of ``num_frames`` frames (``visual_tokens.num_video_tokens``)."""
        return self.get_hf_config().num_video_tokens(num_frames)

    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        """``<image>`` tokens of an AnyRes image (``visual_tokens.num_image_tokens``)."""
        return self.get_hf_config().num_image_tokens(image_height, image_width)

    def get_image_size_with_most_features(self) -> ImageSize:
        """The grid pinpoint whose image costs the most tokens."""
        pinpoints = self.get_hf_config().image_grid_pinpoints
        height, width = max(
            pinpoints, key=lambda hw: self.get_num_image_tokens(image_width=hw[1], image_height=hw[0])
        )
        return ImageSize(width=width, height=height)

    def get_num_frames_with_most_features(self, seq_len: int, mm_counts: Mapping[str, int]) -> int:
        """Frames per video when ``mm_counts["video"]`` videos share ``seq_len`` tokens (at least 1).

        Never more than the server's frame limit (``max_frames_per_video``, which keeps one text
        token): profiling must use a video a request could send, or the dummy itself is refused.
        """
        videos = max(mm_counts.get("video", 0), 1)
        config = self.get_hf_config()
        frames = 0
        while videos * config.num_video_tokens(frames + 1) <= seq_len:
            frames += 1
        return max(min(frames, self.max_frames_per_video), 1)

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        """Token counts of the dummy items, computed without processing them (fast start-up)."""
        size = self.get_image_size_with_most_features()
        return {
            "image": self.get_num_image_tokens(image_width=size.width, image_height=size.height),
            "video": self.get_num_video_tokens(self.get_num_frames_with_most_features(seq_len, mm_counts)),
        }


# ============================================================================ dummy inputs


class LlavaNextVideoAnyResDummyInputsBuilder(BaseDummyInputsBuilder[LlavaNextVideoAnyResProcessingInfo]):
    """Placeholders plus the largest image and the longest video, for memory profiling."""

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        processor = self.info.get_hf_processor()
        return processor.image_token * mm_counts.get("image", 0) + processor.video_token * mm_counts.get(
            "video", 0
        )

    def get_dummy_mm_data(
        self,
        seq_len: int,
        mm_counts: Mapping[str, int],
        mm_options: MultiModalDummyOptions,
    ) -> dict[str, Any]:
        image = self.info.get_image_size_with_most_features()
        side = self.info.get_hf_config().vision_config.image_size
        return {
            "image": self._get_dummy_images(
                width=image.width,
                height=image.height,
                num_images=mm_counts.get("image", 0),
                overrides=mm_options.get("image"),
            ),
            "video": self._get_dummy_videos(
                width=side,
                height=side,
                num_frames=self.info.get_num_frames_with_most_features(seq_len, mm_counts),
                num_videos=mm_counts.get("video", 0),
                overrides=mm_options.get("video"),
            ),
        }


# ============================================================================ processor


class LlavaNextVideoAnyResMultiModalProcessor(BaseMultiModalProcessor[LlavaNextVideoAnyResProcessingInfo]):
    """Media -> our pixel values (frames flattened into one buffer); placeholders -> token runs.

    Built before vLLM tokenizes any prompt: unless the checkpoint's processor says
    ``tokenization="transformers"``, it makes vLLM's tokenizer follow the original LLaVA rule
    ([`use_original_tokenization`]), so both engines feed the model the same ids.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tokenizer = self.info.ctx.tokenizer
        if tokenizer is None:  # skip_tokenizer_init: prompts arrive as ids
            return
        processor = self.info.get_hf_processor()
        if getattr(processor, "tokenization", "original") == "original":
            use_original_tokenization(tokenizer, [processor.image_token, processor.video_token])

    def _call_hf_processor(
        self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]
    ) -> BatchFeature:
        """Run our image and video processors on the media (vLLM has tokenized the prompt already).

        Outputs ``pixel_values`` (sum of crops, 3, S, S) + ``image_sizes`` + ``image_num_patches`` and
        ``pixel_values_videos`` (sum of frames, 3, S, S) + ``video_num_frames``.
        """
        processor = self.info.get_hf_processor()
        kwargs = flatten_mm_kwargs(self.info.ctx.get_merged_mm_kwargs(hf_kwargs))
        dtype = self.info.ctx.model_config.dtype
        out: dict[str, torch.Tensor] = {}
        images = hf_data.get("images")
        if images:
            from ..video_io import MAX_PIXELS

            for i, image in enumerate(images):  # the pixel limit of every other path (video_io's)
                size = getattr(image, "size", None)
                if isinstance(size, tuple) and len(size) == 2 and size[0] * size[1] > MAX_PIXELS:
                    raise ImageLoadError(
                        f"image {i}: {size[0]}x{size[1]} pixels exceeds the limit of {MAX_PIXELS} pixels"
                    )
            try:
                data = processor.image_processor(list(images), return_tensors="pt")
            except OSError as err:  # a truncated or corrupt image decoded lazily by PIL: the client's fault
                raise ImageLoadError(f"an image could not be decoded ({err})") from None
            sizes = data["image_sizes"].to(torch.int64)  # (B, 2) as (height, width)
            config = self.info.get_hf_config()
            crops = [num_image_crops(int(h), int(w), config) for h, w in sizes.tolist()]
            pixels = data["pixel_values"]  # (B, P_max, 3, S, S), zero-padded over crops
            out["pixel_values"] = drop_padding(pixels, crops).to(dtype)
            out["image_sizes"] = sizes
            out["image_num_patches"] = torch.tensor(crops, dtype=torch.int64)
        videos = hf_data.get("videos")
        if videos:
            video_kwargs = {k: kwargs[k] for k in VIDEO_KWARGS if kwargs.get(k) is not None}
            limit = self.info.max_frames_per_video
            if not any(k in video_kwargs for k in ("num_frames", "fps", "max_frames")):
                for i, video in enumerate(videos):
                    if len(video) > limit:  # refused before any float32 copy of its frames is made
                        raise ContextLengthError(
                            f"video {i} has {len(video)} frames; at most {limit} fit max_model_len="
                            f"{self.info.ctx.model_config.max_model_len}: sample fewer (num_frames)"
                        )
            elif "num_frames" not in video_kwargs:  # fps or all frames: within the limit
                asked = video_kwargs.get("max_frames")
                video_kwargs["max_frames"] = limit if asked is None else min(asked, limit)
            data = processor.video_processor(list(videos), return_tensors="pt", **video_kwargs)
            frames = data["video_num_frames"].to(torch.int64)  # (B,)
            pixels = data["pixel_values_videos"]  # (B, T_max, 3, S, S), zero-padded over frames
            out["pixel_values_videos"] = drop_padding(pixels, frames.tolist()).to(dtype)
            out["video_num_frames"] = frames
        return BatchFeature(out)

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        crops = hf_inputs.get("image_num_patches", torch.empty(0, dtype=torch.int64))
        frames = hf_inputs.get("video_num_frames", torch.empty(0, dtype=torch.int64))
        return {
            "pixel_values": MultiModalFieldConfig.flat_from_sizes("image", crops),
            "image_sizes": MultiModalFieldConfig.batched("image", keep_on_cpu=True),
            "image_num_patches": MultiModalFieldConfig.batched("image", keep_on_cpu=True),
            "pixel_values_videos": MultiModalFieldConfig.flat_from_sizes("video", frames),
            "video_num_frames": MultiModalFieldConfig.batched("video", keep_on_cpu=True),
        }

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        config = self.info.get_hf_config()

        def image_tokens(item_idx: int) -> list[int]:
            height, width = out_mm_kwargs["image"][item_idx]["image_sizes"].data.tolist()
            return [config.image_token_id] * config.num_image_tokens(int(height), int(width))

        def video_tokens(item_idx: int) -> list[int]:
            frames = int(out_mm_kwargs["video"][item_idx]["video_num_frames"].data)
            return [config.video_token_id] * config.num_video_tokens(frames)

        return [
            PromptReplacement(modality="image", target=[config.image_token_id], replacement=image_tokens),
            PromptReplacement(modality="video", target=[config.video_token_id], replacement=video_tokens),
        ]


# ============================================================================ model
# (vLLM's own llava.py has the same two helpers but imports pixtral, which needs torchvision)

__all__ = [
    "VIDEO_KWARGS",
    "LlavaNextVideoAnyResDummyInputsBuilder",
    "LlavaNextVideoAnyResMultiModalProcessor",
    "LlavaNextVideoAnyResProcessingInfo",
    "flatten_mm_kwargs",
    "tokens_per_frame",
    "use_original_tokenization",
]
