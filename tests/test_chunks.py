"""chunks_from_documents: the one splitter-to-chunks path (chunk texts and offsets pinned on the demo corpus)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nest_integrations.chunks import chunks_from_documents
from nest_integrations.demo import load_demo_documents

BEFORE = json.loads((Path(__file__).parent / "data" / "demo_chunks_before.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("config", sorted(BEFORE["configs"]))
def test_default_path_gives_the_chunks_it_gave_before(config: str) -> None:
    """Existing datastores and results stay valid: same chunk ids, texts and offsets as before the refactor."""
    size, overlap = (int(x) for x in config.split("/"))
    docs = load_demo_documents()
    texts = {d.doc_id: d.text for d in docs}
    chunks = chunks_from_documents(docs, chunk_size=size, chunk_overlap=overlap)
    got: dict[str, list[list[int]]] = {}
    for c in chunks:
        assert c.chunk_id == f"{c.doc_id}#{len(got.get(c.doc_id, []))}"
        assert texts[c.doc_id][c.doc_offset : c.doc_offset + len(c.text)] == c.text
        assert dict(c.metadata) == dict(next(d for d in docs if d.doc_id == c.doc_id).metadata)
        got.setdefault(c.doc_id, []).append([c.doc_offset, len(c.text)])
    assert got == BEFORE["configs"][config]
