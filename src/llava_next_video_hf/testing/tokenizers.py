"""Real tokenizers built offline for the tiny checkpoints and the token-id fidelity tests.

Each is trained (or written out) on the fly by the ``tokenizers`` library and wrapped as a
transformers fast tokenizer with left padding (for generation); deterministic and well under a
second to build.
"""

from __future__ import annotations

from typing import Any

from ..chat_templates import MISTRAL_INSTRUCT, QWEN_1_5, VICUNA_V1

__all__ = [
    "SENTENCEPIECE_SYMBOLS",
    "SENTENCEPIECE_WORDS",
    "SPECIAL_TOKENS",
    "make_plain_tokenizer",
    "make_qwen_tokenizer",
    "make_sentencepiece_tokenizer",
    "make_tokenizer",
]

#: special tokens of [`make_tokenizer`], ids 0..5 (the first four are [`make_plain_tokenizer`]'s)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<video>"]

_CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: ASSISTANT: What is happening in this video? Describe the video in detail.",
    "What colour is the moving square? The square is red. It is green. It is blue. It is yellow.",
    "Which direction does the object move? It moves left. It moves right. It moves up. It moves down.",
    "Which object appears first? The circle appears first. The square appears first.",
    "How many times does the screen flash? It flashes once. twice. three times. four times. zero one two three",
    "What is shown in this image? An image of a cat, a dog, a car and a tree on a sunny day.",
    "yes no maybe the a an of in on at to from with and or but not is are was were",
]


def _media_tokens() -> dict[str, str]:
    """The named ``<image>``/``<video>`` tokens (a fresh dict for each tokenizer)."""
    return {"image_token": "<image>", "video_token": "<video>"}


def _train_byte_level_bpe(vocab_size: int, special_tokens: list[str], corpus: list[str]) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``corpus`` (4 passes); ``special_tokens`` first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus * 4, trainer)
    return tok


def _llama_style(tok: Any, **kwargs: Any) -> Any:
    """Wrap ``tok`` as Llama-family tokenizers are: its post-processor prepends BOS ``<s>`` (id 1),
    specials ``<s> </s> <unk> <pad>``, left padding; ``kwargs`` go to ``PreTrainedTokenizerFast``."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
        **kwargs,
    )


def make_tokenizer(vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer trained on a small fixed corpus, with ``<image>``/``<video>`` tokens.

    Returns a transformers fast tokenizer (left padding, for generation) whose ids 0..5 are
    ``<unk> <s> </s> <pad> <image> <video>``.
    """
    tok = _train_byte_level_bpe(vocab_size, SPECIAL_TOKENS, _CORPUS)
    return _llama_style(tok, extra_special_tokens=_media_tokens(), chat_template=VICUNA_V1)


def make_plain_tokenizer(vocab_size: int = 512, extra_tokens: tuple[str, ...] = ()) -> Any:
    """[`make_tokenizer`]'s byte-level BPE without ``<image>``/``<video>``: an LLM's own tokenizer.

    The original LLaVA code splices visual features in at the id -200 and never adds a placeholder
    token. ``extra_tokens`` are appended as special tokens (``("<image>",)`` gives a LLaVA-NeXT
    image tokenizer, which has ``<image>`` but no ``<video>``). Ids 0..3 are ``<unk> <s> </s> <pad>``.
    """
    from tokenizers import AddedToken

    tok = _train_byte_level_bpe(vocab_size, SPECIAL_TOKENS[:4], _CORPUS)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in extra_tokens])
    named = {"image_token": "<image>"} if "<image>" in extra_tokens else {}
    return _llama_style(tok, extra_special_tokens=named)


#: Whole-word pieces of [`make_sentencepiece_tokenizer`]: each word with the SentencePiece word
#: boundary ``▁`` and without (what a word gets when a tokenizer loses the boundary), punctuation,
#: the bare ``▁`` and Mistral's ``[INST]`` pieces. Anything else falls back to bytes (``<0x0A>``).
SENTENCEPIECE_WORDS = (
    "A chat between a curious user and an artificial intelligence assistant The gives helpful detailed "
    "polite answers to the questions USER ASSISTANT What is happening in this video image Describe it "
    "Answer"
).split()
SENTENCEPIECE_SYMBOLS = (".", ",", "'s", ":", "?", "▁[", "▁[/", "INST", "]", "▁")


def make_sentencepiece_tokenizer(style: str = "vicuna") -> Any:
    """A SentencePiece-style tokenizer like Vicuna's/Llama-2's (``style="vicuna"``) or Mistral's.

    Built offline with the ``tokenizers`` library the way transformers 5 builds ``LlamaTokenizer``:
    a ``Metaspace`` pre-tokenizer (``▁`` for spaces, prepended to the start of the text only),
    byte fallback, BOS ``<s>`` added by the post-processor. The vocabulary is a Unigram model over
    [`SENTENCEPIECE_WORDS`] (each as ``▁word`` and ``word``) and [`SENTENCEPIECE_SYMBOLS`], so a test can
    write the pieces a text must give by hand. Ids: ``<unk> <s> </s>`` 0..2, the 256 byte pieces
    ``<0x00>``..``<0xFF>`` 3..258 (as Llama), then the words; ``<image>``, ``<video>``, ``<pad>`` last.
    The chat template is Vicuna v1's or Mistral instruct's.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    if style not in ("vicuna", "mistral"):
        raise ValueError(f"style must be 'vicuna' or 'mistral', got {style!r}")
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    words = [w for word in SENTENCEPIECE_WORDS for w in ("▁" + word, word)]
    pieces += list(dict.fromkeys(words + list(SENTENCEPIECE_SYMBOLS)))
    vocab = [(p, 0.0 if i < 3 else -1.0) for i, p in enumerate(pieces)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ("<image>", "<video>", "<pad>")]
    )
    return _llama_style(
        tok,
        extra_special_tokens=_media_tokens(),
        chat_template=VICUNA_V1 if style == "vicuna" else MISTRAL_INSTRUCT,
    )


def make_qwen_tokenizer(vocab_size: int = 600) -> Any:
    """A Qwen-style tokenizer: byte-level BPE, no BOS, ChatML specials, the Qwen chat template.

    Special tokens ``<|endoftext|>`` (pad/eos) ``<|im_start|>`` ``<|im_end|>`` ``<image>`` ``<video>``.
    """
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
    corpus = _CORPUS + ["You are a helpful assistant. system user assistant"]
    return PreTrainedTokenizerFast(
        tokenizer_object=_train_byte_level_bpe(vocab_size, specials, corpus),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        extra_special_tokens=_media_tokens(),
        chat_template=QWEN_1_5,
    )
