"""Context-mode benchmark (issue 13): NEST over the context already in the prompt vs transformers greedy and prompt lookup.

Copy-heavy prompts built from the dev data with the frameworks' own prompt templates:

- ``qa``: a question of squad-dev200 / nq-dev200 with the top-3 passages of its corpus (MiniLM dense retrieval, as a
  vector-store retriever would give them) stuffed by LangChain's ``ChatPromptTemplate`` (the drop-in README's
  prompt, as ``create_stuff_documents_chain`` formats ``{context}``) or LlamaIndex's ``CHAT_TEXT_QA_PROMPT`` (what
  ``VectorStoreIndex.as_query_engine()`` sends in compact mode), alternating;
- ``summary``: "summarize this article" over a WikiText article (its first ~1,800 characters, cut at a sentence),
  LangChain's summarization prompt or LlamaIndex's ``CHAT_TREE_SUMMARIZE_PROMPT``, alternating;
- ``--unseen``: bio-small biographies (knowledge text in the prompt, "Tell me a bio of X"), a style no default
  was chosen on.

Systems, interleaved per prompt (the order rotates), one process, one dtype, everything per request (NEST builds the
token store of the context for every request): ``greedy`` (``model.generate``), ``prompt-lookup`` (``generate`` with
``prompt_lookup_num_tokens`` / ``max_matching_ngram_size``, tuned first on separate dev prompts with ``--tune``),
``nest-lossless`` (``NestConfig.lossless()``: the model's greedy output, copies verified), ``nest-lossless-knn``
(the same without the n-gram proposer, ``ngram_max=0``), ``nest`` (``NestConfig()``, the drop-in defaults) and
``nest-ngram`` (the defaults with n-gram copies placed at every step, ``ngram_gate="always"``).

    python benchmarks/bench_context.py --tune --per-kind 30 --unseen 8 --dtype bfloat16 --out docs/results/context-cpu

``--tune`` first picks prompt lookup's (``prompt_lookup_num_tokens``, ``max_matching_ngram_size``) from a grid and
lossless NEST's ``draft_length`` on ``--tune-per-kind`` dev prompts of each kind that the benchmark does not use.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from nest_integrations import NestConfig, load_model
from nest_integrations.context import generate_over_context
from nest_integrations.eval.metrics import answer_recall_strict, rouge1_f
from nest_integrations.prompts import render_prompt
from nest_integrations.sentences import split_sentences

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SYSTEMS = ("greedy", "prompt-lookup", "nest-lossless", "nest-lossless-knn", "nest", "nest-ngram")
PL_GRID = ((10, 2), (5, 2), (20, 2), (10, 3))  # (prompt_lookup_num_tokens, max_matching_ngram_size)

LC_QA = "Answer the question using the context below.\n\n{context}"
LC_SUMMARY = "Write a concise summary of the following:\n\n{context}"


# ---- prompts --------------------------------------------------------------------------------------------------
def _lc(system: str, context: str, question: str) -> list[dict[str, str]]:
    from langchain_core.prompts import ChatPromptTemplate

    from nest_integrations.langchain.chat_models import to_nest_messages

    tmpl = ChatPromptTemplate.from_messages([("system", system), ("human", "{input}")])
    return to_nest_messages(tmpl.format_messages(context=context, input=question))


def _li(template: Any, context: str, question: str) -> list[dict[str, str]]:
    msgs = template.format_messages(context_str=context, query_str=question)
    return [{"role": str(m.role.value), "content": str(m.content)} for m in msgs]


def qa_prompts(n: int, seed: int, skip: int = 0) -> list[dict[str, Any]]:
    from llama_index.core.prompts.chat_prompts import CHAT_TEXT_QA_PROMPT

    from nest_integrations.retrieval.dense import DenseRetriever

    out: list[dict[str, Any]] = []
    for name in ("squad-dev200", "nq-dev200"):
        corpus = [json.loads(x) for x in open(DATA / name / "corpus.jsonl", encoding="utf-8")]
        qs = [json.loads(x) for x in open(DATA / name / "questions.jsonl", encoding="utf-8")]
        random.Random(seed).shuffle(qs)
        qs = qs[skip : skip + (n + 1) // 2]
        texts = [c["text"] for c in corpus]
        dense = DenseRetriever(texts)
        for i, q in enumerate(qs):
            question = q["question"] if q["question"].endswith("?") else q["question"] + "?"
            context = "\n\n".join(texts[h.index] for h in dense.retrieve(question, 3))
            msgs = _lc(LC_QA, context, question) if i % 2 == 0 else _li(CHAT_TEXT_QA_PROMPT, context, question)
            out.append({"kind": "qa", "set": name, "id": q["id"], "messages": msgs, "answers": q["answers"]})
    return out[:n]


def _article_head(text: str, limit: int = 1800) -> str:
    ends = [e for _, e in split_sentences(text) if e <= limit]
    return text[: ends[-1]] if ends else text[:limit]


def summary_prompts(n: int, seed: int, skip: int = 0) -> list[dict[str, Any]]:
    from llama_index.core.prompts.chat_prompts import CHAT_TREE_SUMMARIZE_PROMPT

    arts = [json.loads(x) for x in open(DATA / "wikitext2-test" / "articles.jsonl", encoding="utf-8")]
    random.Random(seed).shuffle(arts)
    out = []
    for i, a in enumerate(arts[skip : skip + n]):
        body = _article_head(a["text_detok"])
        msgs = (
            _lc(LC_SUMMARY, body, "Summarize this article.")
            if i % 2 == 0
            else _li(CHAT_TREE_SUMMARIZE_PROMPT, body, "Summarize this article.")
        )
        out.append({"kind": "summary", "set": "wikitext2-test", "id": a.get("title", str(i)), "messages": msgs})
    return out


def bio_prompts(n: int) -> list[dict[str, Any]]:
    from llama_index.core.prompts.chat_prompts import CHAT_TEXT_QA_PROMPT

    bios = [json.loads(x) for x in open(DATA / "bio-small" / "bios.jsonl", encoding="utf-8")][:n]
    out = []
    for i, b in enumerate(bios):
        body = _article_head(b["knowledge"])
        msgs = _lc(LC_QA, body, b["prompt"]) if i % 2 == 0 else _li(CHAT_TEXT_QA_PROMPT, body, b["prompt"])
        out.append({"kind": "bio", "set": "bio-small", "id": b["entity"], "messages": msgs})
    return out


# ---- systems --------------------------------------------------------------------------------------------------
class _FirstToken:
    """A transformers streamer that records when the first new token arrives (the first put is the prompt)."""

    def __init__(self) -> None:
        self.calls = 0
        self.t: float | None = None

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2 and self.t is None:
            self.t = time.perf_counter()

    def end(self) -> None:
        pass


def run_generate(lm: Any, msgs: list[dict[str, str]], max_new: int, pl: tuple[int, int] | None) -> dict[str, Any]:
    ids = render_prompt(lm.tokenizer, msgs)
    kwargs: dict[str, Any] = {}
    if pl is not None:
        kwargs = dict(prompt_lookup_num_tokens=pl[0], max_matching_ngram_size=pl[1])
    streamer = _FirstToken()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = lm.model.generate(
            torch.tensor([ids], device=lm.device), max_new_tokens=max_new, do_sample=False, streamer=streamer, **kwargs
        )
    dt = time.perf_counter() - t0
    gen = out[0, len(ids) :].tolist()
    eos = lm.eos_token_ids
    gen = gen[: next((i for i, t in enumerate(gen) if t in eos), len(gen))]
    return {
        "s": dt,
        "ttft": (streamer.t - t0) if streamer.t else dt,
        "ids": gen,
        "text": lm.tokenizer.decode(gen, skip_special_tokens=True),
        "tokens": len(gen),
        "prompt_tokens": len(ids),
    }


def run_nest(lm: Any, msgs: list[dict[str, str]], cfg: NestConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = generate_over_context(lm, msgs, cfg)
    dt = time.perf_counter() - t0
    st = res.stats
    return {
        "s": dt,
        "ttft": st.first_token_s,
        "ids": res.token_ids,
        "text": res.text,
        "tokens": st.output_tokens,
        "copied": st.copied_tokens,
        "spans": list(st.span_lengths),
        "forwards": st.forward_passes,
        "keys_s": st.keys_s,
        "abstained": res.abstained,
    }


def _systems(pl: tuple[int, int], max_new: int, draft: int) -> dict[str, Any]:
    lossless = NestConfig.lossless(max_new_tokens=max_new, draft_length=draft)
    return {
        "greedy": lambda lm, m: run_generate(lm, m, max_new, None),
        "prompt-lookup": lambda lm, m: run_generate(lm, m, max_new, pl),
        "nest-lossless": lambda lm, m: run_nest(lm, m, lossless),
        "nest-lossless-knn": lambda lm, m: run_nest(lm, m, lossless.replace(ngram_max=0)),
        "nest": lambda lm, m: run_nest(lm, m, NestConfig(max_new_tokens=max_new)),
        "nest-ngram": lambda lm, m: run_nest(lm, m, NestConfig(max_new_tokens=max_new, ngram_gate="always")),
        # the defaults with drafts from the text itself as in lossless mode (not in SYSTEMS: a probe)
        "nest-history": lambda lm, m: run_nest(lm, m, NestConfig(max_new_tokens=max_new, history_drafts="on")),
        # key mode: each context chunk encoded alone instead of keys from the prompt's prefill (not in SYSTEMS)
        "nest-encode": lambda lm, m: run_nest(lm, m, NestConfig(max_new_tokens=max_new, context_keys="encode")),
        "nest-lossless-encode": lambda lm, m: run_nest(lm, m, lossless.replace(context_keys="encode")),
    }


def run_prompts(lm: Any, prompts: list[dict[str, Any]], systems: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for i, p in enumerate(prompts):
        order = names[i % len(names) :] + names[: i % len(names)]
        row: dict[str, Any] = {k: p[k] for k in ("kind", "set", "id")}
        if "answers" in p:
            row["answers"] = p["answers"]
        for name in order:
            row[name] = systems[name](lm, p["messages"])
        rows.append(row)
        print(
            f"[{i + 1}/{len(prompts)}] {p['kind']} "
            + " ".join(f"{n}={row[n]['s']:.2f}s" for n in names),
            flush=True,
        )
    return rows


# ---- summary --------------------------------------------------------------------------------------------------
def summarize(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"prompts": len(rows)}
    base = sum(r["greedy"]["s"] for r in rows)
    pl = sum(r["prompt-lookup"]["s"] for r in rows) if "prompt-lookup" in names else None
    for n in names:
        rs = [r[n] for r in rows]
        tot = sum(x["s"] for x in rs)
        toks = sum(x["tokens"] for x in rs)
        d: dict[str, Any] = {
            "s_per_request": tot / len(rs),
            "x_greedy_seconds": tot / base,
            "ttft_s": statistics.mean(x["ttft"] for x in rs),
            "tokens_per_request": toks / len(rs),
        }
        if pl:
            d["x_prompt_lookup_seconds"] = tot / pl
        if "forwards" in rs[0]:
            spans = [s for x in rs for s in x["spans"]]
            d["copied_share"] = sum(x["copied"] for x in rs) / max(toks, 1)
            d["mean_span_tokens"] = statistics.mean(spans) if spans else 0.0
            d["forwards_per_token"] = sum(x["forwards"] for x in rs) / max(toks, 1)
            d["keys_s"] = statistics.mean(x["keys_s"] for x in rs)
            d["abstained"] = sum(bool(x["abstained"]) for x in rs) / len(rs)
        if n != "greedy":
            d["equal_to_greedy"] = sum(r[n]["ids"] == r["greedy"]["ids"] for r in rows) / len(rows)
            d["rouge1_vs_greedy"] = statistics.mean(rouge1_f(r[n]["text"], r["greedy"]["text"]) for r in rows)
        if rows[0].get("answers") is not None:
            d["strict_recall"] = statistics.mean(answer_recall_strict(r[n]["text"], r["answers"]) for r in rows)
            d["strict_recall_by_set"] = {
                s: statistics.mean(answer_recall_strict(r[n]["text"], r["answers"]) for r in rows if r["set"] == s)
                for s in sorted({r["set"] for r in rows})
            }
        d["s_per_token"] = tot / max(toks, 1)
        out[n] = d
    return out


def tune_prompt_lookup(lm: Any, prompts: list[dict[str, Any]], max_new: int) -> dict[str, Any]:
    """Seconds of each prompt-lookup setting on dev prompts (interleaved with greedy); the fastest total wins."""
    totals = {pl: 0.0 for pl in PL_GRID}
    greedy = 0.0
    for i, p in enumerate(prompts):
        greedy += run_generate(lm, p["messages"], max_new, None)["s"]
        grid = list(PL_GRID[i % len(PL_GRID) :] + PL_GRID[: i % len(PL_GRID)])
        for pl in grid:
            totals[pl] += run_generate(lm, p["messages"], max_new, pl)["s"]
        print(f"[tune {i + 1}/{len(prompts)}]", flush=True)
    best = min(totals, key=lambda k: totals[k])
    return {
        "grid": {f"{a},{b}": t / greedy for (a, b), t in totals.items()},
        "best": list(best),
        "prompts": len(prompts),
    }


def tune_lossless_draft(lm: Any, prompts: list[dict[str, Any]], max_new: int, lengths=(8, 16)) -> dict[str, Any]:
    """Seconds of lossless NEST per draft length on dev prompts (relative to greedy); the fastest wins."""
    totals = {n: 0.0 for n in lengths}
    greedy = 0.0
    for i, p in enumerate(prompts):
        greedy += run_generate(lm, p["messages"], max_new, None)["s"]
        for n in list(lengths[i % len(lengths) :] + lengths[: i % len(lengths)]):
            totals[n] += run_nest(lm, p["messages"], NestConfig.lossless(max_new_tokens=max_new, draft_length=n))["s"]
        print(f"[tune lossless {i + 1}/{len(prompts)}]", flush=True)
    best = min(totals, key=lambda k: totals[k])
    return {"grid": {str(n): t / greedy for n, t in totals.items()}, "best": best, "prompts": len(prompts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-kind", type=int, default=30, help="prompts per kind (qa, summary)")
    ap.add_argument("--unseen", type=int, default=10, help="bio-small prompts (unseen style); 0 = none")
    ap.add_argument("--tune", action="store_true", help="tune prompt lookup first on separate dev prompts")
    ap.add_argument("--tune-per-kind", type=int, default=3)
    ap.add_argument("--pl", default="10,2", help="prompt_lookup_num_tokens,max_matching_ngram_size without --tune")
    ap.add_argument("--lossless-draft", type=int, default=16, help="draft_length of lossless NEST without --tune")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="path prefix: writes <out>.json and <out>-rows.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model(dtype=args.dtype)
    names = [s for s in args.systems.split(",") if s]
    if "greedy" not in names:
        names.insert(0, "greedy")
    report: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "dtype": args.dtype,
        "threads": args.threads,
        "max_new_tokens": args.max_new_tokens,
        "torch": torch.__version__,
    }
    # the tuning prompts come after the benchmark's in the same seeded order: disjoint from them
    if args.tune:
        dev = qa_prompts(args.tune_per_kind, args.seed, skip=args.per_kind) + summary_prompts(
            args.tune_per_kind, args.seed, skip=args.per_kind
        )
        report["prompt_lookup_tuning"] = tune_prompt_lookup(lm, dev, args.max_new_tokens)
        pl = tuple(report["prompt_lookup_tuning"]["best"])
        report["lossless_draft_tuning"] = tune_lossless_draft(lm, dev, args.max_new_tokens)
        draft = int(report["lossless_draft_tuning"]["best"])
    else:
        pl = tuple(int(x) for x in args.pl.split(","))
        draft = args.lossless_draft
    report["lossless_draft_length"] = draft
    report["prompt_lookup"] = {"prompt_lookup_num_tokens": pl[0], "max_matching_ngram_size": pl[1]}
    systems = _systems(pl, args.max_new_tokens, draft)  # type: ignore[arg-type]
    rows: list[dict[str, Any]] = []
    kinds = {
        "qa": qa_prompts(args.per_kind, args.seed),
        "summary": summary_prompts(args.per_kind, args.seed),
    }
    if args.unseen:
        kinds["bio (unseen)"] = bio_prompts(args.unseen)
    for kind, prompts in kinds.items():
        kind_rows = run_prompts(lm, prompts, systems, names)
        rows += kind_rows
        report[kind] = summarize(kind_rows, names)
        print(json.dumps({kind: report[kind]}, indent=1), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out + ".json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        with open(args.out + "-rows.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk != "ids"} if isinstance(v, dict) else v) for k, v in r.items()}) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
