"""SpanRules (NEST.md §10) on the default model's tokenizer: boundary tables and the glue mask."""

from __future__ import annotations

import random

import numpy as np
import pytest

from nest_integrations.decoding.span_rules import SpanRules, glue_table
from nest_integrations.sentences import is_word_char, on_word_boundary, split_sentences
from nest_integrations.store.token_store import ChunkKeys, RequestStore


@pytest.fixture(scope="module")
def tok():
    from tests.conftest import _require_default_model

    _require_default_model()
    from transformers import AutoTokenizer

    from nest_integrations.models import default_model_dir

    return AutoTokenizer.from_pretrained(str(default_model_dir()))


def _rules(tok, text: str) -> SpanRules:
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int32)
    offs = np.asarray(enc["offset_mapping"], dtype=np.int32)
    keys = np.zeros((len(ids), 4), dtype=np.float16)
    store = RequestStore([(0, ChunkKeys(ids, offs, keys))], [text])
    return SpanRules(tok, store, ["d"], vocab_size=len(tok))


def _copy_until(tok, rules: SpanRules, text: str, end_char: int) -> None:
    """Commit chunk tokens as copies up to the one ending at ``end_char``."""
    offs = rules.store.chunks[0][1].offsets
    ids = rules.store.chunks[0][1].token_ids
    for p in range(len(ids)):
        rules.observe(int(ids[p]), (0, p))
        if int(offs[p][1]) >= end_char:
            return


@pytest.mark.parametrize("text,stop", [("She earned a Ph.D. in 1901.", "Ph.D."), ("Born in Smiljan, Croatia.", "Smiljan,"),
                                       ("He was Nikola Tesla today", "Tesla")])
def test_glue_mask_forbids_word_chars_after_any_visible_copied_end(tok, text, stop):
    rules = _rules(tok, text)
    _copy_until(tok, rules, text, text.index(stop) + len(stop))
    mask = rules.glue_mask()
    assert mask is not None and mask.shape == (len(tok),)
    # every token the mask allows keeps the copied run on a word boundary of the response; every
    # token it forbids would break it
    resp = rules.text
    end = len(resp)
    for word in ("s", "n", "and", "1"):
        tid = tok.convert_tokens_to_ids(word)
        joined = tok.decode(rules.ids + [tid], clean_up_tokenization_spaces=False)
        assert bool(mask[tid]) == (not on_word_boundary(joined, 0, end)), (word, joined)
    tid = tok.encode(" and", add_special_tokens=False)[0]
    assert not bool(mask[tid])


def test_glue_mask_is_none_after_whitespace_or_generated_token(tok):
    text = "Tesla was born.\nHe"
    rules = _rules(tok, text)
    _copy_until(tok, rules, text, text.index("\n") + 1)
    if rules.text.endswith("\n"):
        assert rules.glue_mask() is None
    rules.observe(tok.encode(" x", add_special_tokens=False)[0], None)  # generated
    assert rules.glue_mask() is None


def test_glue_table_marks_word_starts_without_space(tok):
    table = glue_table(tok, len(tok) + 7)
    assert table.shape == (len(tok) + 7,) and not table[len(tok):].any()
    assert table[tok.convert_tokens_to_ids("s")] and not table[tok.encode(" s", add_special_tokens=False)[0]]
    assert not table[tok.convert_tokens_to_ids(".")]


class _WholeTextRules:
    """The rules' response checks done over the whole decoded response each time (the reference)."""

    def __init__(self, tok, rules: SpanRules) -> None:
        self.tok, self.rules = tok, rules

    def _decode(self, ids):
        return self.tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _first_chunk(self, text: str, pos: int):
        sent_start = 0
        for st, _ in split_sentences(text):
            if st <= pos:
                sent_start = st
        for src, st in zip(self.rules.sources, self.rules.starts, strict=True):
            if src is not None and st >= sent_start:
                return src[0]
        return None

    def sentence_lock_chunk(self):
        text = self._decode(self.rules.ids).rstrip()
        if not text or text[-1] in ".!?" or text[-1] in "\"')]»”’" and len(text) > 1 and text[-2] in ".!?":
            return None
        return self._first_chunk(text, len(text) - 1)

    def can_start(self, chunk: int, pos: int, token: int) -> bool:
        r = self.rules
        if not r.starts_word(chunk, pos):
            return False
        before = self._decode(r.ids)
        combined = self._decode(r.ids + [token])
        s = len(before)
        while s < len(combined) and combined[s].isspace():
            s += 1
        if s < len(combined) and is_word_char(combined, s - 1):
            return False
        first = self._first_chunk(combined, s)
        return first is None or first == chunk


def test_incremental_rules_equal_the_whole_text_checks(tok):
    """The response state is kept incrementally (linear streaming); decisions equal whole-text checks."""
    texts = ["Dr. Ada Lovelace wrote the first program. She worked with Babbage!\nHer notes, from 1843, say so.",
             "Zürich is a city. Malmö is one too? The Øresund Bridge (2000) links them."]
    enc = [tok(t, add_special_tokens=False, return_offsets_mapping=True) for t in texts]
    keys = [np.zeros((len(e["input_ids"]), 4), dtype=np.float16) for e in enc]
    chunks = [(i, ChunkKeys(np.asarray(e["input_ids"], np.int32), np.asarray(e["offset_mapping"], np.int32), k))
              for i, (e, k) in enumerate(zip(enc, keys, strict=True))]  # fmt: skip
    words = [tok.encode(w, add_special_tokens=False) for w in (" the", ".", " is", "!\n", " Dr", ". ", "n", " 3")]
    rng = random.Random(0)
    decisions = 0
    for _ in range(25):
        rules = SpanRules(tok, RequestStore(chunks, texts), ["d0", "d1"], vocab_size=len(tok))
        ref = _WholeTextRules(tok, rules)
        while len(rules.ids) < 50:
            if rng.random() < 0.5:
                c = rng.randrange(2)
                ids = chunks[c][1].token_ids
                p = rng.randrange(len(ids))
                for q in range(p, min(len(ids), p + rng.randint(1, 6))):
                    idx = rules.observe(int(ids[q]), (c, q))
                    if rng.random() < 0.1:
                        rules.revoke(idx)
            else:
                for t in rng.choice(words):
                    rules.observe(t, None)
            assert rules.text == ref._decode(rules.ids).rstrip("\ufffd")
            lock = rules.sentence_lock()
            want = ref.sentence_lock_chunk()
            assert (lock is None) == (want is None)
            if lock is not None:
                assert bool(lock.equal(rules.store.entry_chunk == want))
            for c in range(2):
                ids = chunks[c][1].token_ids
                for p in rng.sample(range(len(ids)), 4):
                    assert rules.can_start(c, p, int(ids[p])) == ref.can_start(c, p, int(ids[p]))
                    decisions += 1
    assert decisions > 1000
