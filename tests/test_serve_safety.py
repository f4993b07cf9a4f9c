"""``llava-next-video serve`` is safe by default (issue 28).

* the wrapper's defaults: loopback unless ``--host`` is given; the current folder is granted to
  ``file://`` URLs only on loopback; an operator's ``--allowed-local-media-path`` is kept;
* the media connector: no ``file://`` without an allowed folder (400, not vLLM's 500); on a
  network-facing server, no fetch of loopback/private addresses and no fetch outside
  ``--allowed-media-domains`` — a local listener counts the connections that were made;
* three real servers started with the wrapper (one at a time): the default one on loopback reads a
  clip under its folder; one on 0.0.0.0 with an API key and no media folder refuses ``file://`` and
  internal URLs with 400s, unkeyed requests with 401, and still answers; one on 0.0.0.0 with an
  explicit folder reads only there.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from llava_next_video_hf import serve, testing
from llava_next_video_hf.vllm_plugin import media_connector

KEY = "sk-test-6f1e0c"  # a made-up key: it must never appear in the server's output
QUESTION = {"type": "text", "text": "What is happening in this video?"}


# -- the wrapper's options ------------------------------------------------------------------------


def test_default_is_loopback_and_grants_the_current_folder_only_there(tmp_path):
    cwd = str(tmp_path.resolve())
    assert serve.default_options("/none", [], cwd=tmp_path) == [
        "--host", "127.0.0.1", "--allowed-local-media-path", cwd,
    ]  # fmt: skip
    for host in ("127.0.0.1", "127.8.0.1", "localhost", "::1", "[::1]"):
        assert serve.default_options("/none", ["--host", host], cwd=tmp_path) == [
            "--allowed-local-media-path", cwd,
        ], host  # fmt: skip
    for host in ("0.0.0.0", "::", "", "192.168.1.20", "myserver.example"):
        assert serve.default_options("/none", [f"--host={host}"], cwd=tmp_path) == [], host
    # an operator's folder is kept whatever the host; a unix socket is local
    assert serve.default_options("/none", ["--host", "0.0.0.0", "--allowed-local-media-path", "/srv"]) == []
    assert serve.default_options("/none", ["--uds", "/tmp/s.sock"], cwd=tmp_path) == [
        "--allowed-local-media-path", cwd,
    ]  # fmt: skip


def test_environment_selects_the_connector_and_turns_redirects_off_for_the_network():
    loopback = serve.Exposure.of(["--host", "127.0.0.1"], {})
    assert loopback.environment({}) == {
        media_connector.EXPOSED_ENV: "0",
        "VLLM_MEDIA_CONNECTOR": media_connector.CONNECTOR_NAME,
        "VLLM_MEDIA_URL_ALLOW_REDIRECTS": "1",
    }
    network = serve.Exposure.of(["--host", "0.0.0.0"], {})
    assert network.environment({})[media_connector.EXPOSED_ENV] == "1"
    assert network.environment({})["VLLM_MEDIA_URL_ALLOW_REDIRECTS"] == "0"
    domains = serve.Exposure.of(["--host", "::1", "--allowed-media-domains", "a.example", "b.example"], {})
    assert domains.domains == ["a.example", "b.example"] and not domains.redirects
    # what the operator set is kept
    mine = {"VLLM_MEDIA_URL_ALLOW_REDIRECTS": "1", "VLLM_MEDIA_CONNECTOR": "http"}
    env = serve.Exposure.of(["--host", "0.0.0.0"], mine).environment(mine)
    assert "VLLM_MEDIA_URL_ALLOW_REDIRECTS" not in env and env["VLLM_MEDIA_CONNECTOR"] == "http"


def test_banner_says_what_is_exposed_and_never_prints_the_key():
    options = [
        "--host",
        "0.0.0.0",
        "--port",
        "9000",
        "--api-key",
        KEY,
        "--allowed-media-domains",
        "cdn.example",
    ]
    banner = serve.Exposure.of(options, {}).banner()
    assert "http://0.0.0.0:9000 (REACHABLE FROM OTHER MACHINES)" in banner
    assert "required on /v1" in banner and KEY not in banner
    assert "none: file:// URLs are refused" in banner
    assert "only from cdn.example; redirects not followed" in banner
    local = serve.Exposure.of(["--host", "127.0.0.1", "--allowed-local-media-path", "/data"], {}).banner()
    assert "this machine only" in local and "file:// URLs under /data" in local
    assert "none: anyone who can connect" in local and "redirects followed" in local
    assert "required on /v1" in serve.Exposure.of(["--host", "::1"], {"VLLM_API_KEY": KEY}).banner()
    assert serve._redacted(["--api-key", KEY, "x", "--api_key=" + KEY, "--port", "1"]) == [
        "--api-key", "***", "***", "--api_key=***", "--port", "1",
    ]  # fmt: skip


# -- the media connector, without an engine --------------------------------------------------------


class _Listener:
    """An HTTP server on 127.0.0.1 that counts the connections it accepted."""

    def __init__(self, body: bytes = b"media bytes") -> None:
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            def get_request(self):
                listener.connections += 1
                return super().get_request()

        self.connections = 0
        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/clip.mp4"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[_Listener]:
    server = _Listener()
    yield server
    server.close()


class _BytesIO:
    """A media IO that returns the bytes it was given (the connector is what is tested)."""

    def get_max_bytes(self) -> None:
        return None

    def load_bytes(self, data: bytes) -> bytes:
        return data

    def load_file(self, path: Path) -> bytes:
        return Path(path).read_bytes()


def _connector(**kwargs):
    from vllm.multimodal.media import MEDIA_CONNECTOR_REGISTRY

    media_connector.register_media_connector()
    return MEDIA_CONNECTOR_REGISTRY.load(media_connector.CONNECTOR_NAME, **kwargs)


def test_network_server_refuses_internal_addresses_before_connecting(listener, monkeypatch):
    monkeypatch.setenv(media_connector.EXPOSED_ENV, "1")
    connector = _connector()
    with pytest.raises(ValueError, match="resolves to 127.0.0.1, a loopback/private/link-local address"):
        connector.load_from_url(listener.url, _BytesIO())
    with pytest.raises(ValueError, match="loopback/private/link-local"):
        asyncio.run(connector.load_from_url_async(listener.url.replace("127.0.0.1", "localhost"), _BytesIO()))
    assert listener.connections == 0
    # a domain outside --allowed-media-domains: vLLM's own refusal, also before any connection
    with pytest.raises(ValueError, match="allowed domains"):
        _connector(allowed_media_domains=["cdn.example"]).load_from_url(listener.url, _BytesIO())
    assert listener.connections == 0
    # the operator listed the host: fetched
    assert (
        _connector(allowed_media_domains=["127.0.0.1"]).load_from_url(listener.url, _BytesIO())
        == b"media bytes"
    )
    assert listener.connections == 1


def test_loopback_server_fetches_local_urls_as_vllm_does(listener, monkeypatch):
    monkeypatch.setenv(media_connector.EXPOSED_ENV, "0")
    assert asyncio.run(_connector().load_from_url_async(listener.url, _BytesIO())) == b"media bytes"
    assert listener.connections == 1


@pytest.mark.parametrize(
    "address", ["10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "100.64.0.1", "::1", "fe80::1",
                "fd00::1", "::ffff:127.0.0.1", "0.0.0.0"],
)  # fmt: skip
def test_non_public_addresses_are_refused(address):
    with pytest.raises(ValueError, match="loopback/private/link-local"):
        media_connector.check_public("h.example", [(None, None, None, "", (address, 80))])


def test_public_addresses_pass():
    media_connector.check_public("h.example", [(None, None, None, "", ("93.184.215.14", 80))])
    media_connector.check_public("h.example", [(None, None, None, "", ("2606:2800:21f:cb07::1", 80, 0, 0))])


def test_file_urls_without_a_folder_are_a_client_error(tmp_path):
    clip = tmp_path / "clip.bin"
    clip.write_bytes(b"clip")
    with pytest.raises(ValueError, match="started without --allowed-local-media-path"):
        _connector().load_from_url(clip.as_uri(), _BytesIO())
    assert (
        _connector(allowed_local_media_path=str(tmp_path)).load_from_url(clip.as_uri(), _BytesIO()) == b"clip"
    )


# -- real servers, started with the wrapper --------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    ckpt = testing.make_tiny_checkpoint(root / "ckpt", seed=2)
    media = root / "media"
    (media / "shared").mkdir(parents=True)
    testing.make_video(media / "clip.mp4", num_frames=16, fps=8, width=160, height=120, seed=3)
    testing.make_video(media / "shared" / "clip.mp4", num_frames=16, fps=8, width=160, height=120, seed=3)
    return {"ckpt": ckpt, "media": media, "root": root}


ENGINE = ["--dtype", "float32", "--enforce-eager", "--gpu-memory-utilization", "0.3"]


def _wrapper(files: dict, name: str, *args: str, host: str | None):
    from llava_next_video_hf.vllm_plugin.testing import serve as run_server

    script = Path(sys.executable).with_name("llava-next-video")
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    log = files["root"] / f"{name}.log"
    server = run_server(
        files["ckpt"], *ENGINE, *args, command=[str(script), "serve"], host=host, cwd=files["media"],
        env=env, log_path=log,
    )  # fmt: skip
    return server, log


def _ask(base: str, url: str, key: str | None = None) -> requests.Response:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}}, QUESTION]}
        ],
        "max_tokens": 4,
        "temperature": 0,
    }
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    models = requests.get(f"{base}/v1/models", headers=headers, timeout=30).json()
    body["model"] = models["data"][0]["id"] if "data" in models else "m"
    return requests.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=300)


def _message(resp: requests.Response) -> str:
    return json.dumps(resp.json())


@pytest.fixture(scope="class")
def default_server(files):
    server, log = _wrapper(files, "default", host=None)
    with server as base:
        yield base, log


@pytest.fixture(scope="class")
def network_server(files):
    server, log = _wrapper(
        files, "network", "--api-key", KEY, "--allowed-media-domains", "cdn.example", host="0.0.0.0"
    )
    with server as base:
        yield base, log


@pytest.fixture(scope="class")
def folder_server(files):
    server, log = _wrapper(
        files, "folder", "--allowed-local-media-path", str(files["media"] / "shared"), host="0.0.0.0"
    )
    with server as base:
        yield base, log


@pytest.mark.vllm
class TestDefaultServer:
    def test_listens_on_loopback_and_reads_files_under_its_folder(self, default_server, files):
        base, log = default_server
        from llava_next_video_hf.vllm_plugin.testing import data_url

        text = log.read_text(errors="replace")
        assert "--host 127.0.0.1" in text and "this machine only" in text
        assert f"file:// URLs under {files['media'].resolve()}" in text
        by_file = _ask(base, (files["media"] / "clip.mp4").as_uri())
        assert by_file.status_code == 200, by_file.text
        by_data = _ask(base, data_url((files["media"] / "clip.mp4").read_bytes(), "video/mp4"))
        assert by_file.json()["choices"][0]["message"] == by_data.json()["choices"][0]["message"]


@pytest.mark.vllm
class TestNetworkServer:
    def test_banner_and_no_key_in_the_log(self, network_server):
        _, log = network_server
        text = log.read_text(errors="replace")
        assert "REACHABLE FROM OTHER MACHINES" in text and "required on /v1" in text
        assert "none: file:// URLs are refused" in text and "only from cdn.example" in text
        assert KEY not in text

    def test_requests_without_the_key_are_401(self, network_server, files):
        base, _ = network_server
        resp = requests.post(f"{base}/v1/chat/completions", json={"model": "m", "messages": []}, timeout=30)
        assert resp.status_code == 401
        assert _ask(base, (files["media"] / "clip.mp4").as_uri(), key="wrong").status_code == 401

    def test_file_urls_are_refused_with_a_clear_400(self, network_server, files):
        base, _ = network_server
        resp = _ask(base, (files["media"] / "clip.mp4").as_uri(), key=KEY)
        assert resp.status_code == 400, resp.text
        assert "started without --allowed-local-media-path" in _message(resp)

    def test_urls_outside_the_allowed_domains_are_refused_before_connecting(self, network_server, listener):
        base, _ = network_server
        resp = _ask(base, listener.url, key=KEY)
        assert resp.status_code == 400 and "allowed domains" in _message(resp), resp.text
        assert listener.connections == 0

    def test_it_still_answers(self, network_server, files):
        from llava_next_video_hf.vllm_plugin.testing import data_url

        base, _ = network_server
        resp = _ask(base, data_url((files["media"] / "clip.mp4").read_bytes(), "video/mp4"), key=KEY)
        assert resp.status_code == 200, resp.text


@pytest.mark.vllm
class TestNetworkServerWithAFolder:
    def test_reads_only_under_the_operators_folder(self, folder_server, files):
        base, log = folder_server
        assert f"file:// URLs under {files['media'] / 'shared'}" in log.read_text(errors="replace")
        inside = _ask(base, (files["media"] / "shared" / "clip.mp4").as_uri())
        assert inside.status_code == 200, inside.text
        outside = _ask(base, (files["media"] / "clip.mp4").as_uri())  # the folder it was started from
        assert outside.status_code == 400 and "must be a subpath" in _message(outside), outside.text

    def test_internal_urls_are_refused(self, folder_server, listener):
        base, _ = folder_server
        resp = _ask(base, listener.url)
        assert resp.status_code == 400 and "loopback/private/link-local" in _message(resp), resp.text
        assert listener.connections == 0
