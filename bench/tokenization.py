"""What encoding text pieces with SentencePiece costs at preprocessing time (issue 27).

Usage:
    python bench/tokenization.py [--repeats 5]

Needs the Mistral v1 SentencePiece model from the ``mistral-common`` package (installed with vLLM).
The prompts are the fidelity test's corpus (tests/test_tokenization_sentencepiece.py: 1,002 chat
prompts through the Vicuna v1, Mistral instruct and Llama-2 templates). Times per prompt, median of
``--repeats`` passes over the corpus, all measured in this run:

* ``fast``: ``tokenize_like_original`` with the checkpoint's fast tokenizer encoding each piece (what
  the processor did before: no ``tokenizer.model`` beside ``tokenizer.json``);
* ``sentencepiece``: the same rule with the pieces encoded by ``sentencepiece`` (now, when the
  checkpoint ships ``tokenizer.model``);
* ``whole``: the fast tokenizer on the whole prompt in one call (``tokenization="transformers"``);
* one-time: loading the SentencePiece model and checking its pieces against the tokenizer;
* ``processor``: the whole processor call with one 8-frame 336x336 video (the anchor: what a request's
  preprocessing costs in all).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _median_per_item(fn, items, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        times.append((time.perf_counter() - start) / len(items))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import importlib.util
    import json
    import tempfile

    import test_tokenization_sentencepiece as corpus_mod
    from transformers import AutoTokenizer

    from llava_next_video_hf import testing
    from llava_next_video_hf import tokenization as tk

    spec = importlib.util.find_spec("mistral_common")
    model = Path(spec.origin).parent / "data" / "tokenizer.model.v1"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "tokenizer.model").write_bytes(model.read_bytes())
        config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "legacy": False}
        config |= {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        tok = AutoTokenizer.from_pretrained(folder)
        tok.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
        tok.image_token, tok.video_token = "<image>", "<video>"
        tok.image_token_id, tok.video_token_id = tok.convert_tokens_to_ids(["<image>", "<video>"])
        texts = [t for _, t in corpus_mod.prompts(tok)]
        marks = ["<image>", "<video>"]
        start = time.perf_counter()
        assert tk.sentencepiece_text(tok) is not None  # once per tokenizer object: load + vocabulary check
        setup = time.perf_counter() - start

        with_sp = _median_per_item(lambda t: tk.tokenize_like_original(tok, t, marks), texts, args.repeats)
        tk._CACHE[tok] = None  # the fast tokenizer encodes the pieces, as before
        fast = _median_per_item(lambda t: tk.tokenize_like_original(tok, t, marks), texts, args.repeats)
        whole = _median_per_item(lambda t: tok(t, add_special_tokens=False), texts, args.repeats)
        del tk._CACHE[tok]

        proc = testing.make_processor(testing.tiny_config(tok), tok)
        video = np.random.default_rng(0).integers(0, 256, (8, 336, 336, 3), dtype=np.uint8)
        video_texts = [t.replace("<image>", "<video>") for t in texts[:50]]
        processor = _median_per_item(lambda t: proc(text=t, videos=[video]), video_texts, 1)

    print(f"prompts: {len(texts)}, mean length {statistics.mean(map(len, texts)):.0f} characters")
    print("| path | per prompt | vs fast |")
    print("|---|---|---|")
    for name, value in (("fast", fast), ("sentencepiece", with_sp), ("whole", whole)):
        print(f"| {name} | {value * 1e6:.1f} µs | {value / fast:.2f}x |")
    print(
        f"| processor (8-frame 336px video, sentencepiece) | {processor * 1e3:.2f} ms | {processor / fast:.0f}x |"
    )
    print(f"one-time setup per tokenizer (load the model, check its pieces): {setup * 1e3:.1f} ms")
    print(
        f"sentencepiece minus fast = {(with_sp - fast) * 1e6:.1f} µs per prompt, "
        f"{(with_sp - fast) / processor * 100:.2f}% of the processor call"
    )


if __name__ == "__main__":
    main()
