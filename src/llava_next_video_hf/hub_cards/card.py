"""Model cards for checkpoints of this format: Hub metadata + a body generated from the config.

[`build_model_card`] reads ``config.json`` (and the weights' headers for the parameter count) and
writes what a user needs: architecture, frames and RoPE factor, tokens per frame, loading with and
without the plugin, serving with vLLM, evaluation results (when given) and the citation.

[`card_problems`] is the offline metadata check run before any upload. What it checks, exactly:

* huggingface_hub's own parsing: the card text goes through ``ModelCard(text)`` (YAML block must be a
  mapping; ``model-index`` is parsed by ``model_index_to_eval_results`` and every result must build an
  ``EvalResult``), and the parsed results must equal the ones written (round trip);
* the Hub's documented rules for the fields we write (hub-docs ``model-cards.md``/``modelcard.md``,
  ``repositories-licenses.md``): ``license`` is a Hub license identifier (``other`` needs
  ``license_name``), ``base_model``/``datasets`` are valid repo ids, ``base_model_relation`` is one of
  ``adapter``/``merge``/``quantized``/``finetune`` and needs ``base_model``, every model-index
  result has task type, dataset type/name and metrics with type and value;
* this format's requirements: ``library_name: transformers``, ``pipeline_tag: video-text-to-text``,
  tags ``llava-next-video`` and ``vllm``.

The Hub's server-side check (``POST /api/validate-yaml``, which ``ModelCard.validate`` and
``upload_folder`` call) needs the network and is not reproduced here: ``upload_folder`` runs it again
before uploading anything.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .. import rope
from ..errors import LlavaNextVideoError

PIPELINE_TAG = "video-text-to-text"
LIBRARY_NAME = "transformers"
REQUIRED_TAGS = ("llava-next-video", "vllm")
DEFAULT_TAGS = (*REQUIRED_TAGS, "video", "multimodal", "llava_next_video_anyres")
BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")
# hub-docs/docs/hub/repositories-licenses.md (licenses the Hub knows; newer ones only warn offline)
HUB_LICENSES = frozenset(
    """apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
    bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda
    cc cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0
    cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0
    cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0
    etalab-2.0 eupl-1.1 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc lppl-1.3c ms-pl
    mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr
    deepfloyd-if-license llama2 gemma unknown other""".split()
)
_LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+\-]*$")

CITATION = """@misc{zhang2024llavanextvideo,
  title={LLaVA-NeXT: A Strong Zero-shot Video Understanding Model},
  url={https://llava-vl.github.io/blog/2024-04-30-llava-next-video/},
  author={Zhang, Yuanhan and Li, Bo and Liu, Haotian and Lee, Yong Jae and Gui, Liangke and Fu, Di and
          Feng, Jiashi and Liu, Ziwei and Li, Chunyuan},
  month={April},
  year={2024}
}"""

PAPER_SOURCE_NAME = "LLaVA-NeXT-Video blog post (2024-04-30), reported"
PAPER_SOURCE_URL = "https://llava-vl.github.io/blog/2024-04-30-llava-next-video/"
# Reported figures of the release (blog post results table); never re-measured here.
# benchmark -> (dataset id, pretty name, task name, [(metric type, metric name)]) in the table's column order
_BENCHMARKS = {
    "nextqa": ("lmms-lab/NExTQA", "NExT-QA", "Video question answering", [("wups", "WUPS@All")]),
    "activitynetqa": (
        "lmms-lab/ActivityNetQA",
        "ActivityNet-QA",
        "Video question answering",
        [("accuracy", "Accuracy"), ("score", "Score")],
    ),
    "vdd": (
        "lmms-lab/VideoDetailCaption",
        "Video Detailed Description",
        "Video description",
        [("score", "Score")],
    ),
    "videochatgpt": (
        "lmms-lab/VideoChatGPT",
        "VideoChatGPT",
        "Video-based text generation",
        [
            ("correctness", "Correctness"),
            ("detail", "Detail"),
            ("context", "Context"),
            ("temporal", "Temporal"),
            ("consistency", "Consistency"),
        ],
    ),
}
PAPER_RESULTS: dict[str, dict[str, tuple[float, ...]]] = {
    "LLaVA-NeXT-Video-7B": {
        "nextqa": (26.90,),
        "activitynetqa": (53.5, 3.2),
        "vdd": (3.32,),
        "videochatgpt": (3.39, 3.29, 3.92, 2.60, 3.12),
    },
    "LLaVA-NeXT-Video-7B-DPO": {
        "nextqa": (26.92,),
        "activitynetqa": (60.2, 3.5),
        "vdd": (3.72,),
        "videochatgpt": (3.64, 3.45, 4.17, 2.95, 4.08),
    },
    "LLaVA-NeXT-Video-34B": {
        "nextqa": (27.34,),
        "activitynetqa": (58.8, 3.4),
        "vdd": (3.48,),
        "videochatgpt": (3.48, 3.37, 3.95, 2.64, 3.28),
    },
    "LLaVA-NeXT-Video-34B-DPO": {
        "nextqa": (27.30,),
        "activitynetqa": (64.42, 3.6),
        "vdd": (3.84,),
        "videochatgpt": (3.81, 3.55, 4.24, 3.14, 4.12),
    },
}


class ModelCardError(LlavaNextVideoError, ValueError):
    """Card facts that cannot make valid Hub metadata (the message names the field and the rule)."""


def reported_results(model: str) -> list[EvalResult]:
    """The release's *reported* figures for one official model, as ``EvalResult`` (source: the blog post).

    Args:
        model: one of ``PAPER_RESULTS`` (``"LLaVA-NeXT-Video-7B"``, ``"LLaVA-NeXT-Video-7B-DPO"``,
            ``"LLaVA-NeXT-Video-34B"``, ``"LLaVA-NeXT-Video-34B-DPO"``).
    """
    if model not in PAPER_RESULTS:
        raise ModelCardError(f"no reported results for {model!r}; known: {', '.join(PAPER_RESULTS)}")
    results = []
    for bench, values in PAPER_RESULTS[model].items():
        dataset, pretty, task, metrics = _BENCHMARKS[bench]
        for (metric, name), value in zip(metrics, values, strict=True):
            results.append(
                EvalResult(
                    task_type=PIPELINE_TAG,
                    task_name=task,
                    dataset_type=dataset,
                    dataset_name=pretty,
                    metric_type=metric,
                    metric_name=name,
                    metric_value=value,
                    source_name=PAPER_SOURCE_NAME,
                    source_url=PAPER_SOURCE_URL,
                )
            )
    return results


# ---------------------------------------------------------------------------------------- facts


def _as_eval_result(item: EvalResult | dict) -> EvalResult:
    if isinstance(item, EvalResult):
        return item
    try:
        return EvalResult(**item)
    except TypeError as error:
        raise ModelCardError(f"eval result {item!r} is not a valid EvalResult: {error}") from error


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _read_config(folder: Path) -> Any:
    from ..configuration import LlavaNextVideoAnyResConfig

    if not (folder / "config.json").is_file():
        raise ModelCardError(f"{folder} has no config.json: the card is generated from the config")
    return LlavaNextVideoAnyResConfig.from_pretrained(folder)


def _has_remote_code(folder: Path) -> bool:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return "AutoModelForImageTextToText" in (config.get("auto_map") or {})


def build_model_card(
    folder: str | os.PathLike,
    *,
    repo_id: str | None = None,
    model_name: str | None = None,
    base_model: str | Sequence[str] | None = None,
    base_model_relation: str | None = None,
    license: str | None = None,
    license_name: str | None = None,
    license_link: str | None = None,
    datasets: str | Sequence[str] | None = None,
    language: str | Sequence[str] | None = ("en",),
    tags: Sequence[str] = (),
    eval_results: Sequence[EvalResult | dict] | None = None,
    description: str | None = None,
    citation: str | None = CITATION,
    remote_code: bool | None = None,
) -> ModelCard:
    """A ``huggingface_hub.ModelCard`` for the checkpoint in ``folder``.

    Args:
        folder: checkpoint folder (its ``config.json`` drives the body).
        repo_id: the Hub repo the card is for (used in the code snippets; defaults to the folder name).
        model_name: title and ``model-index`` name (defaults to the last part of ``repo_id``).
        base_model: Hub id(s) of the model(s) this checkpoint derives from.
        base_model_relation: ``finetune``, ``adapter``, ``merge`` or ``quantized``; leave it unset for a
            pure format conversion (the Hub docs' advice: there is no "conversion" relation).
        license: a Hub license identifier (``llama2``, ``apache-2.0``, ...); ``other`` needs
            ``license_name`` (and ``license_link``). Defaults to ``unknown``.
        datasets: Hub dataset ids the model was trained on.
        language: ISO 639 codes.
        tags: extra tags (``llava-next-video``, ``vllm``, ``video``, ``multimodal`` are always there).
        eval_results: ``EvalResult`` objects (or their keyword dicts); they become the ``model-index``
            and a table. Give ``source_name``/``source_url`` for figures taken from elsewhere (see
            [`reported_results`] for the release's reported figures).
        description: a paragraph under the title.
        citation: BibTeX to cite (default: the LLaVA-NeXT-Video release); ``None`` leaves it out.
        remote_code: whether the folder ships remote code (default: read from ``config.json``'s ``auto_map``).

    Raises:
        ModelCardError: a fact breaks a Hub metadata rule (bad license id, relation, repo id, ...).
    """
    folder = Path(folder)
    config = _read_config(folder)
    repo_id = repo_id or folder.name
    model_name = model_name or repo_id.split("/")[-1]
    remote = _has_remote_code(folder) if remote_code is None else remote_code
    results = [_as_eval_result(r) for r in eval_results or []]
    extra: dict[str, Any] = {}
    if base_model_relation is not None:
        extra["base_model_relation"] = base_model_relation
    all_tags = list(dict.fromkeys([*DEFAULT_TAGS, *(["custom_code"] if remote else []), *tags]))
    data = ModelCardData(
        base_model=base_model if isinstance(base_model, str) or base_model is None else list(base_model),
        datasets=_as_list(datasets),
        eval_results=results or None,
        language=_as_list(language),
        library_name=LIBRARY_NAME,
        license=license or "unknown",
        license_name=license_name,
        license_link=license_link,
        model_name=model_name,
        pipeline_tag=PIPELINE_TAG,
        tags=all_tags,
        **extra,
    )
    body = _body(folder, config, repo_id, model_name, data, results, description, citation, remote)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
    problems = card_problems(str(card))
    if problems:
        raise ModelCardError(
            "the model card metadata is invalid:\n" + "\n".join(f"  - {p}" for p in problems)
        )
    return card


# ---------------------------------------------------------------------------------------- body


def _fmt_params(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit} ({n:,})"
    return f"{n:,}"


def _architecture(folder: Path, config: Any) -> str:
    from .folder import count_parameters

    vision, text = config.vision_config, config.text_config
    layers = config.vision_feature_layer
    dtype = getattr(config, "dtype", None) or getattr(text, "dtype", None)
    rows = [
        (
            "architecture",
            "`LlavaNextVideoAnyResForConditionalGeneration` (model_type `llava_next_video_anyres`)",
        ),
        (
            "vision tower",
            f"`{vision.model_type}`: {vision.num_hidden_layers} layers, hidden {vision.hidden_size}, "
            f"{vision.image_size} px, patch {vision.patch_size}; features from layer {layers}, "
            f"strategy `{config.vision_feature_select_strategy}`",
        ),
        (
            "projector",
            f"Linear-{config.projector_hidden_act.upper()}-Linear ({vision.hidden_size} -> {text.hidden_size})",
        ),
        (
            "language model",
            f"`{text.model_type}`: {text.num_hidden_layers} layers, hidden {text.hidden_size}, "
            f"vocabulary {text.vocab_size}",
        ),
        ("parameters", _fmt_params(count_parameters(folder))),
        ("weights dtype", f"`{str(dtype).removeprefix('torch.')}`" if dtype else "as stored"),
        (
            "images",
            f"AnyRes tiles of {vision.image_size} px on the canvases {config.image_grid_pinpoints} plus the base view",
        ),
    ]
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _video(config: Any) -> str:
    kw = config.video_token_kwargs()
    side = rope.pooled_grid(kw["image_size"], kw["patch_size"], kw["stride"], kw["mode"])
    grid = kw["image_size"] // kw["patch_size"]
    frames, budget = config.num_frames, config.max_frames
    original, context = config.original_max_position_embeddings, config.context_length
    factor = config.linear_rope_factor
    newline = {
        "no_token": "no newline token",
        "one_token": "one newline token after the whole video",
        "frame": "one newline token after every frame",
        "grid": "one newline token after every row of every frame",
    }[config.video_newline_position]
    fit = rope.max_frames_that_fit(context, rope.TEXT_TOKEN_BUDGET, **kw)
    asked = config.rope_scaling_factor
    rule = {
        None: "kept as the language model's own RoPE",
        "auto": f"`auto`: derived from {budget or frames} frames by the rule "
        "`f = ceil((frames x tokens_per_frame + 1000) / trained context)`, applied when f >= 2",
    }.get(asked, f"set to {asked}")
    return "\n".join(
        [
            f"- **Frames**: {frames} sampled per video by default (uniform `linspace`, first and last frame "
            "included)" + (f"; frame budget (`max_frames`) {budget}" if budget else "") + ".",
            f"- **Tokens per frame**: {grid}x{grid} patch features pooled with stride "
            f"{config.spatial_pool_stride} (`{config.spatial_pool_mode}`, {config.spatial_pool_position.replace('_', ' ')}) "
            f"-> {side}x{side} = {side * side} tokens, {newline} (`{config.video_newline_position}`): "
            f"a 1-frame clip is {config.num_video_tokens(1)} tokens, the default {frames}-frame clip "
            f"{config.num_video_tokens(frames)}.",
            f"- **RoPE**: linear factor **{factor:g}** ({rule}): {original} trained positions x {factor:g} = "
            f"**{context}** positions of context.",
            f"- **Longest video** with {rope.TEXT_TOKEN_BUDGET} tokens left for text: {fit} frames. More frames "
            "need a larger factor: `from_pretrained(..., max_frames=N, rope_scaling_factor='auto')` with the "
            "plugin (prompts that do not fit are refused with the numbers, never truncated).",
        ]
    )


def _usage(repo_id: str, config: Any, remote: bool) -> str:
    frames = config.num_frames
    plugin = f"""### transformers, with the plugin

```bash
pip install llava-next-video-hf
```

```python
import llava_next_video_hf  # registers the model and processor with transformers' Auto classes
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{repo_id}", dtype="auto")
processor = AutoProcessor.from_pretrained("{repo_id}")
messages = [{{"role": "user", "content": [
    {{"type": "video", "path": "clip.mp4"}},
    {{"type": "text", "text": "What happens in this video?"}},
]}}]
inputs = processor.apply_chat_template(
    messages, add_generation_prompt=True, tokenize=True, return_dict=True, num_frames={frames}
)
out = model.generate(**inputs, max_new_tokens=128)
print(processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```

or from the command line: `llava-next-video generate {repo_id} --video clip.mp4 --prompt "What happens?"`.
"""
    no_plugin = f"""### transformers, without the plugin (remote code)

This repository ships the plugin's model and processor code (generated from `llava-next-video-hf`,
imports only torch, transformers, numpy and Pillow; it opens no files and no network connections).
Read it before trusting it. The remote processor takes decoded frames: a `(T, H, W, 3)` uint8 array.

```python
import numpy as np
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{repo_id}", dtype="auto", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
frames = ...  # (T, H, W, 3) uint8, e.g. {frames} frames at np.linspace(0, total - 1, {frames}, dtype=int)
messages = [{{"role": "user", "content": [{{"type": "video"}}, {{"type": "text", "text": "What happens?"}}]}}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(text=prompt, videos=frames, return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=128)
```
"""
    if not remote:
        no_plugin = """### transformers, without the plugin

This export ships no remote code: install the plugin (above). Exports made with
`llava-next-video export` (default) ship it and load with `trust_remote_code=True`.
"""
    vllm = f"""### vLLM

The plugin registers the architecture with vLLM through its `vllm.general_plugins` entry point
(the remote code above is for transformers only).

```bash
pip install "llava-next-video-hf[vllm]"
vllm serve {repo_id} --max-model-len {config.context_length} \\
    --media-io-kwargs '{{"video": {{"num_frames": {frames}}}}}'
```

```bash
curl http://localhost:8000/v1/chat/completions -H "Content-Type: application/json" -d '{{
  "model": "{repo_id}",
  "messages": [{{"role": "user", "content": [
    {{"type": "video_url", "video_url": {{"url": "https://example.com/clip.mp4"}}}},
    {{"type": "text", "text": "What happens in this video?"}}]}}]
}}'
```

Local files need `--allowed-local-media-path DIR` and `file://` URLs.
"""
    return "## How to use\n\n" + plugin + "\n" + no_plugin + "\n" + vllm


def _results_table(results: list[EvalResult]) -> str:
    lines = [
        "## Evaluation",
        "",
        "| benchmark | metric | value | source |",
        "|---|---|---|---|",
    ]
    for r in results:
        source = f"[{r.source_name}]({r.source_url})" if r.source_name else "this repository"
        lines.append(f"| {r.dataset_name} | {r.metric_name or r.metric_type} | {r.metric_value} | {source} |")
    if any(r.source_name for r in results):
        lines += [
            "",
            "Figures with a source were **reported** there for the released model and were not re-measured "
            "for this checkpoint.",
        ]
    return "\n".join(lines)


def _body(
    folder: Path,
    config: Any,
    repo_id: str,
    model_name: str,
    data: ModelCardData,
    results: list[EvalResult],
    description: str | None,
    citation: str | None,
    remote: bool,
) -> str:
    base = data.base_model
    loads = (
        "with the plugin, or with `trust_remote_code=True` from this repository"
        if remote
        else "with the plugin"
    )
    intro = description or (
        "LLaVA-NeXT-Video (AnyRes video with linear-scaled RoPE) in the `llava_next_video_anyres` format of "
        f"[llava-next-video-hf](https://pypi.org/project/llava-next-video-hf/): loads with transformers ({loads}) "
        "and serves with vLLM."
    )
    if base:
        bases = [base] if isinstance(base, str) else base
        relation = data.get("base_model_relation")
        how = f" ({relation} of)" if relation else ""
        intro += (
            "\n\nBase model"
            + how
            + ": "
            + ", ".join(f"[{b}](https://huggingface.co/{b})" for b in bases)
            + "."
        )
    if data.license in (None, "unknown"):
        intro += "\n\nLicense: not stated for this export; check the base model's license before use."
    parts = [
        f"# {model_name}",
        intro,
        "## Model",
        _architecture(folder, config),
        "## Video: frames, tokens and RoPE",
        _video(config),
        _usage(repo_id, config, remote),
    ]
    if results:
        parts.append(_results_table(results))
    if citation:
        parts.append("## Citation\n\n```bibtex\n" + citation.strip() + "\n```")
    return "\n" + "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------- checks


def _repo_id_problem(value: Any, field: str) -> str | None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(value, str):
        return f"{field}: expected a Hub id string, got {value!r}"
    try:
        validate_repo_id(value)
    except HFValidationError as error:
        return f"{field}: {value!r} is not a valid Hub id ({error})"
    return None


def _metadata_problems(meta: dict) -> list[str]:
    problems = []
    if meta.get("library_name") != LIBRARY_NAME:
        problems.append(f"library_name must be {LIBRARY_NAME!r}, got {meta.get('library_name')!r}")
    if meta.get("pipeline_tag") != PIPELINE_TAG:
        problems.append(f"pipeline_tag must be {PIPELINE_TAG!r}, got {meta.get('pipeline_tag')!r}")
    tags = meta.get("tags") or []
    missing = [t for t in REQUIRED_TAGS if t not in tags]
    if missing:
        problems.append(f"tags must include {list(REQUIRED_TAGS)}; missing {missing}")
    lic = meta.get("license")
    if not isinstance(lic, str) or not _LICENSE_ID.match(lic):
        problems.append(
            f"license must be a Hub license identifier such as 'apache-2.0' or 'llama2', got {lic!r}"
        )
    elif lic == "other" and not meta.get("license_name"):
        problems.append("license 'other' needs license_name (and license_link or a LICENSE file)")
    base = meta.get("base_model")
    for b in [base] if isinstance(base, str) else base or []:
        problems.append(_repo_id_problem(b, "base_model") or "")
    relation = meta.get("base_model_relation")
    if relation is not None:
        if relation not in BASE_MODEL_RELATIONS:
            problems.append(
                f"base_model_relation must be one of {list(BASE_MODEL_RELATIONS)}, got {relation!r}"
            )
        if not base:
            problems.append("base_model_relation needs base_model")
    datasets = meta.get("datasets") or []
    for d in [datasets] if isinstance(datasets, str) else datasets:
        problems.append(_repo_id_problem(d, "datasets") or "")
    return [p for p in problems if p]


def _model_index_problems(meta: dict) -> list[str]:
    problems = []
    for entry in meta.get("model-index") or []:
        if not entry.get("name"):
            problems.append("model-index entry without a name")
        for i, result in enumerate(entry.get("results") or []):
            where = f"model-index result {i}"
            task, dataset = result.get("task") or {}, result.get("dataset") or {}
            if not task.get("type"):
                problems.append(f"{where}: task.type is required")
            if not dataset.get("type") or not dataset.get("name"):
                problems.append(f"{where}: dataset.type and dataset.name are required")
            metrics = result.get("metrics") or []
            if not metrics:
                problems.append(f"{where}: metrics must not be empty")
            for m in metrics:
                if not m.get("type") or m.get("value") is None:
                    problems.append(f"{where}: every metric needs a type and a value, got {m}")
            source = result.get("source")
            if source is not None and not source.get("url"):
                problems.append(f"{where}: source needs a url")
    return problems


def card_problems(text: str) -> list[str]:
    """Offline metadata problems of a model card's text (empty when it passes); see the module docstring."""
    import yaml

    try:
        card = ModelCard(text)  # huggingface_hub's parsing; raises on an invalid model-index
    except (ValueError, yaml.YAMLError) as error:
        return [f"huggingface_hub cannot parse the metadata: {error}"]
    match = re.match(r"^\s*---\s*\n(.*?)\n---\s*\n", text, flags=re.DOTALL)
    if not match:
        return ["no YAML metadata block at the top of the card"]
    meta = yaml.safe_load(match.group(1)) or {}
    problems = _metadata_problems(meta) + _model_index_problems(meta)
    reparsed = ModelCard(str(card)).data
    if (reparsed.eval_results or []) != (card.data.eval_results or []):
        problems.append("the eval results do not survive a save/load round trip")
    if isinstance(meta.get("license"), str) and meta["license"] not in HUB_LICENSES:
        import warnings

        warnings.warn(
            f"license {meta['license']!r} is not in the Hub's documented list; the Hub may refuse it",
            stacklevel=2,
        )
    return problems


__all__ = [
    "CITATION",
    "PAPER_RESULTS",
    "ModelCardError",
    "build_model_card",
    "card_problems",
    "reported_results",
]
