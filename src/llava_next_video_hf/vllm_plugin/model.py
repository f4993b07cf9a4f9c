"""LLaVA-NeXT-Video (AnyRes) as a vLLM model: processing info, dummy inputs, processor and the model.

Four small classes, as in vLLM's own ``model_executor/models/llava_next_video.py``:

* [`LlavaNextVideoAnyResProcessingInfo`]: token counts, always from the checkpoint's config
  (``config.num_video_tokens(T)`` / ``config.num_image_tokens(h, w)``, i.e. ``rope.py``).
* [`LlavaNextVideoAnyResDummyInputsBuilder`]: the largest video (frames that fit the sequence) and
  the largest AnyRes image, for memory profiling.
* [`LlavaNextVideoAnyResMultiModalProcessor`]: vLLM tokenizes the prompt and expands placeholders
  itself; the media go through our own torchvision-free image/video processors
  (``processing.py``) so vLLM and transformers see identical pixel values.
* [`LlavaNextVideoAnyResForConditionalGeneration`]: vLLM's CLIP/SigLIP tower and language model
  (tensor parallelism, quantization, paged attention), our projector, pooling and newline policy,
  and vLLM's encoder CUDA-graph protocol for videos.

Video data flow (shapes for the 7B: grid 24, stride 2, D 4096)::

    pixel_values_videos (sum_i T_i, 3, 336, 336)   one buffer of frames, video_num_frames (B,) on CPU
      -> vision tower, drop CLS          (N, 576, Dv)
      -> pool + projector (either order) (N, 144, D)
      -> per-frame newlines              (N, tokens_per_frame, D)   fixed per frame: graph friendly
      -> split per video, + one newline per video under ``one_token``  -> (num_video_tokens(T_i), D)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import BatchFeature
from vllm.config import VllmConfig
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.distributed import get_pp_group
from vllm.model_executor.layers.activation import get_act_fn
from vllm.model_executor.layers.linear import ColumnParallelLinear, RowParallelLinear
from vllm.model_executor.layers.quantization import QuantizationConfig
from vllm.model_executor.models.clip import CLIPVisionModel
from vllm.model_executor.models.interfaces import (
    MultiModalEmbeddings,
    SupportsEncoderCudaGraph,
    SupportsMultiModal,
    SupportsPP,
)
from vllm.model_executor.models.siglip import SiglipVisionModel
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    StageMissingLayer,
    WeightsMapper,
    get_layer_index,
    init_vllm_registered_model,
    maybe_prefix,
    no_init_weights,
)
from vllm.model_executor.models.vision import run_dp_sharded_vision_model
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import ImageSize, MultiModalDataItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
)
from vllm.sequence import IntermediateTensors

from ..configuration import LlavaNextVideoAnyResConfig
from ..errors import ContextLengthError, ImageLoadError
from ..layout import VisualTokenLayout, drop_padding, num_image_crops
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
    default — and leave every other text (and batches) to the tokenizer. vLLM's own tokenizer proxy
    is built the same way (``vllm.tokenizers.hf.get_cached_tokenizer``). Chat requests (a template
    that renders a literal BOS) and raw prompts both get the BOS once, from the tokenizer.
    """
    from transformers import BatchEncoding

    from ..tokenization import tokenize_like_original

    base = type(tokenizer)
    if getattr(base, "_llava_original_tokenization", False):
        return
    marks = tuple(placeholders)

    def original(tok: Any, text: Any, kwargs: Mapping[str, Any]) -> dict[str, list] | None:
        if not isinstance(text, str) or not any(m in text for m in marks) or kwargs.get("text_pair"):
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
        """``<video>`` tokens of a clip of ``num_frames`` frames (``rope.num_video_tokens``)."""
        return self.get_hf_config().num_video_tokens(num_frames)

    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        """``<image>`` tokens of an AnyRes image (``rope.num_image_tokens``)."""
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


def init_vision_tower(
    config: LlavaNextVideoAnyResConfig, quant_config: QuantizationConfig | None, prefix: str
) -> CLIPVisionModel | SiglipVisionModel:
    """vLLM's CLIP/SigLIP tower, built only up to the deepest ``vision_feature_layer`` (no post norm)."""
    vision, layers = config.vision_config, config.vision_feature_layer
    total = vision.num_hidden_layers
    depth = max(get_layer_index(i, total) for i in ([layers] if isinstance(layers, int) else layers))
    if "siglip" not in vision.model_type and "clip" not in vision.model_type:
        raise ValueError(f"unsupported vision tower {vision.model_type!r}: CLIP or SigLIP vision models only")
    tower_cls = SiglipVisionModel if "siglip" in vision.model_type else CLIPVisionModel
    return tower_cls(
        vision,
        quant_config=quant_config,
        num_hidden_layers_override=depth,
        require_post_norm=False,
        prefix=prefix,
    )


class LlavaNextVideoAnyResProjector(nn.Module):
    """Linear-act-Linear, names ``linear_1``/``linear_2`` as in HF: tensor-parallel (column then row),
    or replicated with ``disable_tp`` (``--mm-encoder-tp-mode data``: each rank projects its own items)."""

    def __init__(
        self,
        config: LlavaNextVideoAnyResConfig,
        quant_config: QuantizationConfig | None,
        prefix: str,
        disable_tp: bool = False,
    ):
        super().__init__()
        layers = config.vision_feature_layer
        in_dim = config.vision_config.hidden_size * (1 if isinstance(layers, int) else len(layers))
        dim, bias = config.text_config.hidden_size, config.multimodal_projector_bias
        self.linear_1 = ColumnParallelLinear(
            in_dim,
            dim,
            bias=bias,
            quant_config=quant_config,
            prefix=f"{prefix}.linear_1",
            disable_tp=disable_tp,
        )
        self.act = get_act_fn(config.projector_hidden_act)
        self.linear_2 = RowParallelLinear(
            dim, dim, bias=bias, quant_config=quant_config, prefix=f"{prefix}.linear_2", disable_tp=disable_tp
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.linear_1(features)
        hidden, _ = self.linear_2(self.act(hidden))
        return hidden


@MULTIMODAL_REGISTRY.register_processor(
    LlavaNextVideoAnyResMultiModalProcessor,
    info=LlavaNextVideoAnyResProcessingInfo,
    dummy_inputs=LlavaNextVideoAnyResDummyInputsBuilder,
)
class LlavaNextVideoAnyResForConditionalGeneration(
    VisualTokenLayout, nn.Module, SupportsMultiModal, SupportsPP, SupportsEncoderCudaGraph
):
    """LLaVA-NeXT-Video with AnyRes images, frame-as-tile videos and scaled RoPE, for vLLM.

    vLLM's own tower and language model; the token layout (pooling, newlines, AnyRes unpad) is
    [`VisualTokenLayout`], the very code of the transformers model.

    Weights load from our checkpoints (llava-hf names: ``model.vision_tower.*``,
    ``model.multi_modal_projector.*``, ``model.image_newline``, ``model.language_model.*``,
    ``lm_head.*``). Only the tower layers up to ``vision_feature_layer`` are built.

    Parallelism: under tensor parallelism the tower and projector are split like the language model
    (``--mm-encoder-tp-mode weights``, the default) or, with ``--mm-encoder-tp-mode data``, both are
    replicated and each rank runs the tower on its share of the frames/crops (gathered before the
    projector); vLLM's encoder CUDA-graph manager then hands each rank its own videos. Under
    pipeline parallelism only the first stage, which embeds the prompt, builds and loads the tower
    and projector; later stages hold placeholders and answer vLLM's encoder profiling with zero
    embeddings of the right shapes.
    """

    supports_encoder_tp_data = True

    packed_modules_mapping = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
    }
    hf_to_vllm_mapper = WeightsMapper(
        # transformers 5 saves towers flat (``vision_tower.encoder...``); older llava-hf files nest them
        orig_to_new_regex={
            re.compile(r"^model\.vision_tower\.(vision_model\.)?"): "vision_tower.vision_model."
        },
        orig_to_new_prefix={
            "model.language_model.": "language_model.model.",
            "model.multi_modal_projector.": "multi_modal_projector.",
            "model.image_newline": "image_newline",
            "lm_head.": "language_model.lm_head.",
        },
    )

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return "<image>"
        if modality.startswith("video"):
            return "<video>"
        raise ValueError(f"Only image and video inputs are supported, got {modality!r}")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config: LlavaNextVideoAnyResConfig = vllm_config.model_config.hf_config
        quant_config = vllm_config.quant_config
        self.config = config
        self.vllm_config = vllm_config
        layers = config.vision_feature_layer
        self.select_layers = None if isinstance(layers, int) else list(layers)
        self.tokens_per_frame = tokens_per_frame(config)
        self.configure_mm_token_handling(
            vocab_size=config.text_config.vocab_size,
            mm_token_ids=[config.image_token_id, config.video_token_id],
        )
        mm_config = vllm_config.model_config.multimodal_config
        self.encoder_data_parallel = mm_config is not None and mm_config.mm_encoder_tp_mode == "data"
        self.runs_vision = get_pp_group().is_first_rank  # the stage that embeds the prompt
        with self._mark_tower_model(vllm_config, {"image", "video"}):
            with self._vision_stage_only():
                self.vision_tower = init_vision_tower(
                    config, quant_config, maybe_prefix(prefix, "vision_tower")
                )
                self.multi_modal_projector = LlavaNextVideoAnyResProjector(
                    config,
                    quant_config,
                    maybe_prefix(prefix, "multi_modal_projector"),
                    disable_tp=self.encoder_data_parallel,
                )
            self.image_newline = nn.Parameter(torch.empty(config.text_config.hidden_size))  # (D,), tiny
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config,
                hf_config=config.text_config,
                prefix=maybe_prefix(prefix, "language_model"),
            )
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    def _vision_stage_only(self) -> Any:
        """Build normally on the first pipeline stage; elsewhere on ``meta``, as vLLM placeholders
        (``StageMissingLayer``: no memory, no weights loaded, an error if ever called)."""
        if self.runs_vision:
            return contextlib.nullcontext()
        return no_init_weights(self, lambda module: StageMissingLayer("vision_tower", module))

    # ---- vision -------------------------------------------------------------------------------
    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> selected tower features (N, L, Dv * layers), CLS kept when the tower has one.

        Under ``--mm-encoder-tp-mode data`` each tensor-parallel rank runs its slice of the N
        crops/frames and the slices are gathered: (N, L, Dv) on every rank, as with one worker.
        """
        pixels = pixel_values.to(self.vision_tower.dtype)
        if self.encoder_data_parallel:
            return run_dp_sharded_vision_model(pixels, self._tower)
        return self._tower(pixels)

    def _tower(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vision_tower(pixels, select_layers=self.select_layers, feature_select_strategy=None)

    def encode_frames(self, frames: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """[`VisualTokenLayout.encode_frames`]; zeros of its shape on stages without the tower."""
        if self.runs_vision:
            return super().encode_frames(frames, features)
        dim = self.config.text_config.hidden_size
        return frames.new_zeros(frames.shape[0], self.tokens_per_frame, dim)

    def embed_images(
        self, crops: torch.Tensor, image_sizes: list[tuple[int, int]], features: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """[`VisualTokenLayout.embed_images`]; zeros of its shapes on stages without the tower."""
        if self.runs_vision:
            return super().embed_images(crops, image_sizes, features)
        dim = self.config.text_config.hidden_size
        return [crops.new_zeros(self.config.num_image_tokens(h, w), dim) for h, w in image_sizes]

    def embed_videos(self, frames: torch.Tensor, num_frames: Sequence[int]) -> list[torch.Tensor]:
        """One buffer of frames (sum T_i, 3, S, S) + frames per video -> per-video embeddings."""
        return self.split_videos(self.encode_frames(frames), num_frames)

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        """Embeddings of the images and/or videos in ``kwargs``, one (tokens, D) tensor per item.

        vLLM batches items of one modality per call, in prompt order.
        """
        out: list[torch.Tensor] = []
        crops = kwargs.get("pixel_values")
        if crops is not None:
            sizes = [(int(h), int(w)) for h, w in _cpu_long(kwargs["image_sizes"]).tolist()]
            out.extend(self.embed_images(_frames_buffer(crops), sizes))
        frames = kwargs.get("pixel_values_videos")
        if frames is not None:
            counts = [int(n) for n in _cpu_long(kwargs["video_num_frames"]).tolist()]
            out.extend(self.embed_videos(_frames_buffer(frames), counts))
        return out

    # ---- language model -----------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor | IntermediateTensors:
        """Language model over the merged embeddings (vLLM embeds the prompt before calling this)."""
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(
            input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds
        )

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return AutoWeightsLoader(self).load_weights(weights, mapper=self.hf_to_vllm_mapper)

    # ---- SupportsEncoderCudaGraph (videos) ----------------------------------------------------
    # One frames buffer per token budget: a budget of B tokens holds B // tokens_per_frame frames,
    # zero-padded on replay. Images (data-dependent unpadding) stay eager.

    def get_encoder_cudagraph_config(self) -> Any:
        from vllm.v1.worker.encoder_cudagraph_defs import EncoderCudaGraphConfig

        return EncoderCudaGraphConfig(
            modalities=["video"],
            buffer_keys=["pixel_values_videos"],
            out_hidden_size=self.config.text_config.hidden_size,
            max_frames_per_video=self.get_max_frames_per_video(),
        )

    def get_input_modality(self, mm_kwargs: dict[str, Any]) -> str:
        return "video" if "pixel_values_videos" in mm_kwargs else "image"

    def get_max_frames_per_video(self) -> int:
        """Frames of the longest video a request may carry (the server's limit from ``max_model_len``)."""
        return max(1, video_loader.frames_that_fit(self.vllm_config.model_config.max_model_len, self.config))

    def get_encoder_cudagraph_budget_range(self, vllm_config: VllmConfig) -> tuple[int, int]:
        max_budget = min(
            vllm_config.scheduler_config.max_num_batched_tokens, vllm_config.model_config.max_model_len
        )
        return self.tokens_per_frame, max(max_budget, self.tokens_per_frame)

    def get_encoder_cudagraph_item_specs(self, mm_kwargs: dict[str, Any]) -> list[Any]:
        from vllm.v1.worker.encoder_cudagraph_defs import EncoderItemSpec

        return [
            EncoderItemSpec(input_size=n, output_tokens=self.config.num_video_tokens(n))
            for n in _counts(mm_kwargs["video_num_frames"])
        ]

    def select_encoder_cudagraph_items(self, mm_kwargs: dict[str, Any], indices: list[int]) -> dict[str, Any]:
        frames, counts = mm_kwargs["pixel_values_videos"], _counts(mm_kwargs["video_num_frames"])
        starts = np.cumsum([0, *counts]).tolist()
        picked = [frames[starts[i] : starts[i + 1]] for i in indices]
        return {
            "pixel_values_videos": torch.cat(picked) if picked else frames[:0],
            "video_num_frames": torch.tensor([counts[i] for i in indices], dtype=torch.int64),
        }

    def prepare_encoder_cudagraph_capture_inputs(
        self,
        token_budget: int,
        max_batch_size: int,
        max_frames_per_batch: int,
        device: torch.device,
        dtype: torch.dtype,
        path: str = "default",
        axis_keys: tuple[Hashable, ...] | None = None,
    ) -> Any:
        from vllm.v1.worker.encoder_cudagraph_defs import EncoderCudaGraphCaptureInputs

        size = self.config.vision_config.image_size
        frames = max(token_budget // self.tokens_per_frame, 1)
        buffer = torch.zeros(frames, 3, size, size, device=device, dtype=dtype)
        return EncoderCudaGraphCaptureInputs(values={"pixel_values_videos": buffer})

    def prepare_encoder_cudagraph_replay_buffers(
        self,
        mm_kwargs: dict[str, Any],
        max_batch_size: int,
        max_frames_per_batch: int,
        path: str = "default",
    ) -> Any:
        from vllm.v1.worker.encoder_cudagraph_defs import EncoderCudaGraphReplayBuffers

        return EncoderCudaGraphReplayBuffers(values={"pixel_values_videos": mm_kwargs["pixel_values_videos"]})

    def encoder_cudagraph_forward(
        self, inputs: dict[str, torch.Tensor], path: str = "default"
    ) -> torch.Tensor:
        """The captured path: frames buffer (F, 3, S, S) -> (F * tokens_per_frame, D)."""
        return self._encode_local_frames(inputs["pixel_values_videos"])

    def encoder_eager_forward(self, mm_kwargs: dict[str, Any], path: str = "default") -> torch.Tensor:
        return self._encode_local_frames(_frames_buffer(mm_kwargs["pixel_values_videos"]))

    def _encode_local_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(F, 3, S, S) -> (F * tokens_per_frame, D) with this rank's tower only: under
        ``--mm-encoder-tp-mode data`` vLLM's encoder CUDA-graph manager already gives each rank its
        own videos and gathers the outputs, so splitting the frames again across ranks would mix
        different ranks' inputs."""
        features = self._tower(frames.to(self.vision_tower.dtype)) if self.runs_vision else None
        return self.encode_frames(frames, features).flatten(0, 1)

    def postprocess_encoder_output(
        self,
        outputs: dict[str, torch.Tensor],
        indices: list[int],
        per_item_out_tokens: list[int],
        dest: dict[int, torch.Tensor] | list[torch.Tensor | None],
        clone: bool = False,
        batch_mm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Slice the (padded) frame tokens per video; ``one_token`` appends the video's newline."""
        assert batch_mm_kwargs is not None
        counts = _counts(batch_mm_kwargs["video_num_frames"])
        per_frame = outputs["default"].unflatten(0, (-1, self.tokens_per_frame))
        used = per_frame[: sum(counts)]
        for idx, video in zip(indices, self.split_videos(used, counts), strict=True):
            dest[idx] = video.clone() if clone else video


def _cpu_long(x: object) -> torch.Tensor:
    """A host tensor of sizes/counts (they are kept on the CPU by the field config: no sync)."""
    if isinstance(x, torch.Tensor):
        return x.to("cpu", torch.int64)
    return torch.as_tensor(np.asarray(x), dtype=torch.int64)


def _counts(x: object) -> list[int]:
    return [int(n) for n in _cpu_long(x).reshape(-1).tolist()]


def _frames_buffer(x: object) -> torch.Tensor:
    """The flat frames/crops buffer (N, 3, S, S), whatever way vLLM batched it."""
    if isinstance(x, torch.Tensor):
        return x if x.dim() == 4 else x.flatten(0, x.dim() - 4)
    return torch.cat([_frames_buffer(t) for t in x])  # type: ignore[union-attr]


__all__ = [
    "LlavaNextVideoAnyResDummyInputsBuilder",
    "LlavaNextVideoAnyResForConditionalGeneration",
    "LlavaNextVideoAnyResMultiModalProcessor",
    "LlavaNextVideoAnyResProcessingInfo",
    "tokens_per_frame",
]
