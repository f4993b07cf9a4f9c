"""Model cards for checkpoints of this format: Hub metadata + a body generated from the config.

[`build_model_card`] reads ``config.json`` (and the weights' headers for the parameter count) and
writes what a user needs: architecture, frames and RoPE factor, tokens per frame, loading with and
without the plugin, serving with vLLM, evaluation results (when given) and the citation. The text is
the Jinja template ``assets/model_card_template.md``, rendered by huggingface_hub's
``ModelCard.from_template``: the metadata comes from ``ModelCardData``, this module computes the values.

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

from .. import rope, visual_tokens
from ..errors import LlavaNextVideoError

# The card's text, metadata block included: rendered by ``ModelCard.from_template`` with the values below.
TEMPLATE = Path(__file__).resolve().parents[1] / "assets" / "model_card_template.md"
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
        base_model_relation=base_model_relation,  # left out of the YAML when None
    )
    card = ModelCard.from_template(
        data,
        template_path=str(TEMPLATE),
        model_name=model_name,
        repo_id=repo_id,
        description=description,
        remote=remote,
        results=results,
        citation=citation.strip() if citation else None,
        **_template_values(folder, config),
    )
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


def _template_values(folder: Path, config: Any) -> dict[str, Any]:
    """What the template shows of the checkpoint: its config and the numbers derived from it."""
    from .folder import count_parameters

    kw = config.video_token_kwargs()
    dtype = getattr(config, "dtype", None) or getattr(config.text_config, "dtype", None)
    return {
        "config": config,
        "vision": config.vision_config,
        "text": config.text_config,
        "parameters": _fmt_params(count_parameters(folder)),
        "dtype": str(dtype).removeprefix("torch.") if dtype else None,
        "frames": config.num_frames,
        "max_frames": config.max_frames,
        "grid": kw["image_size"] // kw["patch_size"],
        "side": visual_tokens.pooled_grid(kw["image_size"], kw["patch_size"], kw["stride"], kw["mode"]),
        "tokens_one_frame": config.num_video_tokens(1),
        "tokens_default_clip": config.num_video_tokens(config.num_frames),
        "factor": f"{config.linear_rope_factor:g}",
        "rope_asked": config.rope_scaling_factor,
        "trained_context": config.trained_context_length,
        "context": config.context_length,
        "text_budget": rope.TEXT_TOKEN_BUDGET,
        "longest_video": config.frames_that_fit,
    }


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


# Measured (huggingface_hub 2.4): its model-index parsing raises on missing keys but accepts an empty
# name, task or dataset type, an empty metrics list and a null value; the Hub's server check refuses them.
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
