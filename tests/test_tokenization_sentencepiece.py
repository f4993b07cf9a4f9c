"""Token ids on a real 32,000-piece SentencePiece vocabulary (issue 27): Mistral v1's
``tokenizer.model.v1``, shipped in the ``mistral-common`` wheel (installed with vLLM; downloaded from
the package index into a temporary folder otherwise; never committed).

The expected ids are ``sentencepiece``'s own encoding under the original rule
(``mm_utils.tokenizer_image_token`` with the slow ``LlamaTokenizer`` the original builder loads): the
prompt split at each media placeholder, every chunk ``[BOS] + sp.encode(chunk)``, later chunks without
their BOS. transformers 5's converted fast tokenizer segments runs of whitespace differently
(``"Hello  world"``), which is what the processor must not inherit.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from llava_next_video_hf import testing
from llava_next_video_hf.chat_templates import MISTRAL_INSTRUCT, VICUNA_V1

MODEL_IN_WHEEL = "mistral_common/data/tokenizer.model.v1"
# conv_llava_llama_2's system prompt; Llama-2's format is the Mistral instruct template with a system
LLAMA_2_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that "
    "the user provides, and assist the user with a variety of tasks using natural language."
)
N_QUESTIONS = 1002  # x 3 templates


@pytest.fixture(scope="module")
def sp_model_file(tmp_path_factory) -> Path:
    spec = importlib.util.find_spec("mistral_common")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "data" / "tokenizer.model.v1"
        if path.is_file():
            return path
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "mistral-common"],
        cwd=folder,
        check=True,
    )
    (wheel,) = folder.glob("mistral_common-*.whl")
    target = folder / "tokenizer.model.v1"
    with zipfile.ZipFile(wheel) as z:
        target.write_bytes(z.read(MODEL_IN_WHEEL))
    return target


@pytest.fixture(scope="module")
def sp(sp_model_file):
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=str(sp_model_file))


@pytest.fixture(scope="module")
def checkpoint_tokenizer(sp_model_file, tmp_path_factory):
    """A tokenizer folder as the released Vicuna/Mistral checkpoints ship it: ``tokenizer.model`` and a
    ``tokenizer_config.json`` (BOS added, ``<image>``/``<video>`` added special tokens), loaded by
    ``AutoTokenizer`` (transformers 5 converts it to its fast tokenizer)."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tok")
    (folder / "tokenizer.model").write_bytes(sp_model_file.read_bytes())
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": False,
        "padding_side": "left",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tok = AutoTokenizer.from_pretrained(folder)
    tok.add_special_tokens({"pad_token": "<unk>"})
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    tok.image_token, tok.video_token = "<image>", "<video>"
    tok.image_token_id, tok.video_token_id = tok.convert_tokens_to_ids(["<image>", "<video>"])
    assert (tok.image_token_id, tok.video_token_id) == (32000, 32001)
    return tok


def corpus(n: int, seed: int = 0) -> list[str]:
    """``n`` questions with runs of spaces and tabs, newlines, unicode, digits, leading and trailing
    whitespace (deterministic)."""
    rng = random.Random(seed)
    words = (
        "What is happening in this video Describe the scene colour red square moves left right "
        "café naïve Zürich Ελλάδα привет 東京 日本語 🙂 ✓ — “quoted” it's x²"
    ).split()
    numbers = ["0", "7", "42", "3.14", "1,000", "2024-05-01", "12:30", "100%", "-5", "1e9"]
    gaps = [
        " ",
        " ",
        " ",
        "  ",
        "   ",
        "    ",
        "\t",
        " \t",
        "\t\t",
        "\n",
        "\n\n",
        " \n ",
        "\r\n",
        "\u3000",
        "\xa0",
    ]
    edges = ["", "", " ", "  ", "\t", "\n", " \n", "   "]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 9)):
            parts.append(rng.choice(numbers) if rng.random() < 0.25 else rng.choice(words))
            parts.append(rng.choice(gaps))
        body = "".join(parts[:-1]) + rng.choice(["?", ".", "!", "", " ?"])
        out.append(rng.choice(edges) + body + rng.choice(edges))
    return out


def prompts(tokenizer) -> list[tuple[str, str]]:
    """(kind, rendered prompt) through the Vicuna v1, Mistral instruct and Llama-2 templates."""
    out = []
    for i, question in enumerate(corpus(N_QUESTIONS)):
        kind = "video" if i % 3 else "image"
        messages = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": question}]}]
        template = (VICUNA_V1, MISTRAL_INSTRUCT, MISTRAL_INSTRUCT)[i % 3]
        if i % 3 == 2:
            messages.insert(0, {"role": "system", "content": LLAMA_2_SYSTEM})
        text = tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=True
        )
        out.append((kind, text))
    return out


def original_ids(sp, text: str, media: dict[str, list[int]]) -> list[int]:
    """``tokenizer_image_token`` with the slow tokenizer: ``[BOS] + sp.encode(chunk)`` for each chunk
    between placeholders, later chunks without their BOS, each placeholder replaced by ``media[p]``.
    The template's literal ``<s>`` stands for that BOS (the original prompt has none)."""
    text = text.removeprefix("<s>")
    ids = [sp.bos_id()]
    for i, chunk in enumerate(re.split("(<image>|<video>)", text)):
        ids += media[chunk] if i % 2 else sp.encode(chunk)
    return ids


def test_the_fast_tokenizer_alone_differs_on_whitespace_runs(sp, checkpoint_tokenizer):
    """Why the rule needs SentencePiece: the ids this issue was filed with."""
    assert sp.encode("Hello  world") == [22557, 28705, 1526]
    assert checkpoint_tokenizer("Hello  world")["input_ids"] == [1, 22557, 259, 9471]


def test_processor_ids_equal_sentencepiece_on_the_corpus(sp, checkpoint_tokenizer):
    proc = testing.make_processor(testing.tiny_config(checkpoint_tokenizer), checkpoint_tokenizer)
    video = np.zeros((2, 28, 28, 3), dtype=np.uint8)
    image = np.zeros((28, 28, 3), dtype=np.uint8)
    n_video = proc.num_video_tokens(2)
    n_image = proc.num_image_tokens(28, 28)
    media = {"<video>": [32001] * n_video, "<image>": [32000] * n_image}
    items = prompts(checkpoint_tokenizer)
    assert len(items) >= 1000 and sum("\t" in t or "  " in t for _, t in items) > 500
    differ_from_fast = 0
    wrong = []
    for kind, text in items:
        media_kw = {"videos": [video]} if kind == "video" else {"images": [image]}
        got = proc(text=text, **media_kw)["input_ids"][0].tolist()
        expected = original_ids(sp, text, media)
        if got != expected:
            wrong.append(text)
        if differ_from_fast < 100:  # the corpus does reach the segmentation difference
            fast = proc(text=text, tokenization="transformers", add_special_tokens=False, **media_kw)
            differ_from_fast += fast["input_ids"][0].tolist() != expected
    assert not wrong, f"{len(wrong)}/{len(items)} differ, e.g. {wrong[:3]!r}"
    assert differ_from_fast >= 100


@pytest.mark.vllm
def test_vllm_tokenizer_ids_equal_sentencepiece_on_the_corpus(sp, checkpoint_tokenizer):
    """vLLM's path without an engine: the tokenizer its renderer holds (vLLM's caching proxy, the
    thread-pool copies, pickled), hooked by the plugin as the multimodal processor does, called as a
    chat request (the template rendered, then tokenized without special tokens) and as a raw prompt."""
    import copy
    import pickle

    from vllm.tokenizers.hf import get_cached_tokenizer, maybe_make_thread_pool

    from llava_next_video_hf.vllm_plugin.processing import use_original_tokenization

    tok = get_cached_tokenizer(copy.deepcopy(checkpoint_tokenizer))
    use_original_tokenization(tok, ["<image>", "<video>"])
    tok = pickle.loads(pickle.dumps(maybe_make_thread_pool(tok, 2)))
    media = {"<video>": [32001], "<image>": [32000]}  # vLLM expands each placeholder afterwards
    wrong = []
    for _, text in prompts(checkpoint_tokenizer):
        expected = original_ids(sp, text, media)
        chat = tok(text, add_special_tokens=False)["input_ids"]
        raw = tok.encode(text.removeprefix("<s>"), add_special_tokens=True)
        if chat != expected or raw != expected:
            wrong.append(text)
    assert not wrong, f"{len(wrong)} differ, e.g. {wrong[:3]!r}"
    # a prompt without media is the original's tokenizer(prompt) too
    questions = corpus(200, seed=1)
    assert [tok.encode(q) for q in questions] == [[1, *sp.encode(q)] for q in questions]


def test_saved_processor_keeps_the_sentencepiece_model(sp, checkpoint_tokenizer, tmp_path):
    """transformers 5 saves only ``tokenizer.json``; the processor copies ``tokenizer.model`` beside it,
    so a reloaded checkpoint still tokenizes by SentencePiece."""
    from llava_next_video_hf.processing import LlavaNextVideoAnyResProcessor, register_auto_classes

    register_auto_classes()
    proc = testing.make_processor(testing.tiny_config(checkpoint_tokenizer), checkpoint_tokenizer)
    proc.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.model").read_bytes() == Path(checkpoint_tokenizer.vocab_file).read_bytes()
    again = LlavaNextVideoAnyResProcessor.from_pretrained(tmp_path)
    text = "USER:  two  spaces\tand a tab ASSISTANT:"
    assert again(text=text)["input_ids"][0].tolist() == [1, *sp.encode(text)]
