"""The processor of LLaVA-NeXT-Video (AnyRes): image processor + video processor + tokenizer.

[`LlavaNextVideoAnyResProcessor`] expands every ``<image>``/``<video>`` placeholder to exactly the
number of features the model produces (the arithmetic lives in [`visual_tokens`](visual_tokens.py) only), refuses
prompts longer than the model's context (never truncates) and says what would fit; it tokenizes like
the original LLaVA code by default ([`tokenization.tokenize_like_original`]). The image and video
processors are in ``image_processing`` and ``video_processing``.

Notes on transformers 5.19 machinery (why the class looks the way it does):

* ``ProcessorMixin.check_argument_for_proper_class`` looks up ``transformers.VideoProcessorMixin``,
  which is not exported, then walks ``transformers.VIDEO_PROCESSOR_MAPPING`` (a dummy without
  torchvision: AttributeError) and registries whose values are backend dicts (AttributeError
  ``'dict' object has no attribute '__name__'``): the processor checks its video processor itself.
* ``ProcessorMixin.apply_chat_template`` does not load videos: it collects the ``video``/``url``/
  ``path`` values of ``{"type": "video"}`` blocks (and ``image``/``url``/``path``/``base64`` of image
  blocks), one list per conversation, renders the template and calls ``self(text=..., images=...,
  videos=..., **processor_kwargs)``. Our ``__call__`` flattens those lists and decodes files with
  ``video_io.load_video`` (never transformers' torchcodec loader).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
)
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, TextKwargs
from transformers.video_processing_utils import VideoProcessorMixin

from .errors import ContextLengthError, PlaceholderMismatchError
from .image_processing import (
    SIGLIP_MEAN,
    SIGLIP_STD,
    LlavaNextVideoAnyResImageProcessor,
    flatten_images,
)
from .rope import context_overflow_message
from .tokenization import TOKENIZATION_MODES, save_sentencepiece_model, tokenize_batch_like_original
from .video_inputs import flatten_videos
from .video_processing import LlavaNextVideoAnyResVideoProcessor, LlavaNextVideoAnyResVideoProcessorKwargs
from .visual_tokens import NEWLINE_POSITIONS, POOL_MODES, num_image_tokens, num_video_tokens

__all__ = [
    "LlavaNextVideoAnyResImageProcessor",
    "LlavaNextVideoAnyResProcessor",
    "LlavaNextVideoAnyResVideoProcessor",
    "register_auto_classes",
]


class LlavaNextVideoAnyResTextKwargs(TextKwargs, total=False):
    """Tokenizer kwargs plus ``tokenization`` (``"original"``/``"transformers"``)."""

    tokenization: str | None


class LlavaNextVideoAnyResProcessorKwargs(ProcessingKwargs, total=False):
    """Per-modality kwargs of [`LlavaNextVideoAnyResProcessor`] for ``ProcessorMixin._merge_kwargs``."""

    text_kwargs: LlavaNextVideoAnyResTextKwargs
    videos_kwargs: LlavaNextVideoAnyResVideoProcessorKwargs
    _defaults = {"text_kwargs": {"padding": True}}


# `from __future__ import annotations` leaves ForwardRefs; _merge_kwargs reads the classes themselves
LlavaNextVideoAnyResProcessorKwargs.__annotations__["text_kwargs"] = LlavaNextVideoAnyResTextKwargs
LlavaNextVideoAnyResProcessorKwargs.__annotations__["videos_kwargs"] = (
    LlavaNextVideoAnyResVideoProcessorKwargs
)


def _size_field(size: Any, key: str) -> int:
    """``size.key`` for a ``SizeDict`` or ``size[key]`` for a plain dict (as saved in JSON or set by users)."""
    return int(size[key] if isinstance(size, dict) else getattr(size, key))


def _is_text(x: Any) -> bool:
    return isinstance(x, str) or (isinstance(x, (list, tuple)) and all(isinstance(t, str) for t in x))


class LlavaNextVideoAnyResProcessor(ProcessorMixin):
    r"""Processor of LLaVA-NeXT-Video (AnyRes): image processor + video processor + tokenizer.

    Every ``<image>`` placeholder becomes ``visual_tokens.num_image_tokens(h, w, ...)`` tokens and every
    ``<video>`` ``visual_tokens.num_video_tokens(T, ...)`` tokens, in order of appearance across the batch.

    Args:
        image_processor: [`LlavaNextVideoAnyResImageProcessor`].
        video_processor: [`LlavaNextVideoAnyResVideoProcessor`].
        tokenizer: the language model's tokenizer (must know ``image_token`` and ``video_token``).
        chat_template: Jinja chat template (defaults to the tokenizer's).
        patch_size: the vision tower's patch size (14 for CLIP-L/14-336).
        vision_feature_select_strategy: ``"default"`` drops the CLS feature, ``"full"`` keeps it.
        num_additional_image_tokens: features the tower adds before the patches (1 for CLIP's CLS,
            0 for SigLIP); an image counts it only with strategy ``"full"``.
        spatial_pool_stride / spatial_pool_mode / video_newline_position: the video token layout
            (see ``rope``).
        context_length: positions the model can use at its RoPE factor (``None``: no length check).
        original_context_length: the context the LLM was trained with (defaults to ``context_length``).
        image_token / video_token: the placeholder strings.
        tokenization: ``"original"`` (default) tokenizes the text between media placeholders piece by
            piece, as the original LLaVA code that the weights were trained with
            ([`tokenize_like_original`]); ``"transformers"`` tokenizes each prompt in one call, as
            transformers' own LLaVA processors. Both agree for byte-level BPE tokenizers (Qwen);
            SentencePiece tokenizers (Vicuna/Llama-2, Mistral, Yi) differ. A call may override it.
    """

    def __init__(
        self,
        image_processor: LlavaNextVideoAnyResImageProcessor | None = None,
        video_processor: LlavaNextVideoAnyResVideoProcessor | None = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        patch_size: int = 14,
        vision_feature_select_strategy: str = "default",
        num_additional_image_tokens: int = 1,
        spatial_pool_stride: int = 2,
        spatial_pool_mode: str = "average",
        video_newline_position: str = "no_token",
        context_length: int | None = None,
        original_context_length: int | None = None,
        image_token: str = "<image>",
        video_token: str = "<video>",
        tokenization: str = "original",
        **kwargs: Any,
    ) -> None:
        if vision_feature_select_strategy not in ("default", "full"):
            raise ValueError(
                f"vision_feature_select_strategy must be 'default' or 'full', got {vision_feature_select_strategy!r}"
            )
        if num_additional_image_tokens not in (0, 1):
            raise ValueError(f"num_additional_image_tokens must be 0 or 1, got {num_additional_image_tokens}")
        if video_newline_position not in NEWLINE_POSITIONS:
            raise ValueError(
                f"video_newline_position must be one of {NEWLINE_POSITIONS}, got {video_newline_position!r}"
            )
        self.patch_size = int(patch_size)
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.num_additional_image_tokens = int(num_additional_image_tokens)
        self.spatial_pool_stride = int(spatial_pool_stride)
        if spatial_pool_mode not in POOL_MODES:
            raise ValueError(f"spatial_pool_mode must be one of {POOL_MODES}, got {spatial_pool_mode!r}")
        self.spatial_pool_mode = spatial_pool_mode
        self.video_newline_position = video_newline_position
        self.context_length = None if context_length is None else int(context_length)
        self.original_context_length = (
            self.context_length if original_context_length is None else int(original_context_length)
        )
        self.image_token = image_token
        self.video_token = video_token
        if tokenization not in TOKENIZATION_MODES:
            raise ValueError(f"tokenization must be one of {TOKENIZATION_MODES}, got {tokenization!r}")
        self.tokenization = tokenization
        if chat_template is None and tokenizer is not None:
            chat_template = getattr(tokenizer, "chat_template", None)
        super().__init__(image_processor, video_processor, tokenizer, chat_template=chat_template)
        self.image_token_id = self._token_id(image_token)
        self.video_token_id = self._token_id(video_token)

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or (
            token_id == self.tokenizer.unk_token_id and token != self.tokenizer.unk_token
        ):
            raise ValueError(f"the tokenizer has no {token!r} token; add it as a special token first")
        return int(token_id)

    def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
        # transformers looks for `transformers.VideoProcessorMixin` (not exported), then walks a dummy
        # VIDEO_PROCESSOR_MAPPING and dict-valued registries: both raise. Check the class here.
        if argument_name == "video_processor":
            if not isinstance(argument, VideoProcessorMixin):
                raise TypeError(
                    f"video_processor must be a VideoProcessorMixin, got {type(argument).__name__}"
                )
            return VideoProcessorMixin
        return super().check_argument_for_proper_class(argument_name, argument)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_model_config(cls, config: Any, tokenizer: Any, **kwargs: Any) -> LlavaNextVideoAnyResProcessor:
        """The processor matching a [`LlavaNextVideoAnyResConfig`]: tiles, frames, token layout, context.

        ``kwargs`` may override ``num_frames``/``fps``/``max_frames`` (video processor) and any
        argument of ``__init__`` (e.g. ``chat_template``).
        """
        vision = config.vision_config
        image_size = int(vision.image_size)
        siglip = "siglip" in getattr(vision, "model_type", "")
        mean, std = (SIGLIP_MEAN, SIGLIP_STD) if siglip else (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
        pixels = {
            "size": {"shortest_edge": image_size},
            "crop_size": {"height": image_size, "width": image_size},
            "image_mean": list(mean),
            "image_std": list(std),
        }
        image_processor = LlavaNextVideoAnyResImageProcessor(
            image_grid_pinpoints=[list(p) for p in config.image_grid_pinpoints], **pixels
        )
        frames = {
            "num_frames": kwargs.pop("num_frames", config.num_frames),
            "fps": kwargs.pop("fps", None),
            "max_frames": kwargs.pop("max_frames", config.max_frames),
        }
        video_processor = LlavaNextVideoAnyResVideoProcessor(**pixels, **frames)

        def token(token_id: int, default: str) -> str:
            name = tokenizer.convert_ids_to_tokens(int(token_id)) if token_id is not None else None
            return name if isinstance(name, str) else default

        settings = {
            "patch_size": int(vision.patch_size),
            "vision_feature_select_strategy": config.vision_feature_select_strategy,
            "num_additional_image_tokens": int(config.vision_has_cls),
            "spatial_pool_stride": int(config.spatial_pool_stride),
            "spatial_pool_mode": config.spatial_pool_mode,
            "video_newline_position": config.video_newline_position,
            "context_length": int(config.context_length),
            "original_context_length": int(config.trained_context_length),
            "image_token": token(config.image_token_id, "<image>"),
            "video_token": token(config.video_token_id, "<video>"),
        }
        settings.update(kwargs)
        return cls(image_processor, video_processor, tokenizer, **settings)

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """``ProcessorMixin.save_pretrained``, plus the tokenizer's SentencePiece model (``tokenizer.model``)
        when it has one: the original tokenization rule encodes text with it."""
        out = super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("push_to_hub"):
            save_sentencepiece_model(self.tokenizer, save_directory)
        return out

    # ---------------------------------------------------------------- token math (via visual_tokens.py)
    def video_token_kwargs(self) -> dict[str, Any]:
        """The arguments of ``visual_tokens.num_video_tokens`` this processor implies."""
        return {
            "image_size": _size_field(self.video_processor.crop_size, "height"),
            "patch_size": self.patch_size,
            "stride": self.spatial_pool_stride,
            "mode": self.spatial_pool_mode,
            "newline_position": self.video_newline_position,
        }

    def num_video_tokens(self, num_frames: int) -> int:
        """``<video>`` tokens of a clip of ``num_frames`` frames."""
        return num_video_tokens(int(num_frames), **self.video_token_kwargs())

    def num_image_tokens(self, height: int, width: int) -> int:
        """``<image>`` tokens of an image of ``height`` x ``width`` pixels."""
        return num_image_tokens(
            int(height),
            int(width),
            image_size=_size_field(self.image_processor.crop_size, "height"),
            patch_size=self.patch_size,
            grid_pinpoints=self.image_processor.image_grid_pinpoints,
            keeps_cls=self.vision_feature_select_strategy == "full" and self.num_additional_image_tokens > 0,
        )

    def _get_num_multimodal_tokens(
        self,
        image_sizes: Sequence[Sequence[int]] | None = None,
        video_num_frames: Sequence[int] | None = None,
        **_: Any,
    ) -> Any:
        """Placeholder counts per item without processing pixels (the transformers/vLLM helper)."""
        from transformers.processing_utils import MultiModalData

        data: dict[str, Any] = {}
        if image_sizes is not None:
            data["num_image_tokens"] = [self.num_image_tokens(h, w) for h, w in image_sizes]
            data["num_image_patches"] = [1] * len(image_sizes)
        if video_num_frames is not None:
            data["num_video_tokens"] = [self.num_video_tokens(t) for t in video_num_frames]
        return MultiModalData(**data)

    # ---------------------------------------------------------------- call
    def __call__(  # type: ignore[override]
        self,
        text: str | list[str] | None = None,
        images: Any = None,
        videos: Any = None,
        audio: Any = None,
        *,
        num_frames: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        return_tensors: str | None = "pt",
        padding: bool | str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Tokenize prompts and process their media, expanding each placeholder to its token count.

        Args:
            text: a prompt or a list of prompts with ``<image>``/``<video>`` placeholders.
            images: images (PIL, arrays, paths/URLs) in any nesting, in placeholder order.
            videos: videos (paths/URLs/bytes, (T, H, W, 3) arrays/tensors, lists of frames) in any
                nesting, in placeholder order.
            num_frames / fps / max_frames: frame sampling for this call (see the video processor).
            return_tensors: ``"pt"`` (default), ``"np"`` or ``None`` (lists for the text side).
            padding: tokenizer padding (default ``True``: to the longest prompt, on the tokenizer's
                ``padding_side``).
            kwargs: merged as transformers' processors do (``ProcessorMixin._merge_kwargs``): flat
                kwargs go to every modality that accepts them (``padding_side``, ``max_length``,
                ``add_special_tokens``, ``return_mm_token_type_ids``, ``tokenization`` (``"original"``/
                ``"transformers"``, see the class docstring) to the tokenizer;
                ``do_sample_frames``, ``source_fps``, ``video_metadata``, ``return_metadata`` and
                pixel settings to the video processor; image settings to the image processor), or
                per modality as ``text_kwargs``/``images_kwargs``/``videos_kwargs`` dicts; the
                tokenizer's own defaults (``padding_side``, ``max_length``) apply when not given.

        Returns:
            ``input_ids``, ``attention_mask`` (with text), ``pixel_values`` + ``image_sizes`` (with
            images), ``pixel_values_videos`` + ``video_num_frames`` (with videos).

        Raises:
            PlaceholderMismatchError: the placeholders and the media given differ in number.
            ContextLengthError: a prompt (after expansion) is longer than ``context_length``.
            ValueError: the same kwarg given flat and in a ``*_kwargs`` dict, or ``truncation``.
        """
        if audio is not None:
            raise ValueError(f"{type(self).__name__} does not take audio")
        if text is not None and not _is_text(text) and (images is None or _is_text(images)):
            text, images = images, text  # images passed first, positionally (transformers' order)
        for key, value in (("num_frames", num_frames), ("fps", fps), ("max_frames", max_frames)):
            if value is not None:
                kwargs[key] = value
        if padding is not None:
            kwargs["padding"] = padding
        text_kwargs, images_kwargs, videos_kwargs = self._split_kwargs(kwargs)
        if text_kwargs.pop("truncation", None) not in (None, False):
            raise ValueError(
                "truncation is not supported: it would cut visual tokens; shorten the prompt instead"
            )
        padding = text_kwargs.pop("padding", True)
        return_replacement_offsets = text_kwargs.pop("return_text_replacement_offsets", False)
        return_mm_token_type_ids = text_kwargs.pop("return_mm_token_type_ids", False)

        data: dict[str, Any] = {}
        image_list = flatten_images(images)
        image_replacements: list[str] = []
        image_token_counts: list[int] = []
        if image_list:
            out = self.image_processor(image_list, return_tensors=return_tensors, **images_kwargs)
            data.update(out)
            sizes = out["image_sizes"]
            sizes = sizes.tolist() if hasattr(sizes, "tolist") else [list(s) for s in sizes]
            image_token_counts = [self.num_image_tokens(h, w) for h, w in sizes]
            image_replacements = [self.image_token * n for n in image_token_counts]

        video_frames: list[int] = []
        video_replacements: list[str] = []
        if videos is not None and flatten_videos(videos):
            out = self.video_processor(
                videos, return_tensors="np" if return_tensors == "np" else "pt", **videos_kwargs
            )
            data.update(out)
            video_frames = [int(t) for t in out["video_num_frames"].tolist()]
            video_replacements = [self.video_token * self.num_video_tokens(t) for t in video_frames]

        if text is None:
            return BatchFeature(data=data, tensor_type=return_tensors)
        prompts = [text] if isinstance(text, str) else list(text)
        image_counts = [p.count(self.image_token) for p in prompts]
        video_counts = [p.count(self.video_token) for p in prompts]
        for name, counts, given in (
            ("image", image_counts, len(image_replacements)),
            ("video", video_counts, len(video_replacements)),
        ):
            if sum(counts) != given:
                token = self.image_token if name == "image" else self.video_token
                raise PlaceholderMismatchError(
                    f"the text has {sum(counts)} {token} placeholder(s) (per prompt: {counts}) but {given} "
                    f"{name}(s) were given; use exactly one {token} per {name}, in order"
                )

        expanded, offsets = self.get_text_with_replacements(prompts, image_replacements, video_replacements)
        keep_mask = text_kwargs.pop("return_attention_mask", True)
        tokenization = text_kwargs.pop("tokenization", None) or self.tokenization
        if tokenization not in TOKENIZATION_MODES:
            raise ValueError(f"tokenization must be one of {TOKENIZATION_MODES}, got {tokenization!r}")
        if tokenization == "original":
            encoded = tokenize_batch_like_original(
                self.tokenizer, [self.image_token, self.video_token], expanded, padding, text_kwargs
            )
        else:
            encoded = self.tokenizer(
                expanded,
                padding=padding,
                truncation=False,
                return_tensors=None,
                return_attention_mask=True,
                **text_kwargs,
            )
        self._check_lengths(encoded, image_counts, video_counts, image_token_counts, video_frames)
        if not keep_mask:
            del encoded["attention_mask"]
        if return_mm_token_type_ids:
            encoded["mm_token_type_ids"] = self.create_mm_token_type_ids(encoded["input_ids"])
        data = {**encoded, **data}
        if return_replacement_offsets:
            data["text_replacement_offsets"] = offsets
        if isinstance(text, str) and return_tensors is None:
            data = {k: v[0] if k in encoded else v for k, v in data.items()}
        return BatchFeature(
            data=data, tensor_type=return_tensors, skip_tensor_conversion=self.skip_tensor_conversion
        )

    def _split_kwargs(self, kwargs: dict[str, Any]) -> tuple[dict, dict, dict]:
        """Route flat and per-modality kwargs with transformers' ``ProcessorMixin._merge_kwargs``.

        Priority: flat kwargs, then ``text_kwargs``/``images_kwargs``/``videos_kwargs``, then the
        tokenizer's init kwargs (``padding_side``, ``max_length``, ...), then the class defaults; a
        key given both flat and in its modality dict raises ``ValueError``.
        """
        kwargs = {k: v for k, v in kwargs.items() if k != "return_tensors"}
        merged = self._merge_kwargs(
            LlavaNextVideoAnyResProcessorKwargs,
            tokenizer_init_kwargs=getattr(self.tokenizer, "init_kwargs", None),
            **kwargs,
        )
        text_kwargs, images_kwargs, videos_kwargs = (
            {k: v for k, v in merged[name].items() if k != "return_tensors"}
            for name in ("text_kwargs", "images_kwargs", "videos_kwargs")
        )
        return text_kwargs, images_kwargs, videos_kwargs

    def _check_lengths(
        self,
        encoded: Any,
        image_counts: list[int],
        video_counts: list[int],
        image_tokens: list[int],
        video_frames: list[int],
    ) -> None:
        """Check the placeholder expansion survived tokenization and every prompt fits the context."""
        first_image = first_video = 0
        for i, ids in enumerate(encoded["input_ids"]):
            length = int(sum(encoded["attention_mask"][i]))
            frames = video_frames[first_video : first_video + video_counts[i]]
            n_video = sum(self.num_video_tokens(t) for t in frames)
            n_image = sum(image_tokens[first_image : first_image + image_counts[i]])
            first_image += image_counts[i]
            first_video += video_counts[i]
            ids_list = list(ids)
            if (
                ids_list.count(self.video_token_id) != n_video
                or ids_list.count(self.image_token_id) != n_image
            ):
                raise ValueError(
                    f"prompt {i}: the tokenizer did not keep {self.image_token!r}/{self.video_token!r} as single "
                    "tokens; add them as special tokens"
                )
            if self.context_length is not None and length > self.context_length:
                raise ContextLengthError(self._length_message(i, length, n_video, n_image, frames))

    def _length_message(self, index: int, length: int, n_video: int, n_image: int, frames: list[int]) -> str:
        """What overflowed, what would fit, and how to make it fit (``rope.context_overflow_message``)."""
        assert self.context_length is not None
        return context_overflow_message(
            index,
            length,
            video_tokens=n_video,
            image_tokens=n_image,
            frames=frames,
            context_length=self.context_length,
            trained_context_length=self.original_context_length or self.context_length,
            video_kwargs=self.video_token_kwargs(),
        )

    # ---------------------------------------------------------------- chat template
    def apply_chat_template(self, conversation: Any, chat_template: str | None = None, **kwargs: Any) -> Any:
        """transformers' ``apply_chat_template``; ``num_frames``/``fps``/``max_frames``/``padding_side``
        may be passed directly (they go to ``__call__``, where videos are decoded by ``video_io``)."""
        processor_kwargs = dict(kwargs.pop("processor_kwargs", None) or {})
        for key in (
            "num_frames",
            "fps",
            "max_frames",
            "do_sample_frames",
            "padding",
            "padding_side",
            "source_fps",
        ):
            if key in kwargs:
                processor_kwargs[key] = kwargs.pop(key)
        return super().apply_chat_template(
            conversation, chat_template=chat_template, processor_kwargs=processor_kwargs, **kwargs
        )

    @property
    def model_input_names(self) -> list[str]:
        return [
            "input_ids",
            "attention_mask",
            "pixel_values",
            "image_sizes",
            "pixel_values_videos",
            "video_num_frames",
        ]


# ============================================================================ registration


def register_auto_classes() -> None:
    """Register the three classes with ``AutoImageProcessor``/``AutoVideoProcessor``/``AutoProcessor``.

    Idempotent, needs no torchvision. ``AutoVideoProcessor`` is taken from its module: the name
    exported by ``transformers`` is a dummy without torchvision. The image and video processors are
    registered under every backend key (``torchvision`` is the default key asked for by
    ``AutoVideoProcessor``, ``pil`` the one ``AutoImageProcessor`` picks without torchvision).
    """
    from transformers import AutoConfig, AutoImageProcessor, AutoProcessor
    from transformers.models.auto.video_processing_auto import AutoVideoProcessor

    from .configuration import LlavaNextVideoAnyResConfig

    AutoConfig.register(LlavaNextVideoAnyResConfig.model_type, LlavaNextVideoAnyResConfig, exist_ok=True)
    image = LlavaNextVideoAnyResImageProcessor
    video = LlavaNextVideoAnyResVideoProcessor
    AutoImageProcessor.register(
        LlavaNextVideoAnyResConfig,
        image_processor_classes={"pil": image, "torchvision": image},
        exist_ok=True,
    )
    AutoVideoProcessor.register(
        LlavaNextVideoAnyResConfig,
        video_processor_classes={"torchvision": video, "torch": video, "pil": video},
        exist_ok=True,
    )
    AutoProcessor.register(LlavaNextVideoAnyResConfig, LlavaNextVideoAnyResProcessor, exist_ok=True)
