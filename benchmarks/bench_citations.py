"""Side by side (issue 6): NestQueryEngine vs LlamaIndex CitationQueryEngine, same default model, same questions.

Both answer over the squad-dev200 paragraphs (one LlamaIndex Document each, offline MiniLM embeddings,
the same VectorStoreIndex). CitationQueryEngine's LLM is the same model decoding greedily through the
model's chat template (NestLLM with ``method="base"``: no retrieval, no copying).

Per engine: share of answers carrying any citation; share of citations whose cited source contains the
cited words verbatim (NEST: the copied span at its offsets in its document; CitationQueryEngine: the
sentence carrying the ``[n]`` marker, marker removed, inside source ``n``); strict answer recall; latency.

    python benchmarks/bench_citations.py --limit 50 --out docs/results/citations.json
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

import torch


def _norm(text: str) -> str:
    return " ".join(text.split())


def _sentences_with_markers(answer: str) -> list[tuple[str, list[int]]]:
    """(sentence without markers, cited source numbers) for each sentence that has ``[n]`` markers."""
    out = []
    for sent in re.split(r"(?<=[.!?])\s+|\n+", answer):
        nums = [int(n) for n in re.findall(r"\[(\d+)\]", sent)]
        if nums:
            out.append((_norm(re.sub(r"\s*\[\d+\]", "", sent)).rstrip(".!?"), nums))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "squad-dev200"))
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.query_engine import CitationQueryEngine

    from nest_integrations import NestConfig, load_model
    from nest_integrations.eval.metrics import answer_recall_strict
    from nest_integrations.llama_index import MiniLMEmbedding, NestLLM, NestQueryEngine

    lm = load_model(dtype=args.dtype)
    data = Path(args.data)
    corpus = [json.loads(line) for line in open(data / "corpus.jsonl", encoding="utf-8")]
    texts = {r["id"]: r["text"] for r in corpus}
    qs = [json.loads(line) for line in open(data / "questions.jsonl", encoding="utf-8")][: args.limit]
    docs = [Document(text=r["text"], id_=r["id"], metadata={"title": r["title"]}) for r in corpus]
    embed = MiniLMEmbedding()
    index = VectorStoreIndex.from_documents(docs, embed_model=embed)

    nest = NestQueryEngine.from_index(
        index, model=lm, documents=docs, nest_config=NestConfig(max_new_tokens=args.max_new_tokens, passages=3)
    )
    base_llm = NestLLM(engine=nest.engine, nest_config=NestConfig(method="base", max_new_tokens=args.max_new_tokens))
    cite = CitationQueryEngine.from_args(index, llm=base_llm, similarity_top_k=3)
    # warm-up
    nest.query(qs[0]["question"])
    cite.query(qs[0]["question"])

    rows = {"nest": [], "citation_query_engine": []}
    for q in qs:
        for name in ("nest", "citation_query_engine"):  # interleaved per question
            t = time.perf_counter()
            r = (nest if name == "nest" else cite).query(q["question"])
            dt = time.perf_counter() - t
            answer = str(r)
            if name == "nest":
                cits = [(n.node.text, n.node.metadata["doc_id"], n.node.start_char_idx, n.node.end_char_idx) for n in r.source_nodes]
                ok = [texts[d][s:e] == t_ for t_, d, s, e in cits]
            else:
                sources = [n.node.get_content() for n in r.source_nodes]  # "Source n:\n<text>"
                cits = _sentences_with_markers(answer)
                ok = []
                for sent, nums in cits:
                    for n in nums:
                        src = _norm(sources[n - 1]) if 0 < n <= len(sources) else ""
                        ok.append(bool(sent) and sent in src)
            rows[name].append(
                {"id": q["id"], "answer": answer, "n_citations": len(ok), "verbatim": sum(ok), "seconds": dt,
                 "strict": answer_recall_strict(answer, q["answers"])}
            )  # fmt: skip

    summary = {}
    for name, rs in rows.items():
        n_cit = sum(r["n_citations"] for r in rs)
        summary[name] = {
            "answers_with_citation": sum(1 for r in rs if r["n_citations"]) / len(rs),
            "citations_verbatim_in_source": (sum(r["verbatim"] for r in rs) / n_cit) if n_cit else None,
            "citations": n_cit,
            "answer_recall_strict": sum(r["strict"] for r in rs) / len(rs),
            "sec_per_question_mean": statistics.fmean(r["seconds"] for r in rs),
            "sec_per_question_p50": statistics.median(r["seconds"] for r in rs),
        }
    out = {
        "command": f"python benchmarks/bench_citations.py --limit {args.limit} --dtype {args.dtype} "
        f"--max-new-tokens {args.max_new_tokens}",
        "questions": len(qs),
        "summary": summary,
        "records": rows,
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
