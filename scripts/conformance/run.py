"""``make conformance``: transformers' common model tests on our classes and on transformers' own.

Steps (nothing of transformers' is stored in this repository):

1. Download the source distribution of the *installed* transformers version from PyPI
   (``pip download transformers==X --no-deps --no-binary :all:``) into a cache directory
   (``$LLAVA_CONFORMANCE_CACHE``, default ``~/.cache/llava-next-video-hf/conformance``) and unpack
   its ``tests/``.
2. The sdist ships ``tests/test_modeling_common.py`` (``ModelTesterMixin``) but not
   ``tests/generation/test_utils.py`` (``GenerationTesterMixin``), ``tests/exporters/`` or
   ``tests/models/``. Those come from ``--transformers-tests DIR`` (the ``tests/`` folder of a
   transformers checkout at the same version), else from GitHub's tag ``vX`` when reachable; what
   is still missing is replaced by an empty stand-in and reported (its tests are then not run,
   for either family).
3. Run ``test_conformance.py`` (copied next to transformers' tests, with ``adapter.py``) under
   pytest: every suite once on transformers' ``LlavaNextVideo*`` classes and once on ours.
4. Print passed/failed/skipped per family and exit 1 if any test fails for ours but passes for
   transformers' classes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# files of transformers' test tree the run needs beyond what the sdist ships
EXTRA_FILES = [
    "generation/__init__.py",
    "generation/test_utils.py",
    "exporters/__init__.py",
    "exporters/test_export.py",
    "utils/__init__.py",
    "utils/test_configuration_utils.py",
    "models/__init__.py",
    "models/llava_next_video/__init__.py",
    "models/llava_next_video/test_modeling_llava_next_video.py",
]
STAND_INS = {
    "generation/test_utils.py": (
        "# stand-in written by llava-next-video-hf's conformance run: the real file was not available\n"
        "class GenerationTesterMixin:\n    pass\n"
    ),
    "exporters/test_export.py": (
        "# stand-in written by llava-next-video-hf's conformance run: the real file was not available\n"
        "class ExportTesterMixin:\n    pass\n"
    ),
    "utils/test_configuration_utils.py": "config_common_kwargs = {}\n",
}
PYTEST_INI = """[pytest]
addopts = -p no:cacheprovider
markers =
    accelerate_tests
    flash_attn_test
    flash_attn_3_test
    flash_attn_4_test
    generate
    is_pipeline_test
    is_staging_test
    is_training_test
    not_device_test
    torch_compile_test
    torch_export_test
    slow
    training_ci
"""


def installed_transformers_version() -> str:
    from importlib.metadata import version

    return version("transformers")


def download_sdist_tests(version: str, cache: Path) -> Path:
    """Unpack ``tests/`` of transformers' sdist ``version`` under ``cache`` (once) and return it."""
    root = cache / f"transformers-{version}"
    tests = root / "tests"
    if (tests / "test_modeling_common.py").is_file():
        return tests
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", f"transformers=={version}", "--no-deps"]
        cmd += ["--no-binary", ":all:", "--no-build-isolation", "-q", "-d", tmp]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        (sdist,) = Path(tmp).glob("transformers-*.tar.gz")
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(f"transformers-{version}/tests/")]
            tar.extractall(cache / ".unpack", members=members, filter="data")
        shutil.rmtree(root, ignore_errors=True)
        (cache / ".unpack" / f"transformers-{version}").rename(root)
        shutil.rmtree(cache / ".unpack", ignore_errors=True)
    return tests


# test-only dependencies of transformers' test files, installed into the cache (never into the venv)
TEST_DEPS = ["parameterized"]


# Tests where our behaviour differs from transformers' on purpose; reported, not failed.
KNOWN_DIVERGENCES = {
    "test_reverse_loading_mapping": (
        "our llava-hf key renamings are load-only by design (convert.register_key_mapping): a "
        "checkpoint is saved in our own key layout, while the test expects save_pretrained to write the "
        "renamed (legacy) layout back"
    ),
}


def install_test_deps(cache: Path) -> Path:
    """``pip install --target`` transformers' test-only dependencies under ``cache`` (once)."""
    target = cache / "test-deps"
    stamp = target / ".installed"
    if stamp.is_file() and stamp.read_text() == " ".join(TEST_DEPS):
        return target
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), *TEST_DEPS]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    stamp.write_text(" ".join(TEST_DEPS))
    return target


def complete_test_tree(tests: Path, version: str, source: Path | None, timeout: float) -> dict[str, str]:
    """Fill in the files the sdist lacks; returns {relative path: where it came from}."""
    origin: dict[str, str] = {}
    for rel in EXTRA_FILES:
        dest = tests / rel
        marker = dest.with_name(dest.name + ".origin")
        if dest.is_file() and marker.is_file():
            origin[rel] = marker.read_text()
            if origin[rel] != "stand-in" or source is None:
                continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source is not None and (source / rel).is_file():
            shutil.copyfile(source / rel, dest)
            origin[rel] = f"{source}"
        elif rel.endswith("__init__.py"):
            dest.write_text("")
            origin[rel] = "empty package marker"
        else:
            url = f"https://raw.githubusercontent.com/huggingface/transformers/v{version}/tests/{rel}"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    dest.write_bytes(response.read())
                origin[rel] = url
            except Exception as exc:  # noqa: BLE001 - any network failure means "not available"
                dest.unlink(missing_ok=True)
                if rel in STAND_INS:
                    dest.write_text(STAND_INS[rel])
                    origin[rel] = "stand-in"
                else:
                    origin[rel] = f"missing ({type(exc).__name__})"
        if dest.is_file():
            marker.write_text(origin[rel])
    for package in (tests, tests / "models"):
        (package / "__init__.py").touch()
    return origin


def install_our_module(tests: Path) -> Path:
    """Copy our test module and adapter next to transformers' model tests; returns the module path."""
    ours = tests / "models" / "llava_next_video_anyres"
    ours.mkdir(parents=True, exist_ok=True)
    (ours / "__init__.py").touch()
    shutil.copyfile(HERE / "adapter.py", ours / "adapter.py")
    shutil.copyfile(HERE / "test_conformance.py", ours / "test_conformance.py")
    (tests.parent / "pytest.ini").write_text(PYTEST_INI)
    return ours / "test_conformance.py"


def run_pytest(module: Path, root: Path, deps: Path, junit: Path, extra: list[str]) -> int:
    env = dict(os.environ)
    paths = [str(REPO / "src"), str(root), str(deps), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    cmd = [sys.executable, "-m", "pytest", str(module.relative_to(root)), "-q", "-rN", f"--junitxml={junit}"]
    cmd += ["-c", str(root / "pytest.ini"), "--rootdir", str(root), *extra]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=root, env=env).returncode


def outcomes(junit: Path) -> dict[tuple[str, str, str], str]:
    """{(family, suite, test): passed|failed|skipped} from pytest's JUnit XML."""
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        suite = case.get("classname", "").rsplit(".", 1)[-1]
        if suite.startswith("AnyRes"):
            family, suite = "ours", suite.removeprefix("AnyRes").lstrip("_")
        elif suite.startswith("Transformers"):
            family, suite = "transformers", suite.removeprefix("Transformers").lstrip("_")
        else:
            continue
        tags = {child.tag for child in case}
        outcome = "failed" if tags & {"failure", "error"} else "skipped" if "skipped" in tags else "passed"
        result[(family, suite, case.get("name", ""))] = outcome
    return result


def report(results: dict[tuple[str, str, str], str], origin: dict[str, str]) -> int:
    """Print the comparison; 1 if ours fail a test transformers' classes pass."""
    print("\nsources of transformers' test files beyond the sdist:")
    for rel, where in origin.items():
        if not rel.endswith("__init__.py"):
            print(f"  {rel}: {where}")
    for family in ("transformers", "ours"):
        counts = Counter(o for (f, _, _), o in results.items() if f == family)
        print(
            f"{family:>12}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
        )
    theirs = {(s, t): o for (f, s, t), o in results.items() if f == "transformers"}
    ours = {(s, t): o for (f, s, t), o in results.items() if f == "ours"}

    def known(key: tuple[str, str]) -> bool:
        return key[1].split("[")[0] in KNOWN_DIVERGENCES

    worse = sorted(k for k, o in ours.items() if o in ("failed", "skipped") and theirs.get(k) == "passed")
    only_ours = [k for k in worse if ours[k] == "failed" and not known(k)]
    skipped_only_ours = [k for k in worse if ours[k] == "skipped" and not known(k)]
    divergences = [k for k in worse if known(k)]
    both = sorted(k for k, o in ours.items() if o == "failed" and theirs.get(k) == "failed")
    better = sorted(k for k, o in ours.items() if o == "passed" and theirs.get(k) == "failed")
    for suite, test in divergences:
        print(f"\nknown divergence {suite}::{test}: {KNOWN_DIVERGENCES[test.split('[')[0]]}")
    for title, keys in (
        ("fail for ours only", only_ours),
        ("skipped for ours, passed for transformers'", skipped_only_ours),
        ("fail for both (not counted: the tester or transformers' own class falls short)", both),
        ("pass for ours only", better),
    ):
        if keys:
            print(f"\n{title} ({len(keys)}):")
            for suite, test in keys:
                print(f"  {suite}::{test}")
    if only_ours or skipped_only_ours:
        print("\nFAIL: our classes fail (or skip) tests that transformers' classes pass")
        return 1
    print("\nOK: every test that passes for transformers' classes passes for ours")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=None, help="where the sdist is unpacked")
    parser.add_argument(
        "--transformers-tests",
        type=Path,
        default=os.environ.get("TRANSFORMERS_TESTS_DIR"),
        help="tests/ of a transformers checkout at the installed version (supplies what the sdist lacks)",
    )
    parser.add_argument("--network-timeout", type=float, default=10.0)
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (e.g. -k attention)")
    args = parser.parse_args(argv)
    cache = args.cache or Path(
        os.environ.get(
            "LLAVA_CONFORMANCE_CACHE", Path.home() / ".cache" / "llava-next-video-hf" / "conformance"
        )
    )
    version = installed_transformers_version()
    try:
        tests = download_sdist_tests(version, cache)
        deps = install_test_deps(cache)
    except subprocess.CalledProcessError as exc:
        print(
            f"could not fetch transformers=={version}'s sdist or its test dependencies from PyPI "
            f"({exc}); the run needs PyPI access once, then uses the cache in {cache}",
            file=sys.stderr,
        )
        return 2
    origin = complete_test_tree(tests, version, args.transformers_tests, args.network_timeout)
    module = install_our_module(tests)
    junit = tests.parent / "conformance-junit.xml"
    junit.unlink(missing_ok=True)
    run_pytest(module, tests.parent, deps, junit, args.pytest_args)
    if not junit.is_file():
        print("pytest wrote no results (collection failed?)", file=sys.stderr)
        return 2
    results = outcomes(junit)
    if not results:
        print("no test ran (collection failed, or -k matched nothing)", file=sys.stderr)
        return 2
    return report(results, origin)


if __name__ == "__main__":
    sys.exit(main())
