"""Linear streaming: each incremental piece equals its whole-text counterpart, step by step.

The detokeniser against ``tokenizer.decode``, the sentence scanner against ``split_sentences``, the
run tracker against ``find_spans`` and the engine's incremental stop policy against the whole-text one
(``NestEngine._sentence_stop``), on the default model's tokenizer (no model weights needed).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from nest_integrations.attribution import RunTracker, find_spans
from nest_integrations.chunks import Chunk
from nest_integrations.config import NestConfig
from nest_integrations.decoding.detokenize import IncrementalDetokenizer
from nest_integrations.engine import NestEngine, _SentencePolicy
from nest_integrations.models import default_model_dir
from nest_integrations.sentences import SentenceScanner, split_sentences


@pytest.fixture(scope="module")
def tok():
    if not (default_model_dir() / "config.json").is_file():
        pytest.skip("default model not downloaded (run `nest download-model`)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(default_model_dir()))


def _decode(tok, ids: list[int], lstrip: bool) -> str:
    text = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False).rstrip("\ufffd")
    return text.lstrip() if lstrip else text


# ---- detokenisation -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    ["  Zürich, Malmö – 東京 🙂🙂 naïve café\n\nΑθήνα.", "👩‍👩‍👧‍👦 family 😀 ok", " plain words, then 3.5 more."],
)
def test_detokenizer_equals_decode_on_multibyte_text(tok, text: str) -> None:
    ids = tok.encode(text, add_special_tokens=False)
    for lstrip in (False, True):
        d = IncrementalDetokenizer(tok, lstrip=lstrip)
        out = ""
        for k, t in enumerate(ids):
            out += d.push(t)
            assert out == _decode(tok, ids[: k + 1], lstrip)  # never ahead of, nor behind, the whole decode
        assert out == (text.lstrip() if lstrip else text)


def test_detokenizer_holds_partial_characters_back(tok) -> None:
    ids = tok.encode("🙂", add_special_tokens=False)
    assert len(ids) > 1  # one emoji, several byte tokens
    d = IncrementalDetokenizer(tok)
    pieces = [d.push(t) for t in ids]
    assert pieces[:-1] == [""] * (len(ids) - 1) and pieces[-1] == "🙂"
    assert "\ufffd" not in "".join(pieces)


def test_detokenizer_on_random_and_byte_tokens(tok) -> None:
    rng = random.Random(0)
    vocab = len(tok)
    byte_tokens = [i for i in range(vocab) if tok.decode([i]) == "\ufffd"]
    assert byte_tokens
    for _ in range(150):
        ids = [rng.choice(byte_tokens) if rng.random() < 0.5 else rng.randrange(vocab) for _ in range(rng.randint(1, 30))]
        for lstrip in (False, True):
            d = IncrementalDetokenizer(tok, lstrip=lstrip)
            out = ""
            for k, t in enumerate(ids):
                out += d.push(t)
                assert out == _decode(tok, ids[: k + 1], lstrip)


# ---- sentences -------------------------------------------------------------------------------------
_PIECES = list("ab cD.!?\n \"')”’ \r.\t") + ["Dr.", "e.g.", " J. ", "3.5", "U.S.", " Mr. ", "...", "?!", ".\"", "  "]


def test_sentence_scanner_fed_piece_by_piece_equals_split_sentences() -> None:
    rng = random.Random(1)
    for _ in range(1500):
        text = "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 40)))
        scanner = SentenceScanner()
        k = 0
        while k < len(text):
            k = min(len(text), k + rng.randint(1, 6))
            scanner.feed(text[:k])
            assert scanner.sentences(text[:k]) == split_sentences(text[:k]), repr(text[:k])
            assert scanner.closed_ends == [e for _, e in scanner.closed]


# ---- copied runs and the stop policy ---------------------------------------------------------------
CHUNK_TEXT = (
    "Dr. Ada Lovelace wrote the first program. She worked with Charles Babbage on the Analytical Engine!\n"
    "Her notes, published in 1843, describe an algorithm. Was it the first? Many historians say yes."
)


def _chunk(tok):
    enc = tok(CHUNK_TEXT, add_special_tokens=False, return_offsets_mapping=True)
    return Chunk(CHUNK_TEXT, "c0", "d0", 7), list(enc["input_ids"]), np.asarray(enc["offset_mapping"])


def _random_answer(tok, chunk_ids, rng):
    """Steps of (token, source) commits: generated words and punctuation, and copied runs of the chunk."""
    words = [tok.encode(w, add_special_tokens=False) for w in (" the", " Engine", ".", "!", "\n", " Dr", " was", " 3", ".5")]
    steps = []
    while sum(len(s) for s in steps) < 60:
        if rng.random() < 0.4:
            p = rng.randrange(len(chunk_ids) - 1)
            n = rng.randint(1, 12)
            run = [(chunk_ids[q], (0, q)) for q in range(p, min(len(chunk_ids), p + n))]
            cut = rng.randint(1, len(run))  # one step or two
            steps += [run[:cut], run[cut:]] if cut < len(run) else [run]
        else:
            steps.append([(t, None) for t in rng.choice(words)])
    return [s for s in steps if s]


def test_run_tracker_equals_find_spans(tok) -> None:
    chunk, chunk_ids, offs = _chunk(tok)
    rng = random.Random(2)
    n_spans = 0
    for _ in range(60):
        d = IncrementalDetokenizer(tok, lstrip=True)
        runs = RunTracker([chunk], [offs], min_words=2)
        text = ""
        for step in _random_answer(tok, chunk_ids, rng):
            for token, source in step:
                text += d.push(token)
                runs.push(source, len(text), text)
            n = len(runs.sources)
            closed = find_spans(runs.sources, runs.ends, text, [chunk], [offs], closed_upto=n, min_words=2)
            assert runs.citations == closed
            everything = find_spans(runs.sources, runs.ends, text, [chunk], [offs], min_words=2)
            open_cit = runs.open_citation(text)
            assert runs.citations + ([open_cit] if open_cit else []) == everything
            n_spans = max(n_spans, len(everything))
    assert n_spans > 1


@pytest.mark.parametrize(
    "overrides",
    [{}, {"max_sentences": 1}, {"max_sentences": None}, {"stop_after_cited_sentence": False, "max_sentences": 2},
     {"min_citation_words": 1, "max_sentences": 5}],
)
def test_incremental_stop_policy_equals_the_whole_text_one(tok, overrides) -> None:
    cfg = NestConfig(**overrides)
    chunk, chunk_ids, offs = _chunk(tok)
    rng = random.Random(3)
    stops = 0
    for _ in range(80):
        d = IncrementalDetokenizer(tok, lstrip=True)
        runs = RunTracker([chunk], [offs], min_words=cfg.min_citation_words)
        policy = _SentencePolicy(cfg)
        text = ""
        for step in _random_answer(tok, chunk_ids, rng):
            for token, source in step:
                text += d.push(token)
                runs.push(source, len(text), text)
            policy.feed(text)
            sents = split_sentences(text)
            assert policy.count(text) == len(sents) and policy.first(text) == (sents[0] if sents else None)
            want = NestEngine._sentence_stop(cfg, text, runs.sources, runs.ends, [chunk], [offs])
            assert policy.stop(text, runs) == want, repr(text)
            if want is not None:  # the answer ends here
                stops += 1
                break
    assert stops > 10
