"""Incremental detokenisation: the text of a growing token sequence at a constant cost per token."""

from __future__ import annotations

from typing import Any

__all__ = ["IncrementalDetokenizer"]

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Turns tokens into text as they come, decoding only a short window at the end.

    :meth:`push` returns the new characters the token completes. The window starts one emission back
    (so tokenizers that drop the leading space of a sequence's first token, like SentencePiece, still
    give the right text), and text ending in the replacement character ``'\\ufffd'`` is held back until
    the following tokens complete the multi-byte character, as transformers' ``TextStreamer`` does. The
    concatenation of everything pushed equals ``tokenizer.decode(ids)`` without its trailing
    replacement characters (the part of a character cut by the end of generation); with ``lstrip``,
    without its leading whitespace (a chat answer does not start with the space its first token carries).

    Args:
        tokenizer: a Hugging Face tokenizer.
        lstrip: drop the whitespace at the start of the text.
    """

    def __init__(self, tokenizer: Any, *, lstrip: bool = False) -> None:
        self._tok = tokenizer
        self.ids: list[int] = []
        self._prefix = 0  # first token of the decode window
        self._read = 0  # tokens up to here are settled: their text is final
        self._prefix_len = 0  # length of the decoded text of ids[prefix:read]
        self._given = 0  # characters of the window past prefix_len already returned
        self._started = not lstrip

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token: int) -> str:
        """Add one token; returns the characters it completes ("" while a character is still partial)."""
        self.ids.append(int(token))
        window = self._decode(self.ids[self._prefix :])
        settled = not window.endswith(_REPLACEMENT)
        stable = window if settled else window.rstrip(_REPLACEMENT)
        start = self._prefix_len + self._given
        new = stable[start:] if len(stable) > start else ""
        if settled and len(window) > self._prefix_len:
            # the window ends on a whole character: move it up to start at the tokens decoded last
            self._prefix, self._read = self._read, len(self.ids)
            self._prefix_len = len(self._decode(self.ids[self._prefix : self._read]))
            self._given = 0
        else:
            self._given += len(new)
        if not self._started:
            new = new.lstrip()
            self._started = bool(new)
        return new

    def peek(self, token: int) -> str:
        """The characters :meth:`push` of ``token`` would add, partial characters shown as ``'\ufffd'``
        (nothing is recorded; ``lstrip`` is not applied)."""
        window = self._decode(self.ids[self._prefix :] + [int(token)])
        start = self._prefix_len + self._given
        return window[start:] if len(window) > start else ""
