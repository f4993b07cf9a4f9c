"""Tokenization by the rule the released weights were trained with (the original LLaVA code's
``mm_utils.tokenizer_image_token``): text between media placeholders is tokenized piece by piece."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

#: How the processor turns text into ids (see ``tokenize_like_original``).
TOKENIZATION_MODES = ("original", "transformers")


def tokenize_like_original(
    tokenizer: Any,
    text: str,
    placeholders: Sequence[str],
    *,
    add_special_tokens: bool = True,
    return_offsets_mapping: bool = False,
) -> dict[str, list]:
    """Token ids of ``text`` by the original LLaVA rule (``mm_utils.tokenizer_image_token``).

    The text is cut at every media placeholder (any of ``placeholders``, which must be single
    tokens of ``tokenizer``); each piece of text is tokenized on its own with the tokenizer's
    special tokens, as ``tokenizer(chunk)`` in the original, and the placeholder ids are put back
    in between. When the first piece starts with the BOS id, later pieces lose their first id (their
    own BOS): the BOS comes from the tokenizer, once. With SentencePiece-style tokenizers every piece
    therefore starts with the word-boundary ``▁`` (Vicuna: ``<s> ▁A ...`` and ``▁`` after a media
    token), which tokenizing the whole string at once loses; byte-level BPE (Qwen, GPT-2) gives the
    same ids either way.

    A literal BOS at the start of ``text`` (chat templates render one, for engines that tokenize
    without special tokens) is removed first and the BOS then comes from the tokenizer, so
    ``"<s>A chat..."`` and ``"A chat..."`` give the same ids. ``add_special_tokens=False`` on a text
    without a literal BOS tokenizes every piece without special tokens.

    Returns ``{"input_ids": [...]}`` plus ``"offset_mapping"`` (character spans in ``text``) when asked.
    """
    bos = getattr(tokenizer, "bos_token", None)
    start = 0
    if bos and text.startswith(bos):
        start, add_special_tokens = len(bos), True
    ids_of = {p: tokenizer.convert_tokens_to_ids(p) for p in placeholders}
    pattern = re.compile("|".join(re.escape(p) for p in sorted(placeholders, key=len, reverse=True)))
    # pieces: (kind, start, end): text between placeholders ("text") or one placeholder ("media")
    pieces: list[tuple[str, int, int]] = []
    pos = start
    for m in pattern.finditer(text, start):
        pieces.append(("text", pos, m.start()))
        pieces.append(("media", m.start(), m.end()))
        pos = m.end()
    pieces.append(("text", pos, len(text)))

    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    drop_first = False
    first_text = True
    for kind, a, b in pieces:
        if kind == "media":
            ids.append(int(ids_of[text[a:b]]))
            offsets.append((a, b))
            continue
        enc = tokenizer(
            text[a:b], add_special_tokens=add_special_tokens, return_offsets_mapping=return_offsets_mapping
        )
        chunk = list(enc["input_ids"])
        spans = [(x + a, y + a) for x, y in enc["offset_mapping"]] if return_offsets_mapping else []
        if first_text:
            first_text = False
            bos_id = getattr(tokenizer, "bos_token_id", None)
            drop_first = bool(chunk) and bos_id is not None and chunk[0] == bos_id
        elif drop_first:
            chunk, spans = chunk[1:], spans[1:]
        ids.extend(chunk)
        offsets.extend(spans)
    out: dict[str, list] = {"input_ids": ids}
    if return_offsets_mapping:
        out["offset_mapping"] = offsets
    return out


def tokenize_batch_like_original(
    tokenizer: Any,
    placeholders: Sequence[str],
    texts: list[str],
    padding: bool | str,
    text_kwargs: dict[str, Any],
) -> Any:
    """Tokenize every (expanded) prompt by [`tokenize_like_original`], then pad as ``tokenizer`` would.

    ``text_kwargs`` are the processor's tokenizer kwargs; ``return_offsets_mapping`` is supported,
    ``return_token_type_ids``/``return_length`` are refused (they need transformers' tokenization).
    """
    text_kwargs = dict(text_kwargs)
    add_special_tokens = text_kwargs.pop("add_special_tokens", True)
    with_offsets = bool(text_kwargs.pop("return_offsets_mapping", False))
    text_kwargs.pop("verbose", None)
    for key in ("return_token_type_ids", "return_length"):
        if text_kwargs.pop(key, None):
            raise ValueError(
                f"{key} is not available with tokenization='original'; pass tokenization='transformers'"
            )
    rows = [
        tokenize_like_original(
            tokenizer,
            t,
            placeholders,
            add_special_tokens=add_special_tokens,
            return_offsets_mapping=with_offsets,
        )
        for t in texts
    ]
    encoded = tokenizer.pad(
        {"input_ids": [r["input_ids"] for r in rows]},
        padding=padding,
        return_attention_mask=True,
        return_tensors=None,
        **text_kwargs,
    )
    if with_offsets:
        side = text_kwargs.get("padding_side") or tokenizer.padding_side
        spans = []
        for r, ids in zip(rows, encoded["input_ids"], strict=True):
            pad = [(0, 0)] * (len(ids) - len(r["offset_mapping"]))
            spans.append(pad + r["offset_mapping"] if side == "left" else r["offset_mapping"] + pad)
        encoded["offset_mapping"] = spans
    return encoded


__all__ = ["TOKENIZATION_MODES", "tokenize_batch_like_original", "tokenize_like_original"]
