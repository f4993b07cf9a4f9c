"""Tokenization by the rule the released weights were trained with (the original LLaVA code's
``mm_utils.tokenizer_image_token``): text between media placeholders is tokenized piece by piece.

The original builder loads the slow ``LlamaTokenizer`` (``use_fast=False``): every piece of text is
cut by SentencePiece itself. transformers 5's converted (fast) Llama tokenizer segments runs of
whitespace differently (``"Hello  world"``: SentencePiece ``▁Hello ▁ ▁world``, fast
``▁Hello ▁▁ world``), so when the checkpoint ships its SentencePiece model (``tokenizer.model``) and
the ``sentencepiece`` package is installed, text pieces are encoded with it ([`SentencePieceText`]);
otherwise (byte-level BPE such as Qwen, or no ``tokenizer.model``) the tokenizer itself encodes them.
"""

from __future__ import annotations

import os
import re
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

#: How the processor turns text into ids (see ``tokenize_like_original``).
TOKENIZATION_MODES = ("original", "transformers")


# ---------------------------------------------------------------------------- SentencePiece pieces


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a protobuf varint at ``pos``; returns (value, next position)."""
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _without_dummy_prefix(model: bytes) -> bytes:
    """The serialized SentencePiece ``ModelProto`` with ``normalizer_spec.add_dummy_prefix = false``.

    What the slow ``LlamaTokenizer`` loads when ``legacy=False`` to encode text after a special token
    (no ``▁`` in front). Protobuf keeps the last value of a repeated scalar field, so appending
    ``add_dummy_prefix`` (field 3, varint 0) to ``normalizer_spec`` (field 3 of the model) is enough;
    written by hand so that no ``protobuf`` package is needed.
    """
    out = bytearray()
    pos = 0
    found = False
    while pos < len(model):
        start = pos
        key, pos = _varint(model, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(model, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, body = _varint(model, pos)
            pos = body + size
            if field == 3:
                spec = model[body:pos] + b"\x18\x00"
                out += _encode_varint(key) + _encode_varint(len(spec)) + spec
                found = True
                continue
        else:
            raise ValueError(f"unexpected protobuf wire type {wire} in the SentencePiece model")
        out += model[start:pos]
    if not found:
        out += b"\x1a\x02\x18\x00"  # a normalizer_spec of its own
    return bytes(out)


class SentencePieceText:
    """Text encoded by the checkpoint's SentencePiece model, as the slow ``LlamaTokenizer`` does.

    ``tokenizer(text)`` of the slow tokenizer cuts ``text`` at the tokenizer's added tokens
    (``<s>``, ``</s>``, ``<image>``, ...), encodes each stretch of text with SentencePiece and puts
    the added tokens' ids in between; BOS (and EOS where the tokenizer adds one) come from the
    tokenizer. A stretch after an added token gets SentencePiece's dummy prefix ``▁`` only in the
    ``legacy`` mode; this follows the fast tokenizer's own choice (its ``Metaspace`` pre-tokenizer
    prepends ``▁`` only to the start of the text unless ``prepend_scheme="always"``).
    Build it with [`sentencepiece_text`].
    """

    def __init__(self, tokenizer: Any, model_file: str) -> None:
        sentencepiece = _sentencepiece()
        with open(model_file, "rb") as f:
            model = f.read()
        self.model_file = model_file
        self.sp = sentencepiece.SentencePieceProcessor(model_proto=model)
        self._model = model
        self._sp_after_special: Any = None
        self.legacy = _prepend_scheme(tokenizer) == "always"
        added = [t for t in getattr(tokenizer, "added_tokens_encoder", {}) if t]
        self.added_ids = {t: int(tokenizer.convert_tokens_to_ids(t)) for t in added}
        self.split = (
            re.compile("|".join(re.escape(t) for t in sorted(added, key=len, reverse=True)))
            if added
            else None
        )
        self.prefix, self.suffix = _special_ids_around(tokenizer)

    def _after_special(self) -> Any:
        if self._sp_after_special is None:
            model = _without_dummy_prefix(self._model)
            self._sp_after_special = _sentencepiece().SentencePieceProcessor(model_proto=model)
        return self._sp_after_special

    def _encode(self, sp: Any, text: str, with_offsets: bool) -> tuple[list[int], list[tuple[int, int]]]:
        if not with_offsets:
            return list(sp.encode(text, out_type=int)), []
        try:
            enc = sp.encode(text, return_type="offset_mapping")
            return list(enc["ids"]), [tuple(o) for o in enc["offsets"]]
        except (TypeError, ValueError):  # sentencepiece < 0.2.3: byte offsets of the proto pieces
            proto = sp.encode(text, out_type="immutable_proto")
            chars = [0] * (len(text.encode("utf-8")) + 1)
            pos = 0
            for i, ch in enumerate(text):
                for _ in range(len(ch.encode("utf-8"))):
                    chars[pos] = i
                    pos += 1
            chars[pos] = len(text)
            return [p.id for p in proto.pieces], [(chars[p.begin], chars[p.end]) for p in proto.pieces]

    def encode(
        self, text: str, *, add_special_tokens: bool = True, return_offsets_mapping: bool = False
    ) -> dict[str, list]:
        """``tokenizer(text)``'s ``input_ids`` (and ``offset_mapping``) with SentencePiece's segmentation."""
        ids: list[int] = list(self.prefix) if add_special_tokens else []
        offsets: list[tuple[int, int]] = [(0, 0)] * len(ids)
        pos = 0
        stretches: list[tuple[int, int, str | None]] = []
        if self.split is not None:
            for m in self.split.finditer(text):
                stretches.append((pos, m.start(), None))
                stretches.append((m.start(), m.end(), m.group()))
                pos = m.end()
        stretches.append((pos, len(text), None))
        for a, b, token in stretches:
            if token is not None:
                ids.append(self.added_ids[token])
                offsets.append((a, b))
                continue
            if a == b:
                continue
            sp = self.sp if a == 0 or self.legacy else self._after_special()
            piece_ids, spans = self._encode(sp, text[a:b], return_offsets_mapping)
            ids.extend(piece_ids)
            offsets.extend((x + a, y + a) for x, y in spans)
        if add_special_tokens:
            ids.extend(self.suffix)
            offsets.extend([(0, 0)] * len(self.suffix))
        out: dict[str, list] = {"input_ids": ids}
        if return_offsets_mapping:
            out["offset_mapping"] = offsets
        return out


def _special_ids_around(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text with ``add_special_tokens=True`` (BOS; EOS
    where it adds one), read from its backend (calling the tokenizer could recurse into a hook that
    uses this module, as the vLLM plugin's does)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        plain = list(backend.encode("a", add_special_tokens=False).ids)
        full = list(backend.encode("a", add_special_tokens=True).ids)
        at = next((i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain), 0)
        return full[:at], full[at + len(plain) :]
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    prefix = [bos] if bos is not None and getattr(tokenizer, "add_bos_token", True) else []
    suffix = [eos] if eos is not None and getattr(tokenizer, "add_eos_token", False) else []
    return prefix, suffix


def _sentencepiece() -> Any:
    """The ``sentencepiece`` module, or None. Imported inside ``try`` only: this module is also shipped as
    remote code, whose import scan (transformers' ``get_imports``) must not require it."""
    try:
        import sentencepiece
    except ImportError:
        return None
    return sentencepiece


def _prepend_scheme(tokenizer: Any) -> str | None:
    """The ``prepend_scheme`` of the fast tokenizer's ``Metaspace`` pre-tokenizer (None if it has none)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    for part in [pre, *(getattr(pre, "pretokenizers", None) or [])]:
        scheme = getattr(part, "prepend_scheme", None)
        if scheme is not None:
            return str(scheme)
    return None


def _model_file(tokenizer: Any) -> str | None:
    """The SentencePiece model the tokenizer was loaded with (``tokenizer.model``), if it exists."""
    for path in (
        getattr(tokenizer, "vocab_file", None),
        (getattr(tokenizer, "init_kwargs", None) or {}).get("vocab_file"),
    ):
        if isinstance(path, str) and path.endswith(".model") and os.path.isfile(path):
            return path
    return None


_CACHE: weakref.WeakKeyDictionary[Any, SentencePieceText | None] = weakref.WeakKeyDictionary()
_WARNED: set[str] = set()


def _pieces_match(tokenizer: Any, sp: Any) -> bool:
    """Whether the SentencePiece model and the tokenizer name the same piece by each id (a sample
    across the vocabulary, the special ids and the byte pieces)."""
    size = sp.get_piece_size()
    if size > len(tokenizer):
        return False
    sample = sorted({*range(0, min(size, 300)), *range(0, size, max(1, size // 997)), size - 1})
    got = tokenizer.convert_ids_to_tokens(sample)
    return all(sp.id_to_piece(i) == t for i, t in zip(sample, got, strict=True))


def sentencepiece_text(tokenizer: Any) -> SentencePieceText | None:
    """A [`SentencePieceText`] for ``tokenizer`` if it was loaded from a SentencePiece model
    (``tokenizer.model``) whose pieces are the tokenizer's vocabulary and ``sentencepiece`` is
    installed; else None (the tokenizer's own encoding is used). Cached per tokenizer object."""
    try:
        return _CACHE[tokenizer]
    except (KeyError, TypeError):
        pass
    found: SentencePieceText | None = None
    path = _model_file(tokenizer)
    if path is not None:
        if _sentencepiece() is None:
            if path not in _WARNED:
                _WARNED.add(path)
                warnings.warn(
                    f"{path} is a SentencePiece model but the sentencepiece package is not installed: "
                    "runs of whitespace are tokenized as transformers' fast tokenizer does, not as the "
                    "original (pip install sentencepiece)",
                    stacklevel=3,
                )
        else:
            text = SentencePieceText(tokenizer, path)
            if _pieces_match(tokenizer, text.sp):
                found = text
    try:
        _CACHE[tokenizer] = found
    except TypeError:
        pass
    return found


def save_sentencepiece_model(tokenizer: Any, folder: str | os.PathLike) -> str | None:
    """Copy the tokenizer's SentencePiece model into ``folder`` as ``tokenizer.model`` (transformers 5's
    ``save_pretrained`` writes only ``tokenizer.json``, and a reloaded tokenizer without it would be
    encoded by the fast tokenizer). Returns the written path, or None when there is nothing to copy."""
    import shutil

    found = sentencepiece_text(tokenizer)
    if found is None:
        return None
    target = os.path.join(os.fspath(folder), "tokenizer.model")
    if not os.path.exists(target) or not os.path.samefile(found.model_file, target):
        shutil.copyfile(found.model_file, target)
    return target


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
    own BOS): the BOS comes from the tokenizer, once. A piece is tokenized by the checkpoint's
    SentencePiece model when it has one ([`sentencepiece_text`]), as the original's slow tokenizer
    does. With SentencePiece-style tokenizers every piece
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
    encoder = sentencepiece_text(tokenizer)
    for kind, a, b in pieces:
        if kind == "media":
            ids.append(int(ids_of[text[a:b]]))
            offsets.append((a, b))
            continue
        if encoder is not None:
            enc = encoder.encode(
                text[a:b],
                add_special_tokens=add_special_tokens,
                return_offsets_mapping=return_offsets_mapping,
            )
        else:
            enc = tokenizer(
                text[a:b],
                add_special_tokens=add_special_tokens,
                return_offsets_mapping=return_offsets_mapping,
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


__all__ = [
    "TOKENIZATION_MODES",
    "SentencePieceText",
    "save_sentencepiece_model",
    "sentencepiece_text",
    "tokenize_batch_like_original",
    "tokenize_like_original",
]
