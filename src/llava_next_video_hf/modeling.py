"""LLaVA-NeXT-Video with AnyRes images, frame-as-tile video, pooling, newline policies and scaled RoPE.

Data flow for a video (docs/ARCHITECTURE.md):
frames (N, 3, 336, 336) -> vision tower -> hidden_states[vision_feature_layer] -> drop CLS
-> (N, 576, Dv) -> spatial pool before/after the projector -> (N, side*side, D) -> newline policy
-> scattered into the text embeddings at the ``<video>`` tokens -> language model (linear RoPE).

Module names follow transformers' ``LlavaNextVideoForConditionalGeneration`` (``model.vision_tower``,
``model.multi_modal_projector``, ``model.image_newline``, ``model.language_model``, ``lm_head``), so a
llava-hf state dict loads without renaming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPooling, ModelOutput
from transformers.utils.generic import can_return_tuple

from .configuration import LlavaNextVideoAnyResConfig
from .layout import VisualTokenLayout, drop_padding, num_image_crops, video_frames

#: The name transformers gives the KV cache in forward arguments and output fields: ``cache`` from
#: transformers 5.24 on (its ``ModelOutput`` then keeps ``past_key_values`` only as a deprecated
#: read-only alias and renames that keyword in every output ``__init__``), ``past_key_values`` before.
CACHE_NAME = (
    "cache" if isinstance(getattr(ModelOutput, "past_key_values", None), property) else "past_key_values"
)


def _take_cache(past_key_values: Cache | None, kwargs: dict) -> Cache | None:
    """The cache passed under either name (``generate`` uses ``CACHE_NAME``); both at once is an error."""
    cache = kwargs.pop("cache", None)
    if cache is not None and past_key_values is not None:
        raise ValueError("Pass the KV cache as `cache` or `past_key_values`, not both")
    return cache if cache is not None else past_key_values


@dataclass
class LlavaNextVideoAnyResModelOutput(ModelOutput):
    """Output of [`LlavaNextVideoAnyResModel`]; visual features are the ones scattered into the prompt."""

    last_hidden_state: torch.FloatTensor | None = None
    if CACHE_NAME == "cache":  # one field, named as this transformers names it
        cache: Cache | None = None
    else:
        past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: torch.FloatTensor | None = None  # (image tokens in batch, D)
    video_hidden_states: torch.FloatTensor | None = None  # (video tokens in batch, D)


@dataclass
class LlavaNextVideoAnyResCausalLMOutput(ModelOutput):
    """Output of [`LlavaNextVideoAnyResForConditionalGeneration`]."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    if CACHE_NAME == "cache":  # one field, named as this transformers names it
        cache: Cache | None = None
    else:
        past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: torch.FloatTensor | None = None
    video_hidden_states: torch.FloatTensor | None = None


class LlavaNextVideoAnyResProjector(nn.Module):
    """Linear-act-Linear from (concatenated) vision features to the LLM's hidden size."""

    def __init__(self, config: LlavaNextVideoAnyResConfig):
        super().__init__()
        layers = config.vision_feature_layer
        num_layers = 1 if isinstance(layers, int) else len(layers)
        hidden = config.text_config.hidden_size
        bias = config.multimodal_projector_bias
        self.linear_1 = nn.Linear(config.vision_config.hidden_size * num_layers, hidden, bias=bias)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(hidden, hidden, bias=bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))


class TowerVideoFeatures(VisualTokenLayout):
    """[`VisualTokenLayout`] on a transformers vision tower: running the tower, selecting its layers,
    ``get_video_features``. Shared by our model and the video patch for transformers' own LLaVA
    classes (``modeling_patches.video``); the host provides ``vision_tower``, ``multi_modal_projector``,
    ``image_newline``, ``get_input_embeddings`` and ``config``.
    """

    def _select_layers(self, hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        layers = self.config.vision_feature_layer
        if isinstance(layers, int):
            return hidden_states[layers]
        return torch.cat([hidden_states[i] for i in layers], dim=-1)

    def _run_tower(self, pixel_values: torch.Tensor, **kwargs) -> tuple[ModelOutput, torch.Tensor]:
        """Tower outputs (hidden states always, attentions when asked) and the selected-layer features."""
        kwargs["output_hidden_states"] = True  # the selected layers are hidden states
        out = self.vision_tower(pixel_values.to(self.vision_tower.dtype), return_dict=True, **kwargs)
        return out, self._select_layers(out.hidden_states)

    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> features of the selected tower layers (N, L, Dv * num_feature_layers).

        ``L`` is ``grid**2`` plus a leading CLS feature for CLIP towers; callers keep the last
        ``grid**2`` (the patch grid) except for an image's base view under ``"full"`` selection.
        """
        return self._run_tower(pixel_values)[1]

    def _check_feature_args(self, vision_feature_layer: Any, vision_feature_select_strategy: Any) -> None:
        # transformers lets callers override these per call; our token layout (processor, vLLM,
        # placeholder counts) is fixed by the config, so only the config's values are accepted
        for name, value in (
            ("vision_feature_layer", vision_feature_layer),
            ("vision_feature_select_strategy", vision_feature_select_strategy),
        ):
            if value is not None and value != getattr(self.config, name):
                raise ValueError(
                    f"{name}={value!r} differs from the config's {getattr(self.config, name)!r}: the visual "
                    "token layout is fixed by the config (change it there, and rebuild the processor)"
                )

    @can_return_tuple
    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor | list[torch.Tensor],
        video_num_frames: torch.Tensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """Videos -> the tower's outputs plus one (num_video_tokens(T_i), D) tensor per video.

        Args:
            pixel_values_videos: (B, T_max, 3, H, W) zero-padded over frames with ``video_num_frames``
                (B,) giving each video's real length (all T_max when omitted), or a list of (T_i, 3, H, W).
            vision_feature_layer / vision_feature_select_strategy: accepted for transformers'
                signature; only the config's values are allowed (the token layout depends on them).
            kwargs: ``output_attentions`` (the tower's attentions), ``return_dict`` (``False``: a tuple).

        Returns:
            ``BaseModelOutputWithPooling`` as transformers' LLaVA-NeXT-Video: ``last_hidden_state`` /
            ``hidden_states`` / ``attentions`` of the vision tower over all real frames
            (sum T_i, L, Dv), and ``pooler_output``: a tuple with one (num_video_tokens(T_i), D)
            tensor per video, the features scattered at its ``<video>`` tokens (flat over frames,
            newlines included, where transformers gives (T_i, tokens_per_frame, D)).
        """
        self._check_feature_args(vision_feature_layer, vision_feature_select_strategy)
        kwargs.pop("output_hidden_states", None)  # always returned, as transformers does
        if len(pixel_values_videos) == 0:  # a batch without videos (collators may send an empty tensor)
            return BaseModelOutputWithPooling(pooler_output=())
        frames, lengths = video_frames(pixel_values_videos, video_num_frames)
        out, selected = self._run_tower(frames, **kwargs)
        videos = self.split_videos(self.encode_frames(frames, features=selected), lengths)
        return BaseModelOutputWithPooling(
            last_hidden_state=out.last_hidden_state,
            pooler_output=tuple(videos),
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )


class LlavaNextVideoAnyResPreTrainedModel(PreTrainedModel):
    """Weight init and transformers capabilities shared by the model classes."""

    config: LlavaNextVideoAnyResConfig
    config_class = LlavaNextVideoAnyResConfig
    base_model_prefix = "model"
    input_modalities = ("image", "video", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = [CACHE_NAME]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # text-only decoding steps (the ones generate compiles) and video prefills trace as one graph
    # (the placeholder count check becomes a torch._check there); image prefills read their sizes
    # on the host (AnyRes tiling), as transformers' LLaVA-NeXT does
    _can_compile_fullgraph = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, LlavaNextVideoAnyResModel):
            # `init.normal_` skips a parameter loaded from a checkpoint by itself; the in-place
            # `.normal_` relied on transformers skipping the whole module
            init.normal_(
                module.image_newline, mean=0.0, std=1 / math.sqrt(self.config.text_config.hidden_size)
            )

    @torch.no_grad()
    @init.guard_torch_init_functions()
    def initialize_weights(self) -> None:
        """Initialise missing weights, each sub-model (vision tower, LLM) with its own ``_init_weights``.

        transformers' version passes "custom code" (any class outside the transformers package, as
        ours) down to the sub-models too, and then skips modules without direct parameters (CLIP's
        attention and MLP blocks): their projections kept the generic std=initializer_range init
        instead of CLIP's scaled one after ``from_pretrained`` with tower weights missing. Here a
        sub-model is custom only if its own class is, so missing weights get exactly the
        distribution of a model built from its config.
        """

        def apply(module: nn.Module, fn, is_custom: bool) -> None:
            for child in module.children():
                if isinstance(child, PreTrainedModel):
                    apply(child, child._initialize_weights, child.is_custom_code())
                else:
                    apply(child, fn, is_custom)
            fn(module, is_custom)

        apply(self, self._initialize_weights, self.is_custom_code())


class LlavaNextVideoAnyResModel(TowerVideoFeatures, LlavaNextVideoAnyResPreTrainedModel):
    """Vision tower + projector + language model (no LM head)."""

    def __init__(self, config: LlavaNextVideoAnyResConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = LlavaNextVideoAnyResProjector(config)
        std = 1 / math.sqrt(config.text_config.hidden_size)
        self.image_newline = nn.Parameter(torch.randn(config.text_config.hidden_size) * std)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def _image_crops(
        self, pixel_values: torch.Tensor, image_sizes: torch.Tensor
    ) -> tuple[torch.Tensor, list]:
        sizes = [(int(h), int(w)) for h, w in image_sizes.tolist()]
        if pixel_values.dim() == 5:
            counts = [num_image_crops(h, w, self.config) for h, w in sizes]
            pixel_values = drop_padding(pixel_values, counts)
        elif pixel_values.dim() != 4:
            raise ValueError(
                f"pixel_values must be (images, crops, 3, H, W) or (crops, 3, H, W), got {tuple(pixel_values.shape)}"
            )
        return pixel_values, sizes

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        image_sizes: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """AnyRes images -> the tower's outputs plus one (num_image_tokens(h, w), D) tensor per image.

        Args:
            pixel_values: (B, P_max, 3, H, W) zero-padded over crops (base view first), or the real
                crops stacked (sum P_i, 3, H, W).
            image_sizes: (B, 2) original (height, width) of each image.
            vision_feature_layer / vision_feature_select_strategy: as in [`get_video_features`].
            kwargs: ``output_attentions``, ``return_dict``.

        Returns:
            ``BaseModelOutputWithPooling``: the tower's ``last_hidden_state`` / ``hidden_states`` /
            ``attentions`` over all real crops, and ``pooler_output``, a tuple with one
            (num_image_tokens, D) tensor per image (the features scattered at its ``<image>`` tokens).
        """
        self._check_feature_args(vision_feature_layer, vision_feature_select_strategy)
        kwargs.pop("output_hidden_states", None)  # always returned, as transformers does
        if pixel_values.numel() == 0:  # a batch without images
            return BaseModelOutputWithPooling(pooler_output=())
        crops, sizes = self._image_crops(pixel_values, image_sizes)
        out, selected = self._run_tower(crops, **kwargs)
        images = self.embed_images(crops, sizes, features=selected)
        return BaseModelOutputWithPooling(
            last_hidden_state=out.last_hidden_state,
            pooler_output=tuple(images),
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | list[torch.Tensor] | None = None,
        video_num_frames: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        **kwargs,
    ) -> LlavaNextVideoAnyResModelOutput:
        """Embed the prompt, scatter image and video features at their placeholders, run the LLM.

        ``mm_encoder_outputs``: ``{"image": ..., "video": ...}`` outputs of ``get_image_features`` /
        ``get_video_features`` computed beforehand (``generate`` encodes media once before the
        prefill this way); a modality given there must not also come as pixels.
        """
        past_key_values = _take_cache(past_key_values, kwargs)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        encoded = mm_encoder_outputs or {}
        has_images = pixel_values is not None and pixel_values.numel() > 0
        has_videos = pixel_values_videos is not None and len(pixel_values_videos) > 0
        for kind, given in (("image", has_images), ("video", has_videos)):
            if given and encoded.get(kind) is not None:
                raise ValueError(
                    f"Pass either pixels or mm_encoder_outputs['{kind}'] for the {kind}s, not both"
                )
        image_feats = video_feats = None
        features = None
        if encoded.get("image") is not None:
            features = list(encoded["image"].pooler_output)
        elif has_images:
            if image_sizes is None:
                raise ValueError("pixel_values need image_sizes (one (height, width) per image)")
            crops, sizes = self._image_crops(pixel_values, image_sizes)
            features = self.embed_images(crops, sizes)
        if features:
            mask = self.placeholder_mask(input_ids, inputs_embeds, self.config.image_token_id)
            inputs_embeds, image_feats = self.scatter_features(inputs_embeds, mask, features, "image")
        features = None
        if encoded.get("video") is not None:
            features = list(encoded["video"].pooler_output)
        elif has_videos:
            frames, lengths = video_frames(pixel_values_videos, video_num_frames)
            features = self.split_videos(self.encode_frames(frames), lengths)
        if features:
            mask = self.placeholder_mask(input_ids, inputs_embeds, self.config.video_token_id)
            inputs_embeds, video_feats = self.scatter_features(inputs_embeds, mask, features, "video")
        out = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **{CACHE_NAME: past_key_values},
            **kwargs,
        )
        return LlavaNextVideoAnyResModelOutput(
            last_hidden_state=out.last_hidden_state,
            **{CACHE_NAME: getattr(out, CACHE_NAME)},
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            image_hidden_states=image_feats,
            video_hidden_states=video_feats,
        )


class LlavaNextVideoAnyResForConditionalGeneration(LlavaNextVideoAnyResPreTrainedModel, GenerationMixin):
    """LLaVA-NeXT-Video with a language-modeling head: video/image question answering and generation."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: LlavaNextVideoAnyResConfig):
        super().__init__(config)
        self.model = LlavaNextVideoAnyResModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def get_video_features(self, *args, **kwargs) -> BaseModelOutputWithPooling | tuple:
        """See [`LlavaNextVideoAnyResModel.get_video_features`]."""
        return self.model.get_video_features(*args, **kwargs)

    def get_image_features(self, *args, **kwargs) -> BaseModelOutputWithPooling | tuple:
        """See [`LlavaNextVideoAnyResModel.get_image_features`]."""
        return self.model.get_image_features(*args, **kwargs)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | list[torch.Tensor] | None = None,
        video_num_frames: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        **kwargs,
    ) -> LlavaNextVideoAnyResCausalLMOutput:
        """Logits (and the shifted next-token loss when ``labels`` are given; -100 is ignored)."""
        past_key_values = _take_cache(past_key_values, kwargs)
        out = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            image_sizes=image_sizes,
            pixel_values_videos=pixel_values_videos,
            video_num_frames=video_num_frames,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )
        hidden = out.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return LlavaNextVideoAnyResCausalLMOutput(
            loss=loss,
            logits=logits,
            **{CACHE_NAME: getattr(out, CACHE_NAME)},
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            image_hidden_states=out.image_hidden_states,
            video_hidden_states=out.video_hidden_states,
        )


def register_auto_classes() -> None:
    """Register the model classes with transformers' Auto classes (idempotent)."""
    from transformers import AutoModelForImageTextToText, AutoModelForMultimodalLM

    AutoModel.register(LlavaNextVideoAnyResConfig, LlavaNextVideoAnyResModel, exist_ok=True)
    # image-text-to-text pipelines, and any-to-any pipelines (which take ``videos=``)
    for auto_class in (AutoModelForImageTextToText, AutoModelForMultimodalLM):
        auto_class.register(
            LlavaNextVideoAnyResConfig, LlavaNextVideoAnyResForConditionalGeneration, exist_ok=True
        )


__all__ = [
    "TowerVideoFeatures",
    "LlavaNextVideoAnyResForConditionalGeneration",
    "LlavaNextVideoAnyResModel",
    "LlavaNextVideoAnyResPreTrainedModel",
    "register_auto_classes",
]
