"""Linear RoPE scaling, in place, for loaded transformers causal LMs and LLaVA models.

Linear position interpolation with factor ``f`` makes position ``p`` rotate like ``p / f`` did
(``inv_freq / f``), so ``f`` times more positions fit the angles the model was trained on. A patch
updates the text config (``rope_parameters``, through [`configuration.apply_linear_rope`];
``max_position_embeddings`` keeps the trained context) *and* rebuilds every rotary module's ``inv_freq`` buffers the
way the module's own ``__init__`` does, since transformers computes them once at construction.

``factor`` is absolute: ``scale_rope(m, 2)`` twice stays at 2, and the model's own factor
(1 for an unscaled model) restores the saved buffers and config exactly.
"""

from __future__ import annotations

import copy

from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from .. import rope, visual_tokens
from ..configuration import LlavaNextVideoAnyResConfig, apply_linear_rope, linear_factor_of
from ..errors import UnsupportedModelError
from ._common import RopePatch, drop_state_if_empty, ensure_state, get_patch_state, video_token_kwargs

#: Text model families whose rotary embedding `scale_rope` knows (the Llama-style ``*RotaryEmbedding``).
SUPPORTED_TEXT_MODEL_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe")

#: RoPE types a linear factor can replace without losing another scaling scheme.
_SCALABLE_ROPE_TYPES = ("default", "linear")

_ROTARY_ATTRS = ("rope_type", "attention_scaling", "max_seq_len_cached", "original_max_seq_len")


def text_config(model: nn.Module) -> PreTrainedConfig:
    """The language model's config: ``config.text_config`` of a LLaVA model, else the model's config."""
    return model.config.get_text_config(decoder=True)


def rotary_modules(model: nn.Module) -> list[nn.Module]:
    """Every Llama-style rotary embedding in ``model`` (``inv_freq``/``original_inv_freq`` buffers, ``rope_type``)."""
    return [
        m
        for m in model.modules()
        if isinstance(getattr(m, "rope_type", None), str)
        and "inv_freq" in m._buffers
        and "original_inv_freq" in m._buffers
        and isinstance(getattr(m, "config", None), PreTrainedConfig)
    ]


def _check_supported(model: nn.Module) -> tuple[PreTrainedConfig, list[nn.Module]]:
    """The text config and rotary modules of a model `scale_rope` can patch; raises otherwise."""
    name = type(model).__name__
    supported = f"causal LMs and LLaVA models whose language model is one of {SUPPORTED_TEXT_MODEL_TYPES}"
    if not isinstance(model, PreTrainedModel):
        raise UnsupportedModelError(
            f"scale_rope needs a transformers PreTrainedModel, got {name}; supported: {supported}"
        )
    cfg = text_config(model)
    model_type = getattr(cfg, "model_type", None)
    rotaries = rotary_modules(model)
    if model_type not in SUPPORTED_TEXT_MODEL_TYPES or not rotaries:
        raise UnsupportedModelError(
            f"scale_rope does not support {name} (text model type {model_type!r}, "
            f"{len(rotaries)} rotary embedding module(s) found); supported: {supported}"
        )
    for config in [cfg] + [r.config for r in rotaries]:
        rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
        if rope_type not in _SCALABLE_ROPE_TYPES:
            raise UnsupportedModelError(
                f"{name} uses rope_type {rope_type!r}; linear scaling would replace it. scale_rope only "
                f"scales models whose RoPE is one of {_SCALABLE_ROPE_TYPES}."
            )
    return cfg, rotaries


def _distinct_configs(cfg: PreTrainedConfig, rotaries: list[nn.Module]) -> list[PreTrainedConfig]:
    """The text config plus any distinct config object a rotary module holds (usually the same one)."""
    seen, configs = set(), []
    for config in [cfg] + [r.config for r in rotaries]:
        if id(config) not in seen:
            seen.add(id(config))
            configs.append(config)
    return configs


def _snapshot(model: nn.Module, cfg: PreTrainedConfig, rotaries: list[nn.Module], original: int) -> RopePatch:
    configs = [
        (c, copy.deepcopy(dict(c.rope_parameters or {})), int(c.max_position_embeddings))
        for c in _distinct_configs(cfg, rotaries)
    ]
    saved_rotaries = []
    for rot in rotaries:
        saved = {a: getattr(rot, a) for a in _ROTARY_ATTRS if hasattr(rot, a)}
        saved["inv_freq"] = rot.inv_freq.clone()
        saved["original_inv_freq"] = rot.original_inv_freq.clone()
        saved_rotaries.append((rot, saved))
    top = None
    if isinstance(model.config, LlavaNextVideoAnyResConfig):
        top = (model.config, model.config.rope_scaling_factor)
    factor = linear_factor_of(cfg)
    return RopePatch(original, factor, factor, configs, saved_rotaries, top)


def _restore(patch: RopePatch) -> None:
    """Put back the configs and rotary buffers saved before the first `scale_rope`."""
    for config, params, max_pos in patch.configs:
        config.rope_parameters = copy.deepcopy(params)
        config.max_position_embeddings = max_pos
    for rot, saved in patch.rotaries:
        for name in ("inv_freq", "original_inv_freq"):
            rot.register_buffer(name, saved[name].clone(), persistent=False)
        for name in _ROTARY_ATTRS:
            if name in saved:
                setattr(rot, name, saved[name])
    if patch.top_config is not None:
        config, value = patch.top_config
        config.rope_scaling_factor = value


def _rebuild(rot: nn.Module) -> None:
    """Recompute a rotary module's buffers from its (updated) config, as its ``__init__`` does."""
    config = rot.config
    rot.rope_type = config.rope_parameters["rope_type"]
    if rot.rope_type == "default":
        init_fn = rot.compute_default_rope_parameters
    else:
        init_fn = ROPE_INIT_FUNCTIONS[rot.rope_type]
    device, dtype = rot.inv_freq.device, rot.inv_freq.dtype
    inv_freq, rot.attention_scaling = init_fn(config, device=device)  # (head_dim // 2,)
    rot.register_buffer("inv_freq", inv_freq.to(dtype), persistent=False)
    rot.register_buffer("original_inv_freq", inv_freq.to(dtype).clone(), persistent=False)
    rot.max_seq_len_cached = rot.original_max_seq_len = int(config.max_position_embeddings)


def scale_rope(model: nn.Module, factor: float | None = None, *, max_frames: int | None = None) -> nn.Module:
    """Apply linear RoPE scaling with ``factor`` (absolute) to ``model`` in place and return it.

    Args:
        model: a loaded transformers causal LM, a LLaVA model (``config.text_config``) or our
            [`LlavaNextVideoAnyResForConditionalGeneration`], whose language model is one of
            ``SUPPORTED_TEXT_MODEL_TYPES`` with plain or linear RoPE.
        factor: the linear factor (``>= 1``); the usable context becomes
            ``max_position_embeddings * factor`` (``configuration.context_length_of``). The model's
            own factor (1 for an unscaled model) restores the saved config and buffers exactly.
        max_frames: instead of ``factor``, a frame budget: the factor is
            ``rope.rope_factor(visual_tokens.num_video_tokens(max_frames, ...), max_position_embeddings)`` with the
            model's video token layout (LLaVA models only).

    The weights never change; the rotary ``inv_freq`` buffers are rebuilt from the updated config.
    Calling it again with the same arguments changes nothing.

    Raises:
        UnsupportedModelError: the model is not a supported family or uses another RoPE scheme.
    """
    if (factor is None) == (max_frames is None):
        raise ValueError("scale_rope needs exactly one of factor or max_frames")
    cfg, rotaries = _check_supported(model)
    state = get_patch_state(model)
    patch = state.rope if state is not None else None
    original = patch.original_context if patch is not None else int(cfg.max_position_embeddings)
    if max_frames is not None:
        factor = rope.rope_factor(
            visual_tokens.num_video_tokens(int(max_frames), **video_token_kwargs(model)), original
        )
    factor = float(factor)
    if factor < 1:
        raise ValueError(f"the RoPE factor must be >= 1, got {factor}")

    if patch is None:
        if factor == linear_factor_of(cfg):
            return model  # the model already is what was asked for
        patch = _snapshot(model, cfg, rotaries, original)
        ensure_state(model).rope = patch
    if factor == patch.original_factor:
        _restore(patch)
        ensure_state(model).rope = None
        drop_state_if_empty(model)
        return model

    for config in _distinct_configs(cfg, rotaries):
        apply_linear_rope(config, factor)
    if patch.top_config is not None:
        model.config.rope_scaling_factor = factor if factor != 1 else None
    for rot in rotaries:
        _rebuild(rot)
    patch.factor = factor
    return model


def undo_rope(model: nn.Module) -> nn.Module:
    """Restore the RoPE configuration and buffers ``model`` had before `scale_rope` (no-op if unscaled)."""
    state = get_patch_state(model)
    if state is not None and state.rope is not None:
        _restore(state.rope)
        state.rope = None
        drop_state_if_empty(model)
    return model
