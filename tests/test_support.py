"""Sentence support labels on hand-built answers and chunks (NEST.md §10)."""

from __future__ import annotations

from nest_integrations.support import label_sentences

CHUNK = ("tesla#0", "Nikola Tesla died on 7 January 1943 in room 3327 of the New Yorker Hotel in New York City.")
OTHER = ("curie#0", "Marie Curie was born in Warsaw on 7 November 1867.")


def _cite(text: str, piece: str, chunk_id: str) -> dict:
    s = text.index(piece)
    return {"response_start": s, "response_end": s + len(piece), "chunk_id": chunk_id}


def test_a_generated_date_absent_from_the_source_is_unsupported() -> None:
    text = "He died on 18 December 1943 in New York City."
    labels = label_sentences(text, [_cite(text, " in New York City.", "tesla#0")], [CHUNK, OTHER])
    assert [x.support for x in labels] == ["unsupported"]


def test_copied_sentence_names_its_chunk() -> None:
    text = "Tesla died on 7 January 1943 in room 3327 of the New Yorker Hotel."
    piece = " died on 7 January 1943 in room 3327 of the New Yorker Hotel."
    labels = label_sentences(text, [_cite(text, piece, "tesla#0")], [OTHER, CHUNK])
    assert labels[0].support == "copied" and labels[0].chunk_ids == ["tesla#0"]


def test_copied_share_needs_one_chunk_and_no_foreign_numbers() -> None:
    # covered by two chunks half each: not copied (and the mixed facts are not grounded in one chunk)
    text = "Curie was born in Warsaw on 7 January 1943 in New York City."
    cites = [_cite(text, " was born in Warsaw on 7", "curie#0"), _cite(text, " January 1943 in New York City.", "tesla#0")]
    assert label_sentences(text, cites, [CHUNK, OTHER])[0].support == "unsupported"
    # a copied phrase with a generated number that is not in its chunk is not "copied"
    text2 = "Tesla died on 7 January 1943 in room 9999 of the New Yorker Hotel in New York City."
    cite2 = [_cite(text2, " died on 7 January 1943 in room", "tesla#0"), _cite(text2, " of the New Yorker Hotel in New York City.", "tesla#0")]
    assert label_sentences(text2, cite2, [CHUNK])[0].support == "unsupported"


def test_grounded_needs_every_name_and_number_and_half_the_content_words() -> None:
    grounded = "Tesla died in New York City in 1943."
    lab = label_sentences(grounded, [], [OTHER, CHUNK])[0]
    assert lab.support == "grounded" and lab.chunk_ids == ["tesla#0"]
    assert label_sentences("Tesla died in Paris in 1943.", [], [OTHER, CHUNK])[0].support == "unsupported"
    assert label_sentences("it was a very sad day for everybody.", [], [CHUNK])[0].support == "unsupported"
    # names from two chunks: no single chunk supports the sentence
    assert label_sentences("Marie Curie met Tesla in Warsaw.", [], [OTHER, CHUNK])[0].support == "unsupported"


def test_one_label_per_sentence_with_exact_ranges() -> None:
    text = "Tesla died in New York City in 1943. He liked pigeons.\nCurie was born in Warsaw."
    labels = label_sentences(text, [], [CHUNK, OTHER])
    assert [text[x.response_start : x.response_end] for x in labels] == [
        "Tesla died in New York City in 1943.",
        "He liked pigeons.",
        "Curie was born in Warsaw.",
    ]
    assert [x.support for x in labels] == ["grounded", "unsupported", "grounded"]
    assert labels[2].chunk_ids == ["curie#0"]
