"""Planning a conversion (no tensor data read): layout detection, our config (or transformers') derived
from the source's, every tensor name mapped and checked against the model built on the meta device, and
the tokenizer, chat template, generation config and processor files that go with it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..chat_templates import TEMPLATES
from ..compat import (
    LMMS_LAB_TEXT,
    Rule,
    Settings,
    build_config,
    config_from_llava_hf,
    config_from_lmms_lab,
    load_tokenizer,
    name_list,
    quiet_transformers,
)
from ..configuration import LlavaNextVideoAnyResConfig
from ..errors import ConversionError
from .tensors import _IGNORED, _OURS_RULES, _TO_LLAVA_HF_RULES, DTYPES, RULES, Entry, TensorSource, map_name

LAYOUTS = ("llava-hf", "llava-hf-image", "lmms-lab", "ours")
TARGETS = ("ours", "llava-hf")


def config_to_llava_hf(config: LlavaNextVideoAnyResConfig) -> Any:
    """transformers' ``LlavaNextVideoConfig`` equal to ours, or ConversionError naming what it cannot hold."""
    from transformers import LlavaNextVideoConfig

    problems = []
    if config.spatial_pool_position != "before_projector":
        problems.append(f"spatial_pool_position={config.spatial_pool_position}")
    if config.spatial_pool_mode not in ("average", "max"):
        problems.append(f"spatial_pool_mode={config.spatial_pool_mode}")
    if config.video_newline_position != "no_token":
        problems.append(f"video_newline_position={config.video_newline_position}")
    if problems:
        raise ConversionError(
            "cannot express this checkpoint in transformers' LlavaNextVideo layout, which pools before the "
            f"projector (average or max) and adds no video newline: it has {', '.join(problems)}"
        )
    text = config.text_config.to_dict()  # trained context and factor, as transformers reads them
    hf = LlavaNextVideoConfig(
        vision_config=config.vision_config.to_dict(),
        text_config=text,
        image_token_index=config.image_token_id,
        video_token_index=config.video_token_id,
        projector_hidden_act=config.projector_hidden_act,
        multimodal_projector_bias=config.multimodal_projector_bias,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        vision_feature_layer=config.vision_feature_layer,
        image_grid_pinpoints=config.image_grid_pinpoints,
        spatial_pool_stride=config.spatial_pool_stride,
        spatial_pool_mode=config.spatial_pool_mode,
        tie_word_embeddings=config.tie_word_embeddings,
    )
    hf.architectures = ["LlavaNextVideoForConditionalGeneration"]
    return hf


# ============================================================================ tokenizer & template


def add_media_tokens(path: Path, tokenizer: Any, need: dict[str, str]) -> tuple[Any, list[str]]:
    """Reload ``tokenizer`` from ``path`` with the named ``need`` tokens (e.g. ``{"video_token": "<video>"}``)
    registered as special tokens, adding the missing ones in that order; returns (tokenizer, added)."""
    vocab = tokenizer.get_vocab()
    added = [tok for tok in need.values() if tok not in vocab]
    named = {
        key: str(getattr(tokenizer, key)) for key in ("image_token", "video_token") if hasattr(tokenizer, key)
    }
    named.update(need)
    tokenizer = load_tokenizer(path, extra_special_tokens=named)
    vocab = tokenizer.get_vocab()
    lost = [tok for tok in need.values() if tok not in vocab]
    if lost:
        raise ConversionError(f"could not add {lost} to the tokenizer of {path}")
    return tokenizer, added


def detect_chat_template(text_model_type: str, tokenizer: Any) -> str:
    """The original conversation template of a base LLM: Vicuna v1 (Llama/Vicuna), Mistral instruct,
    Yi-34B's ChatML (``chatml_direct``) or Qwen's ``qwen_1_5``."""
    vocab = tokenizer.get_vocab()
    if text_model_type.startswith("qwen"):
        return "qwen_1_5"
    if text_model_type in ("mistral", "mixtral"):
        return "mistral_instruct"
    if "<|im_start|>" in vocab:
        return "chatml_direct"
    return "vicuna_v1"


def _source_chat_template(folder: Path, tokenizer: Any) -> str:
    for file in ("chat_template.jinja", "chat_template.json"):
        path = folder / file
        if path.is_file():
            text = path.read_text()
            return json.loads(text)["chat_template"] if file.endswith(".json") else text
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    raise ConversionError(f"--chat-template source: {folder} has no chat template")


def _generation_config(folder: Path, text_config: Any, tokenizer: Any, template: str) -> Any:
    from transformers import GenerationConfig

    if (folder / "generation_config.json").is_file():
        gen = GenerationConfig.from_pretrained(str(folder))
    else:
        gen = GenerationConfig(
            bos_token_id=getattr(text_config, "bos_token_id", None) or tokenizer.bos_token_id,
            eos_token_id=getattr(text_config, "eos_token_id", None) or tokenizer.eos_token_id,
            pad_token_id=getattr(text_config, "pad_token_id", None) or tokenizer.pad_token_id,
        )
    im_end = tokenizer.get_vocab().get("<|im_end|>")
    if template in ("chatml_direct", "qwen_1_5") and im_end is not None:  # ChatML turns end with <|im_end|>
        eos = gen.eos_token_id
        eos = [] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [eos]
        gen.eos_token_id = eos + [im_end] if im_end not in eos else eos
    return gen


def save_processor(config: Any, tokenizer: Any, chat_template: str | None, folder: Path) -> None:
    """Processor files (image + video processor, tokenizer, chat template) for ``config`` in ``folder``."""
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    try:
        from ..processing import LlavaNextVideoAnyResProcessor
    except ImportError:  # processing not available: the tokenizer (with its template) still makes sense
        tokenizer.save_pretrained(str(folder))
        return
    processor = LlavaNextVideoAnyResProcessor.from_model_config(
        config, tokenizer, chat_template=chat_template
    )
    processor.save_pretrained(str(folder))


# ============================================================================ the plan


@dataclass
class Plan:
    """Everything a conversion will write, decided before any tensor data is read."""

    layout: str
    target: str
    config: Any
    entries: list[Entry]
    source: TensorSource
    tokenizer: Any
    chat_template: str | None
    template_name: str
    generation_config: Any
    notes: list[str] = field(default_factory=list)

    def save_files(self, folder: Path) -> None:
        """config.json, generation_config.json, tokenizer, processor files and chat template."""
        self.config.save_pretrained(str(folder))
        self.generation_config.save_pretrained(str(folder))
        if self.target == "ours":
            save_processor(self.config, self.tokenizer, self.chat_template, folder)
        else:
            _save_llava_hf_processor(self.config, self.tokenizer, self.chat_template, folder)


def _save_llava_hf_processor(config: Any, tokenizer: Any, chat_template: str | None, folder: Path) -> None:
    """Tokenizer (with the chat template) and transformers' LLaVA-NeXT image processor config."""
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(str(folder))
    size = int(config.vision_config.image_size)
    LlavaNextImageProcessorPil(
        image_grid_pinpoints=config.image_grid_pinpoints,
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
    ).save_pretrained(str(folder))


def _detect_layout(config: dict, names: set[str]) -> tuple[str | None, str | None]:
    """(layout by config.json, family by tensor names): either may be None when unrecognised."""
    model_type = config.get("model_type", "")
    by_config = {
        "llava_next_video": "llava-hf",
        "llava_next": "llava-hf-image",
        LlavaNextVideoAnyResConfig.model_type: "ours",
    }.get(model_type)
    architectures = config.get("architectures") or []
    if by_config is None and ("mm_vision_tower" in config or any(a in LMMS_LAB_TEXT for a in architectures)):
        by_config = "lmms-lab"
    if any(n.startswith("model.mm_projector.") for n in names):
        by_tensors = "lmms-lab"
    elif any(re.match(r"^(model\.)?multi_modal_projector\.linear_1\.", n) for n in names):
        by_tensors = "llava-hf"
    else:
        by_tensors = None
    return by_config, by_tensors


def resolve_layout(requested: str, config: dict, names: set[str], folder: Path) -> str:
    """The layout of ``folder``; ``requested`` (``auto`` or a layout) must agree with what is found."""
    by_config, by_tensors = _detect_layout(config, names)
    family = {
        "llava-hf": "llava-hf",
        "llava-hf-image": "llava-hf",
        "ours": "llava-hf",
        "lmms-lab": "lmms-lab",
    }
    layout = by_config if requested == "auto" else requested
    if layout is not None and by_tensors is not None and family[layout] == by_tensors:
        if by_config in (None, layout):
            return layout
    found = (
        f"config.json has model_type {config.get('model_type')!r} and architectures {config.get('architectures')}"
        f" ({by_config or 'no known layout'}); the tensor names look like {by_tensors or 'no known layout'}"
    )
    if requested == "auto" or layout is None:
        raise ConversionError(
            f"unknown checkpoint layout in {folder}: {found}. Known layouts: llava-hf "
            "(LlavaNextVideoForConditionalGeneration), llava-hf-image (LlavaNextForConditionalGeneration), "
            "lmms-lab (original Llava*ForCausalLM with mm_vision_tower), ours"
        )
    raise ConversionError(f"--from {requested} does not match {folder}: {found}")


def _expected_shapes(config: Any, hf: bool = False) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the model ``config`` describes (built on the meta device)."""
    if hf:
        from transformers import LlavaNextVideoForConditionalGeneration as cls
    else:
        from ..modeling import LlavaNextVideoAnyResForConditionalGeneration as cls
    with torch.device("meta"), quiet_transformers():
        model = cls(config)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def _mean_rows(rows: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def grow(t: torch.Tensor) -> torch.Tensor:  # (V, D) -> (rows, D): new rows = mean of the old ones
        mean = t.float().mean(0, keepdim=True).to(t.dtype)
        return torch.cat([t, mean.expand(rows - t.shape[0], -1)], dim=0)

    return grow


def _source_dtype(config: dict, source: TensorSource) -> torch.dtype:
    name = config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype")
    if isinstance(name, str) and name in DTYPES:
        return DTYPES[name]
    floats = [i.dtype for i in source.infos.values() if i.dtype.is_floating_point]
    return max(set(floats), key=floats.count) if floats else torch.float32


def _media_tokens(
    layout: str, config: dict, folder: Path, notes: list[str]
) -> tuple[Any, int | None, int | None]:
    """The tokenizer, with ``<video>`` (and ``<image>``) added where the layout lacks them, and their ids."""
    tokenizer = load_tokenizer(folder)
    need = {}
    if layout in ("llava-hf-image", "lmms-lab") and "<video>" not in tokenizer.get_vocab():
        need["video_token"] = "<video>"
    if layout == "lmms-lab" and "<image>" not in tokenizer.get_vocab():
        need["image_token"] = "<image>"
    if need:
        tokenizer, added = add_media_tokens(folder, tokenizer, need)
        notes.append(f"added {' and '.join(added)} to the tokenizer")
    vocab = tokenizer.get_vocab()
    if layout == "lmms-lab":
        return tokenizer, vocab["<image>"], vocab["<video>"]
    if layout == "llava-hf-image":
        return tokenizer, None, vocab["<video>"]
    return tokenizer, None, None


def plan_conversion(
    folder: Path, layout: str = "auto", target: str = "ours", settings: Settings | None = None
) -> Plan:
    """Read headers and configs of ``folder``, derive the output and check every tensor (no data read)."""
    settings = settings or Settings()
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"{folder} has no config.json")
    cfg = json.loads(config_file.read_text())
    source = TensorSource(folder)
    names = {n for n in source.infos if not _IGNORED.search(n)}
    layout = resolve_layout(layout, cfg, names, folder)
    notes: list[str] = []
    if target == "llava-hf":
        return _plan_to_llava_hf(folder, cfg, source, names, layout, settings)

    tokenizer, image_id, video_id = _media_tokens(layout, cfg, folder, notes)
    if layout in ("llava-hf", "llava-hf-image"):
        config = config_from_llava_hf(cfg, video_token_id=video_id, settings=settings)
    elif layout == "lmms-lab":
        shapes = {n: source.infos[n].shape for n in names}
        config = config_from_lmms_lab(
            cfg, shapes, image_token_id=image_id, video_token_id=video_id, settings=settings, notes=notes
        )
    else:
        fields = {**cfg, **settings.video()}
        for key in ("model_type", "architectures", "transformers_version", "dtype"):
            fields.pop(key, None)
        fields.update({k: v for k, v in settings.rope(None).items() if v is not None})
        text, vision = fields.pop("text_config", None), fields.pop("vision_config", None)
        config = build_config(text, vision, fields)

    mapping, unknown = _map_names(names, RULES[layout], folder)
    embed = "model.language_model.embed_tokens.weight"
    rows = source.infos[mapping[embed]].shape[0] if embed in mapping else None
    if rows is not None:  # the vocabulary: the embedding's rows, grown when the tokenizer outgrew them
        vocab_size = max(rows, len(tokenizer))
        config.text_config.vocab_size = vocab_size
        if vocab_size > rows:
            notes.append(
                f"embeddings grown from {rows} to {vocab_size} rows (new rows: the mean of the others)"
            )
    _fit_num_frames(config, settings, notes)
    expected = _expected_shapes(config)
    if config.tie_word_embeddings and "lm_head.weight" in mapping:
        del mapping["lm_head.weight"]
        notes.append("lm_head.weight dropped: the model ties it to the input embedding")
    out_dtype = DTYPES.get(settings.dtype) or _source_dtype(cfg, source)
    config.dtype = str(out_dtype).removeprefix("torch.")
    entries = _entries(expected, mapping, unknown, source, settings.dtype, rows, folder, layout)
    template_name = settings.chat_template or detect_chat_template(config.text_config.model_type, tokenizer)
    template = (
        _source_chat_template(folder, tokenizer) if template_name == "source" else TEMPLATES[template_name]
    )
    gen = _generation_config(folder, config.text_config, tokenizer, template_name)
    return Plan(layout, target, config, entries, source, tokenizer, template, template_name, gen, notes)


def _fit_num_frames(config: LlavaNextVideoAnyResConfig, settings: Settings, notes: list[str]) -> None:
    """Default frame count: what fits the context with the text budget, unless ``--num-frames`` says."""
    if settings.num_frames is not None:
        return
    fits = config.frames_that_fit
    if fits < config.num_frames:
        notes.append(
            f"num_frames {config.num_frames} -> {max(1, fits)}: {config.num_frames} frames do not fit the "
            f"{config.context_length}-token context with text; --max-frames N or --rope-factor scales RoPE instead"
        )
        config.num_frames = max(1, fits)


def _map_names(names: set[str], rules: list[Rule], folder: Path) -> tuple[dict[str, str], list[str]]:
    """({our name: source name}, source names no rule knows)."""
    mapping: dict[str, str] = {}
    unknown = []
    for name in sorted(names):
        target = map_name(name, rules)
        if target is None:
            unknown.append(name)
        elif target in mapping:
            raise ConversionError(f"{folder}: both {mapping[target]} and {name} map to {target}")
        else:
            mapping[target] = name
    return mapping, unknown


def _entries(
    expected: dict[str, tuple[int, ...]],
    mapping: dict[str, str],
    unknown: list[str],
    source: TensorSource,
    dtype: str,
    rows: int | None,
    folder: Path,
    layout: str,
    rename: Callable[[str], str] = lambda name: name,
) -> list[Entry]:
    """One [`Entry`] per expected tensor, or a ConversionError listing every missing, unexpected and
    mis-shaped tensor."""
    missing = [name for name in expected if name not in mapping]
    unexpected = unknown + [src for name, src in mapping.items() if name not in expected]
    entries, mismatched = [], []
    for name, shape in expected.items():
        if name not in mapping:
            continue
        info = source.infos[mapping[name]]
        fix = None
        if rows is not None and name in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
            if info.shape[0] == rows and shape[0] > rows:
                fix = _mean_rows(shape[0])
        have = (shape[0], *info.shape[1:]) if fix is not None else info.shape
        if have != shape:
            mismatched.append(f"{mapping[name]} {list(info.shape)} (expected {list(shape)})")
            continue
        out = DTYPES[dtype] if dtype in DTYPES and info.dtype.is_floating_point else info.dtype
        entries.append(Entry(rename(name), mapping[name], out, shape, fix))
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing: {name_list(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {name_list(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} tensor(s) with the wrong shape: {name_list(mismatched)}")
    if problems:
        raise ConversionError(f"cannot convert {folder} (layout {layout}): " + "; ".join(problems))
    return entries


def _plan_to_llava_hf(
    folder: Path, cfg: dict, source: TensorSource, names: set[str], layout: str, settings: Settings
) -> Plan:
    if layout != "ours":
        raise ConversionError(
            f"--to llava-hf converts checkpoints of this package's format; {folder} is {layout}"
        )
    config = LlavaNextVideoAnyResConfig.from_dict({k: v for k, v in cfg.items() if k != "model_type"})
    hf = config_to_llava_hf(config)
    out_dtype = DTYPES.get(settings.dtype) or _source_dtype(cfg, source)
    hf.dtype = str(out_dtype).removeprefix("torch.")
    mapping, unknown = _map_names(names, _OURS_RULES, folder)
    expected = _expected_shapes(hf, hf=True)  # transformers 5 names, which are ours
    entries = _entries(
        expected, mapping, unknown, source, settings.dtype, None, folder, layout,
        rename=lambda name: map_name(name, _TO_LLAVA_HF_RULES) or name,
    )  # fmt: skip
    tokenizer = load_tokenizer(folder)
    template = (
        _source_chat_template(folder, tokenizer)
        if settings.chat_template in (None, "source")
        else TEMPLATES[settings.chat_template]
    )
    gen = _generation_config(folder, config.text_config, tokenizer, settings.chat_template or "")
    notes = ["num_frames/max_frames are not part of transformers' config and were dropped"]
    return Plan(layout, "llava-hf", hf, entries, source, tokenizer, template, "source", gen, notes)
