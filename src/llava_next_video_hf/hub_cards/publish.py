"""``publish``: check an exported folder offline, then ``create_repo`` + ``upload_folder``.

Order of work (nothing reaches the network before the folder passes):

1. ``repo_id`` syntax (huggingface_hub's ``validate_repo_id``);
2. [`check_folder`]: config, weights (every shard of the index, readable safetensors headers),
   processor and tokenizer files, remote code that ``auto_map`` points to, README.md metadata;
3. ``--dry-run`` stops here and prints ``repo_id@revision`` and every ``path_in_repo  size``;
4. the token (``--token``, else ``HF_TOKEN``, else the Hub client's stored login); it is passed to the
   client only, never printed, logged or written;
5. ``HfApi.create_repo(exist_ok=True)``, ``create_branch`` for a revision other than ``main``, and one
   ``upload_folder`` restricted (``allow_patterns``) to exactly the checked files. Large files go
   through the client's normal path (LFS / Xet); with ``hf_xet`` the client may split a very large
   upload into several commits.

Failures of the Hub client (offline mode, network, HTTP errors) become a [`PublishError`] whose
message names the step that failed. The local folder is only read, never modified.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LlavaNextVideoError
from .check import check_folder
from .folder import FileEntry

DEFAULT_REVISION = "main"


class PublishError(LlavaNextVideoError, RuntimeError):
    """Publishing failed: no token, a bad repo id, or the Hub client failed (the step is named)."""


def human_size(n: int) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@dataclass
class PublishPlan:
    """What a publish sends: the target and every file with its size."""

    folder: Path
    repo_id: str
    revision: str
    private: bool
    files: list[FileEntry] = field(default_factory=list)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def render(self) -> str:
        """The dry-run listing: target line, one ``path_in_repo  size`` line per file, total."""
        visibility = "private" if self.private else "public unless the namespace defaults to private"
        width = max((len(f.path_in_repo) for f in self.files), default=0)
        lines = [
            f"target: {self.repo_id}@{self.revision} (model repo, {visibility})",
            f"from:   {self.folder}",
        ]
        lines += [
            f"  {f.path_in_repo:<{width}}  {f.size:>14,d} B  ({human_size(f.size)})" for f in self.files
        ]
        lines.append(
            f"{len(self.files)} files, {self.total_size:,d} B ({human_size(self.total_size)}) in total"
        )
        return "\n".join(lines)


def plan_publish(
    folder: str | os.PathLike, repo_id: str, *, revision: str | None = None, private: bool = False
) -> PublishPlan:
    """Check ``repo_id`` and the folder (offline) and list what would be uploaded.

    Raises:
        PublishError: ``repo_id`` is not a valid Hub id.
        HubFolderError: the folder fails the checks (every problem is listed).
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PublishError(f"invalid repo id {repo_id!r}: {error}") from error
    if "/" not in repo_id:
        raise PublishError(f"repo id {repo_id!r} needs a namespace: 'user-or-org/name'")
    files = check_folder(folder)
    return PublishPlan(Path(folder).resolve(), repo_id, revision or DEFAULT_REVISION, private, files)


def resolve_token(token: str | None) -> str:
    """``token``, else ``HF_TOKEN``, else the Hub client's stored login; raises when there is none."""
    from huggingface_hub import get_token

    token = token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise PublishError(
            "no Hugging Face token: pass --token, set HF_TOKEN, or log in with `hf auth login` "
            "(the token needs write access to the target namespace)"
        )
    return token


def _hub_step(step: str, token: str, call: Callable[[], Any]) -> Any:
    """Run one Hub client call; turn its failure into a PublishError naming the step (token scrubbed)."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    try:
        return call()
    except OfflineModeIsEnabled as error:
        raise PublishError(f"{step}: the Hub client is in offline mode (HF_HUB_OFFLINE=1): {error}") from None
    except Exception as error:  # HTTP errors, connection errors, client-side ValueErrors
        message = str(error).replace(token, "***") if token else str(error)
        raise PublishError(f"{step} failed ({type(error).__name__}): {message}") from None


def publish(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
    echo: Callable[[str], None] = print,
) -> PublishPlan:
    """Upload the exported checkpoint ``folder`` to the Hub model repo ``repo_id``.

    Args:
        folder: a folder written by [`export_for_hub`] (or one that passes the same checks).
        repo_id: ``"namespace/name"``; created (with ``private``) when it does not exist.
        private: create the repo private (otherwise the namespace's default visibility; an existing repo
            keeps its visibility).
        revision: branch to upload to (created from ``main`` when missing); default ``main``.
        dry_run: only check and print what would be uploaded; needs no token, touches no network.
        token: Hub token (else ``HF_TOKEN``, else the stored login). Never printed.
        commit_message: defaults to ``"Upload <name> with llava-next-video-hf"``.
        endpoint: Hub endpoint (default: the client's, i.e. ``HF_ENDPOINT`` or huggingface.co).
        echo: where progress lines go.

    Returns:
        The plan that was (or, with ``dry_run``, would be) uploaded.

    Raises:
        HubFolderError: the folder fails the offline checks (nothing was sent).
        PublishError: bad repo id, no token, or a Hub client step failed.
    """
    plan = plan_publish(folder, repo_id, revision=revision, private=private)
    if dry_run:
        echo(plan.render())
        echo("dry run: nothing was uploaded")
        return plan
    token = resolve_token(token)
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    echo(f"publishing {len(plan.files)} files ({human_size(plan.total_size)}) to {repo_id}@{plan.revision}")
    url = _hub_step(
        "create_repo",
        token,
        lambda: api.create_repo(repo_id, private=private or None, repo_type="model", exist_ok=True),
    )
    if plan.revision != DEFAULT_REVISION:
        _hub_step(
            "create_branch",
            token,
            lambda: api.create_branch(repo_id, branch=plan.revision, repo_type="model", exist_ok=True),
        )
    info = _hub_step(
        "upload_folder",
        token,
        lambda: api.upload_folder(
            repo_id=repo_id,
            folder_path=plan.folder,
            repo_type="model",
            revision=plan.revision,
            commit_message=commit_message or f"Upload {plan.folder.name} with llava-next-video-hf",
            allow_patterns=[f.path_in_repo for f in plan.files],
        ),
    )
    echo(f"uploaded to {url}: commit {getattr(info, 'oid', '?')} ({getattr(info, 'commit_url', '')})")
    return plan


__all__ = ["PublishError", "PublishPlan", "plan_publish", "publish", "resolve_token"]
