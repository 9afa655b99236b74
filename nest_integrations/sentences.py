"""Words and sentences: the one splitter and the word-boundary rule used everywhere (NEST.md §10).

The decoder's span rules, the sentence support labels, ``nest eval``'s strict recall and its
spliced-sentence count all call these functions, so they cannot disagree about what a sentence or a
word is.

Sentence rule (documented, deterministic, no model): a sentence ends

* after ``.``, ``!`` or ``?`` (plus any closing quotes / brackets right after it) that is followed by
  whitespace or by the end of the text — except a ``.`` that ends a known abbreviation (``Mr.``,
  ``Dr.``, ``St.``, ``e.g.`` …) or a single-letter initial (``J. K. Rowling``, ``U.S. Army``);
* or before a line break.

So ``"3.5 million"`` never ends a sentence (no whitespace after the dot). Sentences are returned as
``(start, end)`` character ranges with surrounding whitespace left out.

Word rule: a character is part of a word if it is a letter or digit (``str.isalnum``, so non-ASCII
letters count), or a ``.`` / ``,`` between two digits (``3.5``, ``1,000`` are one word).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable

__all__ = [
    "ABBREVIATIONS",
    "is_word_char",
    "on_word_boundary",
    "split_sentences",
    "SentenceScanner",
    "count_words",
    "words",
]

ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc e.g i.e no mt ft inc ltd co corp gen col lt sgt capt fig al approx "
    "jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
"""Lower-cased words whose trailing ``.`` does not end a sentence (besides single-letter initials)."""

_TERMINATOR_RE = re.compile(r"[.!?]+[\"'\)\]»”’]*")
_LINE_BREAK = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
_WORD_RE = re.compile(r"\w+(?:[.,]\d+)*", re.UNICODE)


def is_word_char(text: str, i: int) -> bool:
    """True if ``text[i]`` belongs to a word: a letter or digit, or ``.``/``,`` between two digits."""
    if i < 0 or i >= len(text):
        return False
    ch = text[i]
    if ch.isalnum():
        return True
    return ch in ".," and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()


def on_word_boundary(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` starts and ends on word boundaries (NEST.md §10).

    With the range's leading and trailing whitespace left out, the character before it (if any) and
    the character after it (if any) must not be word characters (:func:`is_word_char`). A blank range
    is on a boundary.
    """
    s, e = start, end
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    if s >= e:
        return True
    return not is_word_char(text, s - 1) and not is_word_char(text, e)


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the ``.`` at index ``dot`` ends an abbreviation or an initial rather than a sentence."""
    j = dot
    while j > 0 and (text[j - 1].isalpha() or text[j - 1] == "."):
        j -= 1
    word = text[j:dot].lower()
    if not word:
        return False
    if len(word) == 1 and text[j].isupper():
        return True  # an initial: "J. K. Rowling", the last letter of "U.S."
    if "." in word and all(len(p) <= 1 for p in word.split(".")):
        return True  # "e.g", "i.e", "U.S" written with inner dots
    return word in ABBREVIATIONS


def _scan(
    text: str,
    i: int,
    start: int | None,
    last: int,
    on_close: Callable[[int, int], None],
    on_start: Callable[[int], None] | None = None,
) -> tuple[int, int | None, int]:
    """The sentence rule as a resumable scan: from character ``i`` with the open sentence's ``start`` (or
    None) and the end of its last non-space character ``last``, report each settled sentence to
    ``on_close`` (and each sentence start to ``on_start``); returns the state to resume from. It stops
    before a terminator that reaches the end of ``text`` (the next character decides)."""
    n = len(text)
    while i < n:
        ch = text[i]
        if start is None:
            if not ch.isspace():
                start, last = i, i + 1
                if on_start is not None:
                    on_start(i)
            i += 1
            continue
        if ch in _LINE_BREAK:
            on_close(start, last)
            start = None
            i += 1
            continue
        if ch in ".!?":
            m = _TERMINATOR_RE.match(text, i)
            assert m is not None
            end = m.end()
            if end >= n:
                break
            if text[end].isspace() and not (ch == "." and m.group() == "." and _is_abbreviation(text, i)):
                on_close(start, end)
                start = None
            else:
                last = end
            i = end
            continue
        if not ch.isspace():
            last = i + 1
        i += 1
    return i, start, last


def split_sentences(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every sentence of ``text``, in order, whitespace around them excluded.

    See the module docstring for the rule. Text after the last terminator is a sentence too (an
    unfinished one, when the text is still being generated).
    """
    scanner = SentenceScanner()
    scanner.feed(text)
    return scanner.sentences(text)


class SentenceScanner:
    """:func:`split_sentences` for a text that grows at its end, at a cost linear in the text.

    Call :meth:`feed` with the whole text each time it grows (only the new part is scanned);
    :attr:`closed` holds the sentences that are settled (their end cannot change, whatever follows),
    :meth:`tail` the unfinished last one as the text stands, and :meth:`sentences` both, which is
    ``split_sentences(text)``.
    """

    def __init__(self) -> None:
        self.closed: list[tuple[int, int]] = []
        self.closed_ends: list[int] = []  # end of each closed sentence (for bisection)
        self._i = 0  # next character to scan
        self._start: int | None = None  # start of the open sentence
        self._last = 0  # end of the open sentence's last non-space character

    def _close(self, start: int, end: int) -> None:
        self.closed.append((start, end))
        self.closed_ends.append(end)

    def feed(self, text: str) -> None:
        """Scan ``text`` (the previous text with more at its end) as far as it settles."""
        self._i, self._start, self._last = _scan(text, self._i, self._start, self._last, self._close)

    def last_start(self, text: str, extra: str = "", upto: int | None = None) -> int:
        """Start of the last sentence of ``text + extra`` that starts at or before ``upto`` (default: any),
        0 if there is none, as :func:`split_sentences` gives them. ``text`` is the text last fed; only
        ``extra`` (and a terminator waiting at the end of ``text``) is scanned, and nothing is recorded.
        """
        limit = len(text) + len(extra) if upto is None else upto
        if extra or self._i < len(text):
            starts: list[int] = []
            _scan(text + extra, self._i, self._start, self._last, lambda s, e: None, starts.append)
            found = next((s for s in reversed(starts) if s <= limit), None)
            if found is not None:
                return found
        if self._start is not None and self._start <= limit:
            return self._start
        k = bisect.bisect_right(self.closed, limit, key=lambda sentence: sentence[0])
        return self.closed[k - 1][0] if k else 0

    def tail(self, text: str) -> tuple[int, int] | None:
        """The unfinished last sentence of ``text`` (the text last fed), or None."""
        if self._start is None:
            return None
        if self._i < len(text):  # stopped at a terminator that reaches the end of the text
            return (self._start, len(text))
        return (self._start, self._last)

    def sentences(self, text: str) -> list[tuple[int, int]]:
        """Every sentence of ``text`` (the text last fed): ``split_sentences(text)``."""
        tail = self.tail(text)
        return self.closed + [tail] if tail is not None else list(self.closed)


def words(text: str) -> list[str]:
    """The words of ``text`` (runs of word characters; ``3.5`` and ``1,000`` stay one word)."""
    return _WORD_RE.findall(text)


def count_words(text: str) -> int:
    """Number of whole words in ``text`` (see :func:`words`)."""
    return len(words(text))
