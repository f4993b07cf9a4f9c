"""vLLM's media connector with the refusals a network-facing server needs (``llava-next-video serve``).

vLLM fetches every ``image_url``/``video_url`` of a chat request through a *media connector*
(``VLLM_MEDIA_CONNECTOR``, default ``"http"``). :func:`register_media_connector` adds
:class:`SafeMediaConnector` under the name :data:`CONNECTOR_NAME`; ``llava-next-video serve`` selects
it. It is vLLM's own connector (same limits, domains, cache, timeouts) plus two refusals, both
``ValueError`` so vLLM answers HTTP 400 before anything is read or fetched:

* a ``file://`` URL when the server has no ``--allowed-local-media-path`` (vLLM raises a
  ``RuntimeError`` there, which its error mapping answers with a 500);
* when the server is reachable from other machines (:data:`EXPOSED_ENV` is ``"1"``, set by
  ``serve`` for a non-loopback ``--host``): an ``http(s)`` URL whose host resolves to a loopback,
  private, link-local or otherwise non-public address (``ipaddress``' ``is_global``), unless the
  host is listed in ``--allowed-media-domains`` (the operator asked for it). The name is resolved
  before vLLM connects; ``serve`` also turns vLLM's redirect following off on such servers, so a
  public URL cannot bounce the fetch to an internal one.

Plain ``vllm serve`` keeps vLLM's connector unless ``VLLM_MEDIA_CONNECTOR=llava_next_video_hf`` is set.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from typing import Any

#: The connector's name in vLLM's ``MEDIA_CONNECTOR_REGISTRY`` (the value for ``VLLM_MEDIA_CONNECTOR``).
CONNECTOR_NAME = "llava_next_video_hf"
#: ``"1"`` when the server listens on an address other machines can reach (set by ``serve``).
EXPOSED_ENV = "LLAVA_NEXT_VIDEO_SERVE_EXPOSED"

NO_LOCAL_FILES = (
    "file:// media URLs are refused: this server was started without --allowed-local-media-path "
    "(llava-next-video serve grants the current folder only when it listens on loopback; give "
    "--allowed-local-media-path DIR to allow a folder)"
)


def exposed() -> bool:
    """Whether this process serves other machines (``serve`` says so through :data:`EXPOSED_ENV`)."""
    return os.environ.get(EXPOSED_ENV) == "1"


def check_public(host: str, infos: list[tuple[Any, ...]]) -> None:
    """Raise ``ValueError`` if any ``getaddrinfo`` result for ``host`` is not a public (global) address."""
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])  # drop an IPv6 zone
        if not (getattr(address, "ipv4_mapped", None) or address).is_global:
            raise ValueError(
                f"media URL host {host!r} resolves to {address}, a loopback/private/link-local address: "
                "this server is reachable from other machines and does not fetch internal addresses for "
                "them (list the host in --allowed-media-domains to allow it)"
            )


def _unresolved(host: str, exc: OSError) -> ValueError:
    return ValueError(f"media URL host {host!r} does not resolve ({exc})")


def register_media_connector() -> None:
    """Add :class:`SafeMediaConnector` to vLLM's media connector registry (idempotent, cheap)."""
    from vllm.multimodal.media import MEDIA_CONNECTOR_REGISTRY, MediaConnector

    if CONNECTOR_NAME in MEDIA_CONNECTOR_REGISTRY.name2class:
        return

    class SafeMediaConnector(MediaConnector):
        """vLLM's ``MediaConnector`` with the two refusals of this module's docstring."""

        def _load_file_url(self, url_spec: Any, media_io: Any) -> Any:
            if self.allowed_local_media_path is None:
                raise ValueError(NO_LOCAL_FILES)
            return super()._load_file_url(url_spec, media_io)

        def _guarded_host(self, url: str) -> tuple[str, int] | None:
            """(host, port) to check before fetching ``url``, or ``None`` when nothing is to check."""
            from urllib3.util import parse_url

            if url[:5].lower() == "data:" or not exposed():
                return None
            spec = parse_url(url)
            if not (spec.scheme or "").startswith("http") or not spec.hostname:
                return None
            self._assert_url_in_allowed_media_domains(spec)  # vLLM's refusal comes first
            if spec.hostname in self.allowed_media_domains:
                return None
            return spec.hostname, spec.port or (443 if spec.scheme == "https" else 80)

        def load_from_url(self, url: str, media_io: Any, *, fetch_timeout: int | None = None) -> Any:
            if (guarded := self._guarded_host(url)) is not None:
                try:
                    infos = socket.getaddrinfo(*guarded, type=socket.SOCK_STREAM)
                except OSError as exc:
                    raise _unresolved(guarded[0], exc) from None
                check_public(guarded[0], infos)
            return super().load_from_url(url, media_io, fetch_timeout=fetch_timeout)

        async def load_from_url_async(
            self, url: str, media_io: Any, *, fetch_timeout: int | None = None
        ) -> Any:
            if (guarded := self._guarded_host(url)) is not None:
                try:  # resolved off the event loop
                    infos = await asyncio.get_running_loop().getaddrinfo(*guarded, type=socket.SOCK_STREAM)
                except OSError as exc:
                    raise _unresolved(guarded[0], exc) from None
                check_public(guarded[0], infos)
            return await super().load_from_url_async(url, media_io, fetch_timeout=fetch_timeout)

    MEDIA_CONNECTOR_REGISTRY.register(CONNECTOR_NAME)(SafeMediaConnector)


__all__ = [
    "CONNECTOR_NAME",
    "EXPOSED_ENV",
    "NO_LOCAL_FILES",
    "check_public",
    "exposed",
    "register_media_connector",
]
