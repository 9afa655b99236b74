"""Engine end to end on the real default model: exact attribution on real files, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from nest_integrations import (
    ConfigError,
    Document,
    EmptyCorpusError,
    EmptyQuestionError,
    ModelNotFoundError,
    NestConfig,
    NestEngine,
    PromptTooLongError,
    load_model,
)
from nest_integrations.chunks import chunks_from_documents

TEXT = {
    "zurich.txt": (
        "Zürich is the largest city in Switzerland and the capital of the canton of Zürich. "
        "It is located in north-central Switzerland, at the northwestern tip of Lake Zürich.\n\n"
        "The city's café culture dates from the 19th century, when the Café Odeon opened in 1911 and "
        "became a meeting place for artists, writers and exiles such as Lenin and Einstein.\n\n"
        "The Grossmünster is a Romanesque-style Protestant church in the old town. According to legend, "
        "Charlemagne founded the church at the graves of the city's patron saints Felix and Regula."
    ),
    "malmo.txt": (
        "Malmö is the largest city in the Swedish county of Skåne and the third-largest city in Sweden. "
        "The Øresund Bridge, opened on 1 July 2000, connects Malmö with Copenhagen in Denmark.\n\n"
        "The Turning Torso, a twisted skyscraper designed by Santiago Calatrava, was completed in 2005 and "
        "is the tallest building in Scandinavia."
    ),
}


@pytest.fixture(scope="module")
def file_engine(default_lm, tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    docs = []
    for name, text in TEXT.items():
        p = root / name
        p.write_text(text, encoding="utf-8")
        docs.append(Document(str(p), p.read_text(encoding="utf-8"), {"source": str(p)}))
    chunks = chunks_from_documents(docs, chunk_size=200)
    assert any(c.doc_offset > 0 for c in chunks)  # documents really are split into several chunks
    return NestEngine(default_lm, chunks, NestConfig(max_new_tokens=48, passages=3))


def test_every_span_exact_in_file_reread_from_disk_and_in_response(file_engine):
    questions = [
        "What is Malmö?",
        "Where is Zürich located?",
        "When did the Café Odeon open in Zürich?",
    ]
    n_spans = 0
    non_ascii = False
    for method in ("nest", "ra-nest"):
        for q in questions:
            res = file_engine.generate(q, method=method)
            for s in res.spans:
                with open(s.source, encoding="utf-8") as fh:
                    original = fh.read()
                assert original[s.doc_start : s.doc_end] == s.text
                assert res.text[s.response_start : s.response_end] == s.text
                assert s.n_tokens >= 2
                n_spans += 1
                non_ascii |= any(ord(ch) > 127 for ch in s.text)
    assert n_spans > 0
    assert non_ascii  # spans with non-ASCII characters were among those checked


def test_precomputed_and_on_the_fly_keys_agree(default_lm):
    docs = [Document(n, t) for n, t in TEXT.items()]
    chunks = chunks_from_documents(docs, chunk_size=200)
    batch = NestEngine(default_lm, chunks, precompute_keys=True)
    lazy = NestEngine(default_lm, chunks)
    for i in range(len(chunks)):
        a, b = batch.token_store.get(i), lazy.token_store.get(i)
        assert np.array_equal(a.token_ids, b.token_ids)
        np.testing.assert_allclose(a.keys.astype(np.float32), b.keys.astype(np.float32), rtol=2e-3, atol=5e-2)


def test_bad_input_gives_typed_errors(default_lm, file_engine):
    with pytest.raises(EmptyQuestionError):
        file_engine.generate("   ")
    with pytest.raises(EmptyQuestionError):
        file_engine.generate([])
    with pytest.raises(EmptyCorpusError):
        NestEngine(default_lm, [])
    with pytest.raises(EmptyCorpusError):
        NestEngine.from_documents([Document("a", "  \n\t ")], default_lm)
    with pytest.raises(PromptTooLongError, match="context window"):
        file_engine.generate("word " * 9000)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        file_engine.generate("What connects Malmö?", max_new_tokens=0)
    with pytest.raises(ModelNotFoundError):
        load_model("/nonexistent/model/dir")
    with pytest.raises(ModelNotFoundError):
        load_model("no-such-org/no-such-model-xyz")


STREAM_QUESTIONS = ["What is Malmö?", "When did the Café Odeon open in Zürich?", "What is the Turning Torso?"]


@pytest.mark.parametrize("q", STREAM_QUESTIONS)
def test_streamed_pieces_concatenate_to_the_generated_answer(file_engine, q):
    """Linear streaming leaves the output unchanged: the pieces add up to ``generate``'s text and spans."""
    full = file_engine.generate(q)
    text, spans, result = "", [], None
    for d in file_engine.stream(q):
        text += d.text
        for s in d.spans:  # a span arrives with (or after) its text
            assert s.response_end <= len(text) and text[s.response_start : s.response_end] == s.text
        spans += d.spans
        result = d.result or result
    assert text == full.text == result.text
    assert spans == full.spans == result.spans
    assert result.token_ids == full.token_ids and result.finish_reason == full.finish_reason
    assert result.sentences == full.sentences


def test_tokens_after_a_stop_string_are_not_in_the_answer_or_its_usage(file_engine):
    q = STREAM_QUESTIONS[2]
    full = file_engine.generate(q, max_sentences=None, stop_after_cited_sentence=False)
    words = full.text.split()
    assert len(words) > 6
    stop = " " + words[len(words) // 2]  # inside the answer: often inside a copied run, cut mid-step
    cut_at = full.text.find(stop)
    res = file_engine.generate(q, max_sentences=None, stop_after_cited_sentence=False, stop=[stop])
    assert res.finish_reason == "stop" and res.text == full.text[:cut_at]
    tok = file_engine.lm.tokenizer

    def dec(ids):
        return tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False).lstrip()

    # exactly the tokens with a character in the answer: the last one has, none after it is kept
    assert dec(res.token_ids).startswith(res.text) and len(dec(res.token_ids[:-1])) < len(res.text)
    assert res.token_ids == full.token_ids[: len(res.token_ids)] and len(res.token_ids) < len(full.token_ids)
    assert res.stats.output_tokens == len(res.token_ids)
    assert all(s.response_end <= len(res.text) for s in res.spans + res.runs)
    streamed = list(file_engine.stream(q, max_sentences=None, stop_after_cited_sentence=False, stop=[stop]))
    assert "".join(d.text for d in streamed) == res.text
    assert streamed[-1].result.token_ids == res.token_ids
