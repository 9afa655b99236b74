"""SpanRules (NEST.md §10) on the default model's tokenizer: boundary tables and the glue mask."""

from __future__ import annotations

import numpy as np
import pytest

from nest_integrations.decoding.span_rules import SpanRules, glue_table
from nest_integrations.sentences import on_word_boundary
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
