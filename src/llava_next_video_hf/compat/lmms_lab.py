"""Original LLaVA-NeXT (lmms-lab) checkpoints: their ``config.json`` (``llava_llama``/``llava_qwen``...)
in our terms: the language model, the vision tower, AnyRes pinpoints and the video settings."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import visual_tokens
from ..configuration import LlavaNextVideoAnyResConfig
from ..errors import ConversionError
from .settings import (
    PAPER_VIDEO_SETTINGS,
    Settings,
    _normalize_text_rope,
    build_config,
    name_list,
)

LMMS_LAB_TEXT = {
    "LlavaLlamaForCausalLM": "llama",
    "LlavaMistralForCausalLM": "mistral",
    "LlavaQwenForCausalLM": "qwen2",
    "llava": "llama",
    "llava_llama": "llama",
    "llava_mistral": "mistral",
    "llava_qwen": "qwen2",
}


_KNOWN_VISION = {
    "clip-vit-large-patch14-336": dict(
        model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
        num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu",
    ),
    "clip-vit-large-patch14": dict(
        model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
        num_attention_heads=16, image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu",
    ),
}  # fmt: skip


_LMMS_VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."


def _lmms_lab_text_config(cfg: dict) -> dict:
    from transformers.models.auto import CONFIG_MAPPING

    kinds = [*(cfg.get("architectures") or []), cfg.get("model_type", "")]
    text_type = next((LMMS_LAB_TEXT[k] for k in kinds if k in LMMS_LAB_TEXT), None)
    if text_type is None:
        raise ConversionError(
            f"unsupported base LLM in this lmms-lab checkpoint (architectures {cfg.get('architectures')}, "
            f"model_type {cfg.get('model_type')!r}); supported: {name_list(k for k in LMMS_LAB_TEXT if 'For' in k)}"
        )
    known = set(CONFIG_MAPPING[text_type]().to_dict()) | {
        "rope_scaling",
        "rope_theta",
        "sliding_window",
        "head_dim",
    }
    skip = {
        "architectures",
        "model_type",
        "_name_or_path",
        "transformers_version",
        "dtype",
        "id2label",
        "label2id",
    }
    text = {k: v for k, v in cfg.items() if k in known and k not in skip}
    text["model_type"] = text_type
    return text


def _read_vision_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise ConversionError(
            f"--vision-config {path}: no such config file (a folder with config.json or a .json file)"
        )
    cfg = json.loads(file.read_text())
    cfg = cfg.get("vision_config", cfg)  # a full CLIP config holds the tower's under vision_config
    model_type = cfg.get("model_type", "clip_vision_model")
    cfg["model_type"] = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}.get(
        model_type, model_type
    )
    return cfg


def _infer_clip_config(shapes: dict[str, tuple[int, ...]], prefix: str) -> dict:
    """A CLIP vision config from the tower's tensor shapes; heads assume CLIP's head size of 64."""
    need = {
        "patch": prefix + "embeddings.patch_embedding.weight",  # (D, 3, p, p)
        "position": prefix + "embeddings.position_embedding.weight",  # (grid^2 + 1, D)
        "fc1": prefix + "encoder.layers.0.mlp.fc1.weight",  # (I, D)
    }
    missing = [name for name in need.values() if name not in shapes]
    if missing:
        raise ConversionError(
            f"cannot derive the vision tower's config: tensors missing: {name_list(missing)}; pass --vision-config"
        )
    hidden, _, patch, _ = shapes[need["patch"]]
    grid = math.isqrt(shapes[need["position"]][0] - 1)
    if grid * grid != shapes[need["position"]][0] - 1:
        raise ConversionError(f"{need['position']} {shapes[need['position']]} is not a square grid plus CLS")
    layer = re.compile(re.escape(prefix) + r"encoder\.layers\.(\d+)\.")
    layers = 1 + max(int(m.group(1)) for n in shapes if (m := layer.match(n)))
    return dict(
        model_type="clip_vision_model", hidden_size=hidden, intermediate_size=shapes[need["fc1"]][0],
        num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64), image_size=grid * patch,
        patch_size=patch, hidden_act="quick_gelu",
    )  # fmt: skip


def _lmms_lab_vision_config(
    cfg: dict, shapes: dict[str, tuple[int, ...]], settings: Settings, notes: list[str]
) -> dict:
    tower = str(cfg.get("mm_vision_tower") or cfg.get("vision_tower") or "")
    if settings.vision_config:
        return _read_vision_config(settings.vision_config)
    if "siglip" in tower.lower():
        raise ConversionError(
            f"vision tower {tower!r}: SigLIP towers (OneVision-era checkpoints) are not supported by this "
            "converter; the 2024 LLaVA-NeXT(-Video) checkpoints use CLIP-L/14-336"
        )
    if tower and (Path(tower) / "config.json").is_file():
        return _read_vision_config(tower)
    known = _KNOWN_VISION.get(tower.rstrip("/").split("/")[-1])
    if known is not None:
        return dict(known)
    notes.append(
        f"vision tower {tower!r} is not a known name: its config was inferred from the tensor shapes "
        "(CLIP, 64-wide heads); pass --vision-config to give it explicitly"
    )
    return _infer_clip_config(shapes, _LMMS_VISION_PREFIX)


def _parse_pinpoints(value: Any, image_size: int) -> list[list[int]] | None:
    """An original ``image_grid_pinpoints`` in our convention: a list of ``[height, width]``.

    The original code reads every pair as ``(width, height)`` (``mm_utils.select_best_resolution``,
    ``get_anyres_image_grid_shape``); ours (as transformers') reads ``[height, width]``: each pair is
    swapped, the order kept (so ties between canvases resolve as in the original). OneVision's range
    string ``"(1x1),...,(6x6)"`` is expanded as the original expands it (``(i x j)`` = ``i`` tiles
    wide, ``j`` high, ``i`` outer) before the swap.
    """
    if value is None:
        return None
    if isinstance(value, str):
        grids = [tuple(map(int, m)) for m in re.findall(r"\((\d+)x(\d+)\)", value)]
        if not grids:
            raise ConversionError(f"image_grid_pinpoints {value!r} is neither a list nor '(AxB),...,(CxD)'")
        (w0, h0), (w1, h1) = grids[0], grids[-1]
        pairs = [(i * image_size, j * image_size) for i in range(w0, w1 + 1) for j in range(h0, h1 + 1)]
    elif isinstance(value, (list, tuple)):
        pairs = []
        for pair in value:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ConversionError(f"image_grid_pinpoints: {pair!r} is not a (width, height) pair")
            pairs.append((int(pair[0]), int(pair[1])))
    else:
        raise ConversionError(f"image_grid_pinpoints {value!r} is neither a list nor '(AxB),...,(CxD)'")
    if not pairs:
        raise ConversionError("image_grid_pinpoints is empty")
    for width, height in pairs:
        if width < image_size or height < image_size or width % image_size or height % image_size:
            raise ConversionError(
                f"image_grid_pinpoints: ({width}, {height}) is not a multiple of the {image_size} px tile"
            )
    return [[height, width] for width, height in pairs]


def _check_aspect_ratio(aspect: Any, pinpoints: Sequence[Sequence[int]], image_size: int) -> None:
    """Accept ``image_aspect_ratio`` values whose images our AnyRes path reproduces; refuse the rest.

    ``anyres_max_N`` downsamples an image's unpadded tile features (bilinear) when they cover more
    than ~N tiles (``sqrt(h*w / (N * grid**2)) > 1.1``); with no canvas over ``1.21 * N`` tiles that
    never happens and it is plain AnyRes.
    """
    if aspect == "anyres":
        return
    match = re.fullmatch(r"anyres_max_(\d+)", str(aspect))
    if match:
        limit = int(match.group(1))
        tiles = max((h // image_size) * (w // image_size) for h, w in pinpoints)
        if math.sqrt(tiles / limit) <= 1.1:
            return
        raise ConversionError(
            f"image_aspect_ratio {aspect!r}: images of more than ~{limit} tiles (up to {tiles} with these "
            "image_grid_pinpoints) get their features downsampled, which this model does not implement"
        )
    raise ConversionError(
        f"image_aspect_ratio {aspect!r} is not supported (anyres, or anyres_max_N that never downsamples): "
        "images are processed with AnyRes"
    )


def _lmms_lab_video_settings(cfg: dict, notes: list[str], settings: Settings | None = None) -> dict:
    """Pooling and newline settings of an original config (2024 release vs OneVision-era code).

    Refused with the key named: ``add_faster_video`` (slow-fast frames), a resampler other than
    ``spatial_pool``, pooling modes the original does not have at that place, and an
    ``mm_spatial_pool_stride`` other than 2 after the projector (the original ``main`` code pools videos
    with ``get_2dPool``'s default stride 2 whatever the config says) unless ``--pool-stride`` decides.
    """
    settings = settings or Settings()
    if cfg.get("add_faster_video"):
        raise ConversionError(
            "add_faster_video: the slow-fast video tokens (faster_token, doubled stride on some frames) "
            "are not supported"
        )
    resampler = cfg.get("mm_resampler_type")
    mode = cfg.get("mm_spatial_pool_mode", "average")
    stride = int(cfg.get("mm_spatial_pool_stride") or 2)
    if resampler == "spatial_pool":  # 2024 release: pooled by the resampler, before the projector
        if mode not in ("average", "max"):
            raise ConversionError(
                f"mm_spatial_pool_mode {mode!r} with the spatial_pool resampler is not supported (average or max)"
            )
        position, newline = "before_projector", cfg.get("mm_newline_position", "no_token")
    elif resampler not in (None, "", "none"):
        raise ConversionError(f"mm_resampler_type {resampler!r} is not supported (only spatial_pool or none)")
    elif (
        "mm_newline_position" in cfg or "mm_spatial_pool_stride" in cfg
    ):  # OneVision-era: after the projector
        position, newline = "after_projector", cfg.get("mm_newline_position", "one_token")
        if mode not in visual_tokens.POOL_MODES:
            raise ConversionError(f"mm_spatial_pool_mode {mode!r} is not one of {visual_tokens.POOL_MODES}")
        if stride != 2 and settings.spatial_pool_stride is None:
            raise ConversionError(
                f"mm_spatial_pool_stride {stride}: the original code pools videos after the projector with "
                "stride 2 whatever this says (get_2dPool's default); pass --pool-stride to choose"
            )
    else:
        notes.append(
            "config.json states no video pooling: using the paper's (2x2 average before the projector)"
        )
        return dict(PAPER_VIDEO_SETTINGS)
    if newline not in visual_tokens.NEWLINE_POSITIONS:
        raise ConversionError(
            f"mm_newline_position {newline!r} is not one of {visual_tokens.NEWLINE_POSITIONS}"
        )
    return {
        "spatial_pool_stride": stride,
        "spatial_pool_mode": mode,
        "spatial_pool_position": position,
        "video_newline_position": newline,
    }


def config_from_lmms_lab(
    cfg: dict,
    shapes: dict[str, tuple[int, ...]],
    *,
    image_token_id: int,
    video_token_id: int,
    settings: Settings | None = None,
    notes: list[str] | None = None,
) -> LlavaNextVideoAnyResConfig:
    """Our config for an original (lmms-lab) ``config.json`` dict; ``shapes`` are the checkpoint's tensor
    shapes (original names), used for the vision tower when its name is not a known one."""
    settings = settings or Settings()
    notes = notes if notes is not None else []
    projector = cfg.get("mm_projector_type", "linear")
    if projector != "mlp2x_gelu":
        raise ConversionError(
            f"mm_projector_type {projector!r} is not supported (only mlp2x_gelu: Linear-GELU-Linear)"
        )
    merge = cfg.get("mm_patch_merge_type", "flat")
    if "unpad" not in merge:
        raise ConversionError(
            f"mm_patch_merge_type {merge!r} is not supported: images follow AnyRes spatial_unpad (with image_newline)"
        )
    select = cfg.get("mm_vision_select_feature", "patch")
    strategy = {"patch": "default", "cls_patch": "full"}.get(select)
    if strategy is None:
        raise ConversionError(f"mm_vision_select_feature {select!r} is not supported (patch or cls_patch)")
    vision = _lmms_lab_vision_config(cfg, shapes, settings, notes)
    image_size = int(vision.get("image_size", 336))
    pinpoints = _parse_pinpoints(cfg.get("image_grid_pinpoints"), image_size)
    _check_aspect_ratio(
        cfg.get("image_aspect_ratio", "anyres"), pinpoints or visual_tokens.DEFAULT_GRID_PINPOINTS, image_size
    )
    text, factor = _normalize_text_rope(_lmms_lab_text_config(cfg))
    fields = {
        "image_token_id": image_token_id,
        "video_token_id": video_token_id,
        "projector_hidden_act": "gelu",
        "vision_feature_select_strategy": strategy,
        "vision_feature_layer": cfg.get("mm_vision_select_layer", -2),
        "image_grid_pinpoints": pinpoints,
        "tie_word_embeddings": cfg.get("tie_word_embeddings", False),
        **_lmms_lab_video_settings(cfg, notes, settings),
        **settings.video(),
        **settings.rope(factor),
    }
    return build_config(text, vision, fields)
