"""Encoded sources: a path, an http(s) URL (downloaded within :data:`URL_DEADLINE_S` seconds and
:data:`MAX_URL_BYTES`), bytes or a file object (at most :data:`MAX_SOURCE_BYTES`), checked and turned
into a :class:`_Source` that PyAV can open, several times if need be.

The limits are read from this module when a video is loaded: patch them here (``sources.URL_TIMEOUT_S``),
not on the package, which only re-exports their values.
"""

from __future__ import annotations

import io
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from time import monotonic
from typing import Any

import av

from ..errors import VideoLoadError

#: Largest encoded video accepted as bytes, a file object or a download.
MAX_SOURCE_BYTES = 2 * 1024**3
#: Timeout (s) for connecting to an http(s) URL and for each read from it.
URL_TIMEOUT_S = 30.0
#: Total time (s) a download may take, however steadily the server trickles data.
URL_DEADLINE_S = 120.0
#: Largest download accepted from an http(s) URL (the whole file is held in memory).
MAX_URL_BYTES = 512 * 1024**2


def _describe_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _read_limited(stream: Any, desc: str) -> bytes:
    data = stream.read(MAX_SOURCE_BYTES + 1)
    if len(data) > MAX_SOURCE_BYTES:
        raise VideoLoadError(f"{desc}: larger than the limit of {MAX_SOURCE_BYTES} bytes (MAX_SOURCE_BYTES)")
    return bytes(data)


def _download(url: str) -> bytes:
    """Fetch ``url`` into memory within :data:`URL_DEADLINE_S` seconds and :data:`MAX_URL_BYTES`."""
    desc = _describe_url(url)
    limit, limit_name = MAX_URL_BYTES, "MAX_URL_BYTES"
    if MAX_SOURCE_BYTES < limit:
        limit, limit_name = MAX_SOURCE_BYTES, "MAX_SOURCE_BYTES"
    deadline = monotonic() + URL_DEADLINE_S
    received = 0

    def too_slow() -> VideoLoadError:
        return VideoLoadError(
            f"{desc}: the download took longer than the limit of {URL_DEADLINE_S:g} s (URL_DEADLINE_S); "
            f"{received} bytes received"
        )

    request = urllib.request.Request(url, headers={"User-Agent": "llava-next-video-hf"})
    try:
        with urllib.request.urlopen(  # http(s) only, checked by the caller
            request, timeout=max(0.001, min(URL_TIMEOUT_S, URL_DEADLINE_S))
        ) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > limit:
                raise VideoLoadError(
                    f"{desc}: {length} bytes is larger than the limit of {limit} bytes ({limit_name})"
                )
            sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
            chunks = []
            while True:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    raise too_slow()
                if sock is not None:  # no single read may outlive the deadline either
                    sock.settimeout(max(0.001, min(URL_TIMEOUT_S, remaining)))
                chunk = response.read1(1 << 20)
                if not chunk:
                    break
                received += len(chunk)
                if received > limit:
                    raise VideoLoadError(
                        f"{desc}: larger than the limit of {limit} bytes ({limit_name}); the download was stopped"
                    )
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        raise VideoLoadError(f"{desc}: download failed with HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        if monotonic() >= deadline:
            raise too_slow() from exc
        reason = getattr(exc, "reason", exc)
        if isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError):
            reason = f"no data for {URL_TIMEOUT_S:g} s (URL_TIMEOUT_S)"
        raise VideoLoadError(f"{desc}: download failed ({reason})") from exc


class _Source:
    """An encoded video that can be opened (several times) with PyAV."""

    def __init__(
        self,
        desc: str,
        *,
        path: Path | None = None,
        data: bytes | None = None,
        fileobj: Any = None,
        size: int | None = None,
    ):
        self.desc = desc
        self.path = path
        self.data = data
        self.fileobj = fileobj
        self.start = fileobj.tell() if fileobj is not None else 0
        #: Bytes of encoded data (checked against what the container's index points to).
        self.size = len(data) if data is not None else size

    def tail(self, n: int) -> bytes:
        """The last ``n`` bytes (fewer for a shorter source; empty if they cannot be read)."""
        try:
            if self.data is not None:
                return self.data[-n:]
            if self.path is not None:
                with open(self.path, "rb") as f:
                    f.seek(max(0, (self.size or 0) - n))
                    return f.read(n)
            end = self.fileobj.seek(0, io.SEEK_END)
            self.fileobj.seek(max(self.start, end - n))
            return self.fileobj.read(n)
        except (OSError, ValueError):
            return b""

    def open(self) -> av.container.InputContainer:
        opts: dict[str, Any] = {"metadata_errors": "replace"}
        if self.path is not None:
            # "file:" stops FFmpeg from reading the name as a protocol ("concat:", "pipe:"...).
            target: Any = "file:" + os.path.abspath(self.path)
            opts["options"] = {"protocol_whitelist": "file"}
        elif self.data is not None:
            target = io.BytesIO(self.data)
        else:
            self.fileobj.seek(self.start)
            target = self.fileobj
        try:
            return av.open(target, mode="r", **opts)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise VideoLoadError(
                f"{self.desc}: not a readable video ({_reason(exc)}); the file may be truncated, "
                "corrupt or not a video"
            ) from exc


#: What reading packets or frames from a damaged file may raise. PyAV raises ``IndexError`` when a
#: stream appears mid-file (MPEG-TS) and its flush at the end looks the new stream up in a stale list.
_READ_ERRORS = (av.FFmpegError, OSError, EOFError, IndexError)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    if isinstance(exc, OSError) and exc.strerror:
        return str(exc.strerror)
    if isinstance(exc, IndexError):
        return "a stream appeared mid-file and could not be read"
    return str(exc) or type(exc).__name__


def _encoded_source(source: Any) -> _Source:
    if isinstance(source, str) and source.lower().startswith(("http://", "https://")):
        data = _download(source)
        desc = _describe_url(source)
        if not data:
            raise VideoLoadError(f"{desc}: the download is empty (0 bytes)")
        return _Source(desc, data=data)
    if isinstance(source, str) and "://" in source and not Path(source).exists():
        scheme = source.split("://", 1)[0]
        raise VideoLoadError(
            f"{source!r}: unsupported URL scheme {scheme!r}; pass a local path, an http(s) URL, bytes or frames"
        )
    if isinstance(source, str | os.PathLike):
        path = Path(source).expanduser()
        desc = str(path)
        if not path.exists():
            raise VideoLoadError(f"{desc}: video file not found")
        if not path.is_file():
            raise VideoLoadError(f"{desc}: not a regular file (a directory?)")
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise VideoLoadError(f"{desc}: cannot be read ({_reason(exc)})") from exc
        if size == 0:
            raise VideoLoadError(f"{desc}: the file is empty (0 bytes)")
        if not os.access(path, os.R_OK):
            raise VideoLoadError(f"{desc}: permission denied")
        return _Source(desc, path=path, size=size)
    if isinstance(source, bytes | bytearray | memoryview):
        desc = "<bytes>"
        size = memoryview(source).nbytes
        if size > MAX_SOURCE_BYTES:
            raise VideoLoadError(
                f"{desc}: {size} bytes is larger than the limit of {MAX_SOURCE_BYTES} bytes (MAX_SOURCE_BYTES)"
            )
        if size == 0:
            raise VideoLoadError(f"{desc}: the video data is empty (0 bytes)")
        return _Source(desc, data=bytes(source))
    if hasattr(source, "read"):
        desc = "<file-like>"
        try:
            seekable = bool(getattr(source, "seekable", lambda: False)())
            if not seekable:
                data = _read_limited(source, desc)
                if not data:
                    raise VideoLoadError(f"{desc}: the video data is empty (0 bytes)")
                return _Source(desc, data=data)
            start = source.tell()
            size = source.seek(0, io.SEEK_END) - start
            source.seek(start)
        except OSError as exc:
            raise VideoLoadError(f"{desc}: cannot be read ({_reason(exc)})") from exc
        if size > MAX_SOURCE_BYTES:
            raise VideoLoadError(
                f"{desc}: {size} bytes is larger than the limit of {MAX_SOURCE_BYTES} bytes (MAX_SOURCE_BYTES)"
            )
        if size <= 0:
            raise VideoLoadError(f"{desc}: the video data is empty (0 bytes)")
        return _Source(desc, fileobj=source, size=size)
    raise VideoLoadError(
        f"unsupported video source of type {type(source).__name__}: expected a path, an http(s) URL, bytes, "
        "a file object, a (T, H, W, 3) uint8 array/tensor or a list of frames"
    )
