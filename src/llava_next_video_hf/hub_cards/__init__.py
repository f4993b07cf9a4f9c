"""Model cards, Hub-ready exports with remote code, and ``llava-next-video export``/``publish``.

* [`build_model_card`]: a ``huggingface_hub.ModelCard`` generated from a checkpoint's config, with
  Hub metadata (``library_name``, ``pipeline_tag``, ``base_model`` + relation, ``license``, ``tags``,
  ``datasets``, ``model-index``) checked offline by [`card_problems`].
* [`export_for_hub`]: weights, configs, processor, tokenizer, chat template, card and, as remote code,
  the package's model core copied by transformers' ``custom_object_save`` (``auto_map`` included), so
  machines without the plugin load the folder with ``trust_remote_code=True``.
* [`publish`]: offline checks, then ``create_repo`` + ``upload_folder``; ``dry_run`` lists the files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .card import (
    PAPER_RESULTS,
    ModelCardError,
    build_model_card,
    card_problems,
    reported_results,
)
from .check import check_folder
from .export import export_for_hub, plan_copy
from .folder import HubFolderError
from .publish import PublishError, PublishPlan, plan_publish, publish
from .remote_code import RemoteCodeError, generate_remote_code


def _run_export(args: argparse.Namespace) -> int:
    facts = {
        "repo_id": args.repo_id,
        "model_name": args.model_name,
        "base_model": args.base_model or None,
        "base_model_relation": args.base_model_relation,
        "license": args.license,
        "license_name": args.license_name,
        "license_link": args.license_link,
        "datasets": args.dataset or None,
        "language": args.language or ("en",),
        "tags": args.tag,
        "eval_results": reported_results(args.reported_results) if args.reported_results else None,
        "description": args.description,
    }
    dst = export_for_hub(
        args.src, args.dst, remote_code=not args.no_remote_code, overwrite=args.overwrite, **facts
    )
    print(f"exported {args.src} -> {dst}")
    _, skipped = plan_copy(Path(args.src))
    if skipped:
        print(f"left out (not part of a Hub checkpoint): {', '.join(skipped)}")
    print(f"check it with: llava-next-video publish {dst} {args.repo_id or 'NAMESPACE/NAME'} --dry-run")
    return 0


def _run_publish(args: argparse.Namespace) -> int:
    publish(
        args.src,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        dry_run=args.dry_run,
        token=args.token,
        commit_message=args.commit_message,
    )
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` and ``publish`` subcommands to the ``llava-next-video`` parser."""
    p = subparsers.add_parser(
        "export",
        help="write a Hub-ready folder: checkpoint + model card + remote code",
        description="Copy a checkpoint into a Hub-ready folder with a generated model card and (by default) "
        "remote code, so it loads with trust_remote_code=True where the plugin is not installed.",
    )
    p.add_argument("src", help="checkpoint folder (model_type llava_next_video_anyres)")
    p.add_argument("dst", help="folder to create")
    p.add_argument("--no-remote-code", action="store_true", help="ship no remote code (plugin users only)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace DST when it is a checkpoint folder (never SRC or a folder holding it)",
    )
    p.add_argument("--repo-id", help="the Hub repo the card is written for (used in its snippets)")
    p.add_argument("--model-name", help="card title and model-index name (default: from --repo-id)")
    p.add_argument("--base-model", action="append", default=[], help="Hub id of a base model (repeatable)")
    p.add_argument(
        "--base-model-relation",
        choices=("finetune", "adapter", "merge", "quantized"),
        help="how this model derives from --base-model (leave out for a pure format conversion)",
    )
    p.add_argument("--license", help="Hub license id, e.g. llama2 or apache-2.0 (default: unknown)")
    p.add_argument("--license-name", help="with --license other")
    p.add_argument("--license-link", help="with --license other")
    p.add_argument(
        "--dataset", action="append", default=[], help="Hub dataset id used in training (repeatable)"
    )
    p.add_argument("--language", action="append", default=[], help="ISO 639 code (repeatable; default en)")
    p.add_argument("--tag", action="append", default=[], help="extra tag (repeatable)")
    p.add_argument(
        "--reported-results",
        choices=sorted(PAPER_RESULTS),
        help="add the release's reported figures of this model (cited, marked as reported)",
    )
    p.add_argument("--description", help="paragraph under the card's title")
    p.set_defaults(func=_run_export)

    q = subparsers.add_parser(
        "publish",
        help="check an exported folder and upload it to the Hugging Face Hub",
        description="Check SRC offline (config, weights and shards, processor, tokenizer, remote code, "
        "model card metadata), then create_repo + upload_folder. Nothing is uploaded unless SRC passes.",
    )
    q.add_argument("src", help="folder written by `llava-next-video export`")
    q.add_argument("repo_id", help="target model repo, 'namespace/name'")
    q.add_argument("--private", action="store_true", help="create the repo private")
    q.add_argument("--revision", help="branch to upload to (created from main if missing; default main)")
    q.add_argument(
        "--dry-run", action="store_true", help="check and list path_in_repo + size; upload nothing"
    )
    q.add_argument(
        "--token",
        help="Hub token with write access (default: HF_TOKEN, then the stored `hf auth login`); "
        "prefer HF_TOKEN: a command-line token is visible to other local users",
    )
    q.add_argument("--commit-message", help="commit message of the upload")
    q.set_defaults(func=_run_publish)


__all__ = [
    "PAPER_RESULTS",
    "HubFolderError",
    "ModelCardError",
    "PublishError",
    "PublishPlan",
    "RemoteCodeError",
    "add_cli",
    "build_model_card",
    "card_problems",
    "check_folder",
    "export_for_hub",
    "generate_remote_code",
    "plan_publish",
    "publish",
    "reported_results",
]
