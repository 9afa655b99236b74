"""Context mode's framework-free parts (issue 13): segments, chunks at message offsets, mapping to documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from nest_integrations.context import (
    ContextSegment,
    context_chunks,
    find_context_segments,
    find_question,
    map_to_documents,
    prompt_question,
)
from nest_integrations.errors import ConfigError
from nest_integrations.results import CopiedSpan

DOC_A = "Ada Lovelace was born in London in 1815. She was the daughter of Lord Byron. " * 3
DOC_B = "Nikola Tesla was born in Smiljan. He worked on alternating current systems. " * 3
SYSTEM = "Answer with the context.\n\n" + DOC_A + "\n\n" + DOC_B


def _msgs(question: str = "Where was Tesla born?") -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def test_long_messages_are_context_and_the_short_question_is_not() -> None:
    segs = find_context_segments(_msgs(), min_chars=100)
    assert segs == [ContextSegment(0, 0, len(SYSTEM))]
    assert find_context_segments(_msgs("x" * 150), min_chars=100)[-1].message_index == 1
    assert find_context_segments(_msgs(), min_chars=10_000) == []
    with pytest.raises(ConfigError, match="min_chars"):
        find_context_segments(_msgs(), min_chars=0)


def test_a_block_between_rules_of_dashes_is_the_context_and_its_query_line_the_question() -> None:
    # LlamaIndex's QA template, as it reaches an OpenAI-compatible server: the instructions around the block are
    # not sources, and the long system prompt is not either
    rule = "-" * 21
    user = f"Context information is below.\n{rule}\n{DOC_A}\n{rule}\nGiven the context information, answer the query.\nQuery: Where was Tesla born?\nAnswer: "
    msgs = [{"role": "system", "content": "You are an expert Q&A system. " * 10}, {"role": "user", "content": user}]
    segs = find_context_segments(msgs, min_chars=100)
    assert [(s.message_index, user[s.start : s.end]) for s in segs] == [(1, DOC_A + "\n")]
    assert find_question(msgs) == "Where was Tesla born?"
    assert find_question(_msgs("Who was her father?")) == "Who was her father?"
    assert prompt_question("ctx\n\nQuestion: who won?\nAnswer:") == "who won?"


def test_named_documents_are_found_in_order() -> None:
    segs = find_context_segments(_msgs(), documents=[DOC_A, DOC_B, "not in the prompt"])
    assert [(s.message_index, SYSTEM[s.start : s.end]) for s in segs] == [(0, DOC_A), (0, DOC_B)]


def test_chunks_sit_at_their_offsets_in_the_message() -> None:
    msgs = _msgs()
    chunks = context_chunks(msgs, find_context_segments(msgs, documents=[DOC_A, DOC_B]), chunk_size=120)
    assert len(chunks) > 2 and len({c.chunk_id for c in chunks}) == len(chunks)
    for c in chunks:
        assert c.doc_id == "message-0"
        assert SYSTEM[c.doc_offset : c.doc_offset + len(c.text)] == c.text


def _span(text: str, start: int) -> CopiedSpan:
    return CopiedSpan(text=text, doc_id="message-0", chunk_id="message-0#0", source=None, doc_start=start,
                      doc_end=start + len(text), response_start=0, response_end=len(text), n_tokens=5)  # fmt: skip


def test_spans_map_to_documents_and_verified_file_offsets(tmp_path: Path) -> None:
    file_text = "Header line.\n" + DOC_B + "Footer."
    (tmp_path / "tesla.txt").write_text(file_text, encoding="utf-8")
    cited = "Nikola Tesla was born in Smiljan."
    start = SYSTEM.index(DOC_B)
    outside = _span("Answer with the context.", 0)
    docs = [(DOC_A, {"source": "elsewhere.txt"}), (DOC_B, {"source": str(tmp_path / "tesla.txt"), "start_index": 13})]
    got = map_to_documents([_span(cited, start), outside], _msgs(), docs)
    assert len(got) == 1  # the instruction text is in no document
    c = got[0]
    assert (c.document, c.start, c.end) == (1, 0, len(cited))
    assert file_text[c.source_start : c.source_end] == cited
    # a start_index the file does not confirm gives no file offsets (never a wrong one)
    wrong = map_to_documents([_span(cited, start)], _msgs(), [docs[0], (DOC_B, {**docs[1][1], "start_index": 3})])
    assert wrong[0].source_start is None and wrong[0].start == 0


def test_a_summary_request_is_copied_and_cited_without_abstention_or_sentence_limit(default_lm) -> None:
    # "Summarize this article." is a text task (answer_selection.is_text_task): the question-answering
    # policies (abstention on the question's words, the answer proposer, max_sentences=3) do not apply
    from nest_integrations import NestConfig
    from nest_integrations.context import generate_over_context

    article = (
        "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
        "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. Locally "
        "nicknamed La dame de fer, it was constructed as the centerpiece of the 1889 World's Fair. Although "
        "initially criticised by some of France's leading artists and intellectuals for its design, it has since "
        "become a global cultural icon of France and one of the most recognisable structures in the world. The "
        "tower received 5,889,000 visitors in 2022. It is 330 metres tall, about the same height as an 81-storey "
        "building, and the tallest structure in Paris."
    )
    msgs = [
        {"role": "system", "content": "Write a concise summary of the following:\n\n" + article},
        {"role": "user", "content": "Summarize this article."},
    ]
    res = generate_over_context(default_lm, msgs, NestConfig(max_new_tokens=96))
    assert not res.abstained
    assert res.finish_reason != "sentence"
    head = len("Write a concise summary of the following:\n\n")
    assert res.spans and all(article[s.doc_start - head :].startswith(s.text) for s in res.spans)
