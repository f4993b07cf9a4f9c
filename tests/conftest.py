"""Shared fixtures: one tokenizer and reference-model set per test session (tiny and deterministic)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tokenizer():
    from llava_next_video_hf import testing

    return testing.make_tokenizer()


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A tiny checkpoint folder of our format, written once per session."""
    from llava_next_video_hf import testing

    return testing.make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")
