"""Faithful answers on the real default model (NEST.md §10): span rules, labels, stopping, abstention.

Every figure is checked against the documents re-read from disk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nest_integrations import Document, NestConfig, NestEngine
from nest_integrations.chunks import chunks_from_documents
from nest_integrations.sentences import count_words, on_word_boundary, split_sentences

BIOS = {
    "tesla.txt": (
        "Nikola Tesla was a Serbian-American inventor, electrical engineer and futurist. He was born on 10 July "
        "1856 in Smiljan, in the Austrian Empire, the fourth of five children of Milutin Tesla, an Eastern "
        "Orthodox priest, and Đuka Mandić. In 1884 he emigrated to the United States, where he worked for "
        "Thomas Edison for a short time.\n\nTesla developed the alternating-current induction motor in 1887 and "
        "sold its patents to George Westinghouse. He died on 7 January 1943 in room 3327 of the New Yorker "
        "Hotel in New York City, aged 86."
    ),
    "curie.txt": (
        "Marie Skłodowska-Curie was a Polish and naturalised-French physicist and chemist. She was born on 7 "
        "November 1867 in Warsaw, the youngest of five children of Bronisława and Władysław Skłodowski, both "
        "of whom were teachers. She studied at the Flying University in Warsaw and moved to Paris in 1891.\n\n"
        "In 1903 she shared the Nobel Prize in Physics with Pierre Curie and Henri Becquerel, and in 1911 she "
        "won the Nobel Prize in Chemistry for discovering polonium and radium. She died on 4 July 1934 at the "
        "Sancellemoz sanatorium in Passy, France."
    ),
    "lovelace.txt": (
        "Ada Lovelace was an English mathematician and writer, known for her work on Charles Babbage's "
        "proposed mechanical general-purpose computer, the Analytical Engine. She was born on 10 December 1815 "
        "in London, the only legitimate child of the poet Lord Byron and Anne Isabella Milbanke.\n\nIn 1843 "
        "she published a translation of an article by Luigi Menabrea, with notes that include an algorithm to "
        "compute Bernoulli numbers. She died of uterine cancer on 27 November 1852, aged 36."
    ),
    "darwin.txt": (
        "Charles Robert Darwin was an English naturalist, geologist and biologist. He was born on 12 February "
        "1809 in Shrewsbury, Shropshire, the fifth of six children of the physician Robert Darwin.\n\nHis "
        "five-year voyage on HMS Beagle, from 1831 to 1836, established him as a geologist. In 1859 he "
        "published On the Origin of Species. He died at Down House on 19 April 1882."
    ),
}
QUESTIONS = [
    "When was Nikola Tesla born?",
    "Where did Nikola Tesla die?",
    "Who were the parents of Marie Curie?",
    "When did Marie Curie win the Nobel Prize in Chemistry?",
    "Who was the father of Ada Lovelace?",
    "When was Charles Darwin born?",
    "Tell me about the voyage of Charles Darwin.",
    "What did Ada Lovelace publish in 1843?",
]


@pytest.fixture(scope="module")
def bio_files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bios")
    for name, text in BIOS.items():
        (d / name).write_text(text, encoding="utf-8")
    return d


def _docs(folder: Path) -> list[Document]:
    return [
        Document(p.name, p.read_text(encoding="utf-8"), {"source": str(p)}) for p in sorted(folder.glob("*.txt"))
    ]


@pytest.fixture(scope="module")
def bio_engine(default_lm, bio_files) -> NestEngine:
    # small chunks: every document spans several chunks with non-zero offsets
    return NestEngine(default_lm, chunks_from_documents(_docs(bio_files), chunk_size=220), NestConfig(max_new_tokens=64))


@pytest.fixture(scope="module")
def bio_results(bio_engine):
    return [bio_engine.generate(q) for q in QUESTIONS]


def test_every_copied_run_is_on_word_boundaries_of_source_and_response(bio_results, bio_files) -> None:
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in bio_files.glob("*.txt")}
    runs = [(r, run) for r in bio_results for run in r.runs]
    assert len(runs) >= len(QUESTIONS) // 2, "the default model should copy on most of these questions"
    for r, run in runs:
        doc = on_disk[run.doc_id]
        assert doc[run.doc_start : run.doc_end] == run.text == r.text[run.response_start : run.response_end]
        assert on_word_boundary(doc, run.doc_start, run.doc_end), (run.text, doc[run.doc_start - 5 : run.doc_end + 5])
        assert on_word_boundary(r.text, run.response_start, run.response_end), (run.text, r.text)


def test_no_sentence_holds_copies_from_two_chunks(bio_results) -> None:
    for r in bio_results:
        for s, e in split_sentences(r.text):
            chunks = {run.chunk_id for run in r.runs if run.response_start < e and run.response_end > s}
            assert len(chunks) <= 1, (r.text[s:e], chunks)


def test_citations_are_long_enough_and_exact_on_disk(bio_results, bio_engine, bio_files) -> None:
    minimum = bio_engine.config.min_citation_words
    n = 0
    for r in bio_results:
        for sp in r.spans:
            n += 1
            assert count_words(sp.text) >= minimum
            assert Path(sp.source).read_text(encoding="utf-8")[sp.doc_start : sp.doc_end] == sp.text
            assert r.text[sp.response_start : sp.response_end] == sp.text
        assert r.stats.copied_tokens == sum(sp.n_tokens for sp in r.spans)
    assert n > 0


def test_every_sentence_is_labelled_and_labels_name_retrieved_chunks(bio_results) -> None:
    answered = [r for r in bio_results if not r.abstained]
    assert len(answered) == len(QUESTIONS), [r.text for r in bio_results if r.abstained]  # all are answerable
    labels = [x.support for r in answered for x in r.sentences]
    assert "copied" in labels, labels  # the default model copies whole sentences on these questions
    for r in answered:
        assert r.sentences, r.text
        assert [(x.response_start, x.response_end) for x in r.sentences] == split_sentences(r.text)
        retrieved = {p.chunk_id for p in r.passages}
        for x in r.sentences:
            assert x.support in ("copied", "grounded", "unsupported")
            assert (x.support == "unsupported") == (not x.chunk_ids)
            assert set(x.chunk_ids) <= retrieved


def test_answers_stop_by_themselves(bio_results) -> None:
    # with the stop policy, answers end at EOS or at a sentence end, not at max_new_tokens
    reasons = [r.finish_reason for r in bio_results]
    assert reasons.count("length") <= 1, [r.text for r in bio_results if r.finish_reason == "length"]
    assert set(reasons) <= {"eos", "sentence", "length"}, reasons
    assert "sentence" in reasons, reasons  # the stop policy ends at least one answer
    for r in bio_results:
        assert r.truncated == (r.finish_reason == "length")
        if r.finish_reason != "length":  # a complete answer ends with a complete sentence
            assert r.text.rstrip()[-1] in ".!?\"')", (r.finish_reason, r.text)


def test_a_truncated_answer_is_marked(bio_engine) -> None:
    r = bio_engine.generate("Tell me about the voyage of Charles Darwin.", max_new_tokens=3)
    assert r.finish_reason == "length" and r.truncated and r.to_dict()["truncated"] is True
    assert len(r.token_ids) == 3


def test_paper_behaviour_is_still_available(bio_engine) -> None:
    """The rules are options: with them off the loop is the paper's (copies may cut words or splice)."""
    cfg = dict(word_boundaries=False, sentence_source="any", min_citation_words=1, abstain="off",
               stop_after_cited_sentence=False, max_sentences=None)
    r = bio_engine.generate(QUESTIONS[0], **cfg)
    assert r.finish_reason in ("eos", "length") and r.text.strip()
    assert not r.abstained and r.finish_reason != "sentence"  # no abstention, no sentence stop policy
    assert all(count_words(sp.text) >= 1 for sp in r.spans) and r.runs  # it copies, citing one-word runs too


def test_unanswerable_question_abstains_and_answerable_does_not(bio_engine) -> None:
    q = "Who was the father of Ada Lovelace?"
    answered = bio_engine.generate(q)
    assert not answered.abstained
    r = bio_engine.generate(q, exclude_doc_ids=["lovelace.txt"])
    assert r.abstained and r.finish_reason == "abstained" and r.spans == [] and r.runs == []
    assert r.text == bio_engine.config.abstain_message
    assert r.relevance is not None and r.relevance < bio_engine.config.abstain_threshold <= answered.relevance


def test_abstention_streams_the_same_message(bio_engine) -> None:
    deltas = list(bio_engine.stream("Who was the father of Ada Lovelace?", exclude_doc_ids=["lovelace.txt"]))
    assert "".join(d.text for d in deltas) == bio_engine.config.abstain_message
    assert deltas[-1].result is not None and deltas[-1].result.abstained


def test_follow_up_question_retrieves_with_the_conversation(bio_engine) -> None:
    msgs = [
        {"role": "user", "content": "Where was Ada Lovelace born?"},
        {"role": "assistant", "content": "She was born in London."},
        {"role": "user", "content": "Who was her father?"},
    ]
    r = bio_engine.generate(msgs)
    assert r.passages[0].doc_id == "lovelace.txt"
    # the last message alone does not name Lovelace: the old behaviour retrieves something else first
    alone = bio_engine.retrieve("Who was her father?", 1)
    assert bio_engine.chunks[alone[0][0]].doc_id != "lovelace.txt"
