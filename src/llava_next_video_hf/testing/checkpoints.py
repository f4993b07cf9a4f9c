"""Tiny random checkpoints: of our format, of transformers' own LLaVA-NeXT classes, and original ones.

Everything here is deterministic given a seed and fast (well under a second for a checkpoint):
the vision tower is CLIP-shaped at 336 px / patch 14 so the token math is the real one, the
language model is a 2-layer Llama with head size 32, and the tokenizer is a real byte-level BPE
trained on the fly by the ``tokenizers`` library ([`make_tokenizer`]).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .tokenizers import make_plain_tokenizer, make_tokenizer

__all__ = [
    "LMMS_LAB_VISION_TOWER",
    "lmms_lab_config",
    "lmms_lab_name",
    "make_llava_hf_checkpoint",
    "make_llava_hf_image_model",
    "make_llava_hf_video_model",
    "make_lmms_lab_checkpoint",
    "make_lmms_lab_model",
    "make_processor",
    "make_tiny_checkpoint",
    "make_tiny_model",
    "tiny_config",
    "tiny_text_config",
    "tiny_vision_config",
]


def tiny_vision_config(**overrides: Any) -> dict:
    """A 2-layer CLIP vision tower at 336 px / patch 14 (576 patches + CLS per frame)."""
    cfg = dict(
        model_type="clip_vision_model", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, image_size=336, patch_size=14, projection_dim=64,
    )  # fmt: skip
    cfg.update(overrides)
    return cfg


def tiny_text_config(vocab_size: int, **overrides: Any) -> dict:
    """A 2-layer Llama with head size 32 (vLLM's CPU attention needs >= 32) and a 4096 context."""
    cfg = dict(
        model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=32, vocab_size=vocab_size,
        max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=3,
        tie_word_embeddings=False,
    )  # fmt: skip
    cfg.update(overrides)
    return cfg


def tiny_config(tokenizer: Any | None = None, **overrides: Any) -> Any:
    """A [`LlavaNextVideoAnyResConfig`] of the tiny model; ``overrides`` go to the top level
    (``text_config``/``vision_config`` dicts are merged into the tiny defaults)."""
    from ..configuration import LlavaNextVideoAnyResConfig

    tokenizer = tokenizer or make_tokenizer()
    text = tiny_text_config(len(tokenizer), **overrides.pop("text_config", {}))
    vision = tiny_vision_config(**overrides.pop("vision_config", {}))
    overrides.setdefault("num_frames", 8)  # 8 x 144 tokens fit the 4096 context without scaling
    return LlavaNextVideoAnyResConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.image_token_id,
        video_token_id=tokenizer.video_token_id,
        **overrides,
    )


def _seeded(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def make_processor(config: Any, tokenizer: Any | None = None) -> Any:
    """The processor that matches ``config`` (token math, frame defaults, context length)."""
    from ..processing import LlavaNextVideoAnyResProcessor

    return LlavaNextVideoAnyResProcessor.from_model_config(config, tokenizer or make_tokenizer())


def make_tiny_model(seed: int = 0, tokenizer: Any | None = None, **overrides: Any) -> Any:
    """A tiny random [`LlavaNextVideoAnyResForConditionalGeneration`] (fp32, eval mode)."""
    from ..modeling import LlavaNextVideoAnyResForConditionalGeneration

    config = tiny_config(tokenizer, **overrides)
    _seeded(seed)
    return LlavaNextVideoAnyResForConditionalGeneration(config).eval()


def make_tiny_checkpoint(
    path: str | os.PathLike, seed: int = 0, tokenizer: Any | None = None, **overrides: Any
) -> Path:
    """Write a tiny checkpoint of our format (weights, config, processor, tokenizer, chat template).

    ``tokenizer`` defaults to [`make_tokenizer`]'s (e.g. [`make_sentencepiece_tokenizer`] instead).
    """
    path = Path(path)
    tokenizer = tokenizer or make_tokenizer()
    model = make_tiny_model(seed, tokenizer, **overrides)
    model.save_pretrained(path)
    make_processor(model.config, tokenizer).save_pretrained(path)
    return path


def _make_llava_hf_model(kind: str, seed: int, tokenizer: Any | None, overrides: dict) -> Any:
    """The tiny model as one of transformers' own LLaVA-NeXT classes (``kind``: video or image)."""
    import transformers

    prefix = {"video": "LlavaNextVideo", "image": "LlavaNext"}[kind]
    tokenizer = tokenizer or make_tokenizer()
    token_ids = {"image_token_index": tokenizer.image_token_id}
    if kind == "video":
        token_ids["video_token_index"] = tokenizer.video_token_id
    config = getattr(transformers, f"{prefix}Config")(
        vision_config=tiny_vision_config(**overrides.pop("vision_config", {})),
        text_config=tiny_text_config(len(tokenizer), **overrides.pop("text_config", {})),
        **token_ids,
        **overrides,
    )
    _seeded(seed)
    return getattr(transformers, f"{prefix}ForConditionalGeneration")(config).eval()


def make_llava_hf_video_model(seed: int = 0, tokenizer: Any | None = None, **overrides: Any) -> Any:
    """The tiny model as transformers' own ``LlavaNextVideoForConditionalGeneration`` (llava-hf layout)."""
    return _make_llava_hf_model("video", seed, tokenizer, overrides)


def make_llava_hf_image_model(seed: int = 0, tokenizer: Any | None = None, **overrides: Any) -> Any:
    """The tiny model as transformers' own ``LlavaNextForConditionalGeneration`` (LLaVA-NeXT image)."""
    return _make_llava_hf_model("image", seed, tokenizer, overrides)


def make_llava_hf_checkpoint(path: str | os.PathLike, kind: str = "video", seed: int = 0) -> Path:
    """Write a tiny llava-hf checkpoint (``kind``: ``video`` or ``image``) with its tokenizer."""
    path = Path(path)
    tokenizer = make_tokenizer()
    maker = {"video": make_llava_hf_video_model, "image": make_llava_hf_image_model}[kind]
    maker(seed, tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# ---- original (lmms-lab) LLaVA-NeXT checkpoints, for the conversion tests ---------------------

#: ``mm_vision_tower`` of the tiny original-layout checkpoints: a name no converter knows, so the vision
#: config has to be inferred from the tensor shapes (as for any tower that is not CLIP-L/14).
LMMS_LAB_VISION_TOWER = "llava-next-video-hf/tiny-clip-vit-336"

_LMMS_LAB_TEXT = {  # base LLM -> (architecture, model_type) of the original LLaVA classes
    "llama": ("LlavaLlamaForCausalLM", "llava_llama"),
    "mistral": ("LlavaMistralForCausalLM", "llava_mistral"),
    "qwen2": ("LlavaQwenForCausalLM", "llava_qwen"),
}

_TO_LMMS_LAB = [  # our (llava-hf) parameter names -> the original LLaVA-NeXT names
    ("model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
    ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
    ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
    ("model.language_model.", "model."),
]


def lmms_lab_name(name: str) -> str:
    """Our (llava-hf) parameter name -> its name in an original (lmms-lab) LLaVA-NeXT checkpoint."""
    for ours, theirs in _TO_LMMS_LAB:
        if name.startswith(ours):
            return theirs + name[len(ours) :]
    return name  # lm_head.*, model.image_newline


def make_lmms_lab_checkpoint(
    path: str | os.PathLike,
    seed: int = 0,
    *,
    text_model: str = "llama",
    num_shards: int = 2,
    **config_overrides: Any,
) -> Path:
    """Write a tiny checkpoint in the original LLaVA-NeXT(-Video) layout (as lmms-lab publishes them).

    ``model-0000i-of-0000n.safetensors`` + index with the original names
    (``model.vision_tower.vision_tower.vision_model.*``, ``model.mm_projector.0/2.*``,
    ``model.image_newline``, ``model.layers.*``, ``lm_head.*``), a ``config.json`` of a
    ``Llava{Llama,Mistral,Qwen}ForCausalLM`` with the ``mm_*`` settings of the 2024 video release
    (spatial_pool resampler, stride 2, average; ``config_overrides`` are merged in, ``None`` deletes a
    key) and the LLM's plain tokenizer (no ``<image>``/``<video>``). The vision tower is the tiny
    CLIP with one 64-wide head (CLIP's head size), named [`LMMS_LAB_VISION_TOWER`].
    Deterministic given ``seed``; the weights equal ``make_lmms_lab_model(seed, text_model)``'s.
    """
    import json

    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = make_plain_tokenizer()
    model = make_lmms_lab_model(seed, text_model, tokenizer)
    state = {lmms_lab_name(k): v.contiguous() for k, v in model.state_dict().items()}
    names = sorted(state)
    chunks = [names[i::num_shards] for i in range(num_shards)]
    weight_map = {}
    for i, chunk in enumerate(chunks, start=1):
        file = f"model-{i:05d}-of-{num_shards:05d}.safetensors"
        save_file({k: state[k] for k in chunk}, str(path / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(chunk, file))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))

    config = lmms_lab_config(model.config, text_model)
    for key, value in config_overrides.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    tokenizer.save_pretrained(path)
    return path


def make_lmms_lab_model(seed: int = 0, text_model: str = "llama", tokenizer: Any | None = None) -> Any:
    """The tiny model behind [`make_lmms_lab_checkpoint`] (our class; token ids are placeholders)."""
    from ..configuration import LlavaNextVideoAnyResConfig
    from ..modeling import LlavaNextVideoAnyResForConditionalGeneration

    tokenizer = tokenizer or make_plain_tokenizer()
    config = LlavaNextVideoAnyResConfig(
        vision_config=tiny_vision_config(num_attention_heads=1),
        text_config=tiny_text_config(len(tokenizer), model_type=text_model),
        image_token_id=0,
        video_token_id=0,
    )
    _seeded(seed)
    return LlavaNextVideoAnyResForConditionalGeneration(config).eval()


def lmms_lab_config(config: Any, text_model: str = "llama") -> dict:
    """The ``config.json`` an original LLaVA-NeXT-Video checkpoint of ``config``'s shapes would have."""
    architecture, model_type = _LMMS_LAB_TEXT[text_model]
    text = config.text_config.to_dict()
    rope = text.pop("rope_parameters", None) or {}
    for key in ("model_type", "architectures", "dtype", "transformers_version", "_name_or_path"):
        text.pop(key, None)
    text.update(
        architectures=[architecture],
        model_type=model_type,
        rope_theta=rope.get("rope_theta", 10000.0),
        rope_scaling=None,
        torch_dtype="float32",
        transformers_version="4.40.0.dev0",
        mm_vision_tower=LMMS_LAB_VISION_TOWER,
        mm_hidden_size=config.vision_config.hidden_size,
        mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=config.vision_feature_layer,
        mm_vision_select_feature="patch",
        mm_patch_merge_type="spatial_unpad",
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        use_mm_proj=True,
        image_aspect_ratio="anyres",
        image_grid_pinpoints=[list(p) for p in config.image_grid_pinpoints],
        mm_resampler_type="spatial_pool",
        mm_spatial_pool_stride=2,
        mm_spatial_pool_mode="average",
        mm_spatial_pool_out_channels=config.vision_config.hidden_size,
        tokenizer_model_max_length=text["max_position_embeddings"],
        tokenizer_padding_side="right",
    )
    return text
