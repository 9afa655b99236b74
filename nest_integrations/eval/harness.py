"""The evaluation harness: the paper's systems and the speed peers on one model and one dataset.

Systems (all share one :class:`~nest_integrations.engine.NestEngine`, so prompts, passages and
hyperparameters are identical where they should be):

* ``base``: the LM alone, transformers ``generate`` (greedy, KV cache) — the speed baseline.
* ``ra``: the top-``ra_passages`` chunks in the prompt, transformers ``generate``.
* ``knnlm``: kNN-LM, fixed λ (``knn_lambda``), token by token, through the NEST loop.
* ``nest`` / ``ra-nest``: NEST without / with the passages in the prompt.
* ``ra-pld``: the RA prompt decoded with transformers' prompt lookup decoding
  (``prompt_lookup_num_tokens``) — the speed peer a user would pick instead of NEST.
* ``passage-dump``: no LM; the first sentence of the top-1 chunk (the first ``reference`` words in
  completion mode). A control: how much of a metric copying alone earns.

Systems run interleaved per item (the order rotates from item to item) after one warm-up run each,
in one process, so speed ratios against ``base`` are measured under the same conditions.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from nest_integrations.chunks import Document
from nest_integrations.concurrency import model_gate
from nest_integrations.config import NestConfig
from nest_integrations.engine import NestEngine
from nest_integrations.errors import ConfigError
from nest_integrations.eval import SYSTEMS
from nest_integrations.eval import metrics as M
from nest_integrations.eval.data import EvalItem, Mode
from nest_integrations.models import LoadedModel
from nest_integrations.results import CopiedSpan
from nest_integrations.sentences import count_words, on_word_boundary, split_sentences

__all__ = [
    "SYSTEMS",
    "DEFAULT_SYSTEMS",
    "SystemOutput",
    "EvalSystem",
    "EngineSystem",
    "GenerateSystem",
    "PassageDumpSystem",
    "make_system",
    "parse_sweep",
    "run_eval",
    "summarize",
]

DEFAULT_SYSTEMS = SYSTEMS
PLD_TOKENS = 10  # transformers' documented example value for prompt_lookup_num_tokens


@dataclass
class SystemOutput:
    """What one system produced for one item (times in seconds, measured around the call)."""

    text: str
    spans: list[CopiedSpan]
    output_tokens: int
    first_token_s: float
    forward_passes: int
    finish_reason: str
    passage_doc_ids: list[str] = field(default_factory=list)
    total_s: float = 0.0
    sentences: list[dict[str, Any]] | None = None
    runs: list[CopiedSpan] = field(default_factory=list)
    abstained: bool = False
    relevance: float | None = None


class EvalSystem(Protocol):
    """A system under evaluation: ``run`` answers one item with the shared engine."""

    name: str

    def run(self, engine: NestEngine, item: EvalItem, raw: bool, max_new_tokens: int) -> SystemOutput: ...


@dataclass
class EngineSystem:
    """A method of the NEST engine (``knnlm``, ``nest``, ``ra-nest``, or ``base``/``ra`` through the loop)."""

    name: str
    method: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def run(self, engine: NestEngine, item: EvalItem, raw: bool, max_new_tokens: int) -> SystemOutput:
        res = engine.generate(
            item.prompt,
            raw=raw,
            exclude_doc_ids=item.exclude_doc_ids,
            method=self.method,
            max_new_tokens=max_new_tokens,
            **self.overrides,
        )
        return SystemOutput(
            text=res.text,
            spans=res.spans,
            output_tokens=res.stats.output_tokens,
            first_token_s=res.stats.first_token_s,
            forward_passes=res.stats.forward_passes,
            finish_reason=res.finish_reason,
            passage_doc_ids=[p.doc_id for p in res.passages],
            sentences=[x.to_dict() for x in res.sentences],
            runs=res.runs,
            abstained=res.abstained,
            relevance=res.relevance,
        )


class _FirstTokenTimer:
    """A transformers streamer that only notes when the first generated token arrives."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.calls = 0
        self.first_token_s = 0.0

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2:  # the first call carries the prompt
            self.first_token_s = time.perf_counter() - self.t0

    def end(self) -> None:
        pass


class _ForwardCounter:
    """Counts forward calls of a module while active (a forward hook)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.count = 0

    def __enter__(self) -> _ForwardCounter:
        self.handle = self.module.register_forward_hook(self._hook)
        return self

    def _hook(self, *_: Any) -> None:
        self.count += 1

    def __exit__(self, *_: Any) -> None:
        self.handle.remove()


@dataclass
class GenerateSystem:
    """transformers ``generate`` (greedy) on the engine's prompt: ``base``, ``ra``, or ``ra-pld``.

    ``method`` is the engine method whose prompt is used (``base``: the question alone; ``ra``: with
    the passages); ``prompt_lookup_num_tokens`` turns on prompt lookup decoding.
    """

    name: str
    method: str
    prompt_lookup_num_tokens: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def run(self, engine: NestEngine, item: EvalItem, raw: bool, max_new_tokens: int) -> SystemOutput:
        lm = engine.lm
        t0 = time.perf_counter()
        prompt_ids, hits, _ = engine.prepare(
            item.prompt,
            raw=raw,
            exclude_doc_ids=item.exclude_doc_ids,
            method=self.method,
            max_new_tokens=max_new_tokens,
            **self.overrides,
        )
        timer = _FirstTokenTimer(t0)
        eos = sorted(lm.eos_token_ids)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=eos,
            pad_token_id=eos[0] if eos else None,
            streamer=timer,
        )
        if self.prompt_lookup_num_tokens:
            kwargs["prompt_lookup_num_tokens"] = self.prompt_lookup_num_tokens
        device = next(lm.model.parameters()).device
        ids = torch.tensor([prompt_ids], device=device)
        # the model's gate: this decoding takes its turn like the engine's requests do
        with model_gate(lm.model), _ForwardCounter(lm.model) as counter, torch.inference_mode():
            out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
        gen = out[0, len(prompt_ids) :].tolist()
        finish = "length"
        for j, t in enumerate(gen):
            if t in lm.eos_token_ids:
                gen, finish = gen[:j], "eos"
                break
        text = lm.tokenizer.decode(gen, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return SystemOutput(
            text=text.rstrip("\ufffd"),
            spans=[],
            output_tokens=len(gen),
            first_token_s=timer.first_token_s or (time.perf_counter() - t0),
            forward_passes=counter.count,
            finish_reason=finish,
            passage_doc_ids=[engine.chunks[i].doc_id for i, _ in hits],
        )


def _first_sentence_range(text: str) -> tuple[int, int]:
    """The first sentence of ``text`` by the shared splitter (:func:`nest_integrations.sentences.split_sentences`)."""
    sents = split_sentences(text)
    return sents[0] if sents else (len(text), len(text))


def _first_words_range(text: str, n: int) -> tuple[int, int]:
    words = list(re.finditer(r"\S+", text))
    if not words:
        return 0, 0
    return words[0].start(), words[min(n, len(words)) - 1].end()


@dataclass
class PassageDumpSystem:
    """Control without an LM: output = first sentence of the top-1 retrieved chunk.

    In completion mode (``words`` set per item) the output is the chunk's first ``words`` words.
    The output is one copied span, so its attribution is exact by construction.
    """

    name: str = "passage-dump"

    def run(self, engine: NestEngine, item: EvalItem, raw: bool, max_new_tokens: int) -> SystemOutput:
        t0 = time.perf_counter()
        hits = engine.retrieve(item.prompt, 1, exclude_doc_ids=item.exclude_doc_ids)
        if not hits:
            return SystemOutput("", [], 0, time.perf_counter() - t0, 0, "empty")
        chunk = engine.chunks[hits[0][0]]
        if item.reference is not None:
            s, e = _first_words_range(chunk.text, len(item.reference.split()))
        else:
            s, e = _first_sentence_range(chunk.text)
        text = chunk.text[s:e]
        n_tokens = len(engine.lm.tokenizer(text, add_special_tokens=False)["input_ids"])
        span = CopiedSpan(
            text=text,
            doc_id=chunk.doc_id,
            chunk_id=chunk.chunk_id,
            source=None if chunk.metadata.get("source") is None else str(chunk.metadata["source"]),
            doc_start=chunk.doc_offset + s,
            doc_end=chunk.doc_offset + e,
            response_start=0,
            response_end=len(text),
            n_tokens=n_tokens,
        )
        elapsed = time.perf_counter() - t0
        return SystemOutput(text, [span] if text else [], n_tokens, elapsed, 0, "stop", [chunk.doc_id])


def make_system(name: str, overrides: dict[str, Any] | None = None, label: str | None = None) -> EvalSystem:
    """The system called ``name`` (one of :data:`SYSTEMS`), with config overrides for sweeps."""
    ov = dict(overrides or {})
    label = label or name
    if name == "base":
        return GenerateSystem(label, "base", overrides=ov)
    if name == "ra":
        return GenerateSystem(label, "ra", overrides=ov)
    if name == "ra-pld":
        return GenerateSystem(label, "ra", prompt_lookup_num_tokens=PLD_TOKENS, overrides=ov)
    if name in ("knnlm", "nest", "ra-nest"):
        return EngineSystem(label, name, ov)
    if name == "passage-dump":
        return PassageDumpSystem(label)
    raise ConfigError(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """``"gamma=5e-4,5e-3"`` → ``("gamma", [0.0005, 0.005])``, each value validated by :class:`NestConfig`."""
    if "=" not in text:
        raise ConfigError(f"--sweep expects key=v1,v2,... (got {text!r})")
    key, values = text.split("=", 1)
    key = key.strip()
    if key not in NestConfig.model_fields:
        raise ConfigError(f"--sweep: unknown config field {key!r}")
    out: list[Any] = []
    for raw in values.split(","):
        raw = raw.strip()
        if not raw:
            continue
        cfg = NestConfig(**{key: raw})  # pydantic parses "0.5", "true", "span" ...
        out.append(getattr(cfg, key))
    if not out:
        raise ConfigError(f"--sweep {key}: no values")
    return key, out


# ---- metrics -----------------------------------------------------------------------------------


def _record_metrics(mode: Mode, item: EvalItem, out: SystemOutput, documents: dict[str, str]) -> dict[str, Any]:
    m: dict[str, Any] = {}
    if mode == "qa":
        # an abstention scores 0 (NEST.md §10), whatever its message says
        m["answer_recall"] = 0.0 if out.abstained else M.answer_recall(out.text, item.answers)
        m["answer_recall_strict"] = 0.0 if out.abstained else M.answer_recall_strict(out.text, item.answers)
        m["exact_match"] = M.exact_match(out.text, item.answers)
        m["f1"] = M.token_f1(out.text, item.answers)
        m["rouge1"] = max((M.rouge1_f(out.text, a) for a in item.answers), default=0.0)
        gold = set(item.gold_doc_ids)
        m["spans_from_gold"] = sum(1 for s in out.spans if s.doc_id in gold)
    elif mode == "completion":
        m["rouge1"] = M.rouge1_f(out.text, item.reference or "")
    else:
        ranges = [(s.response_start, s.response_end) for s in out.spans]
        m["supported_share"] = M.supported_share(out.text, item.knowledge or "", 4, ranges)
    report = M.attribution_report(out.spans, documents)
    m["spans_exact"] = report.exact
    m.update(faithfulness_metrics(out, documents))
    return m


def faithfulness_metrics(out: SystemOutput, documents: dict[str, str]) -> dict[str, Any]:
    """NEST.md §10 counts for one output, over EVERY copied run (one token or more, before the citation
    filter): spliced sentences, word-boundary violations in the source document and in the response,
    support labels, citation lengths in words, abstention and length-limited endings."""
    text = out.text
    sents = split_sentences(text)
    runs = out.runs or out.spans
    spliced = 0
    for st, en in sents:
        chunks = {r.chunk_id for r in runs if r.response_start < en and r.response_end > st}
        spliced += len(chunks) > 1
    violations = 0
    for r in runs:
        doc = documents.get(r.doc_id)
        bad_doc = doc is not None and not on_word_boundary(doc, r.doc_start, r.doc_end)
        bad_resp = not on_word_boundary(text, r.response_start, r.response_end)
        violations += bad_doc or bad_resp
    labels = {"copied": 0, "grounded": 0, "unsupported": 0}
    for x in out.sentences or []:
        labels[x["support"]] += 1
    return {
        "n_sentences": len(sents) if not out.abstained else 0,
        "spliced_sentences": spliced if not out.abstained else 0,
        "n_runs": len(runs),
        "boundary_violations": violations,
        "labels": labels if out.sentences is not None and not out.abstained else None,
        "citation_words": [count_words(sp.text) for sp in out.spans],
        "first_support": (out.sentences[0]["support"] if out.sentences and not out.abstained else None),
        "abstained": bool(out.abstained),
        "length_limited": out.finish_reason == "length",
        "relevance": out.relevance,
    }


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def summarize(mode: Mode, records: list[dict[str, Any]], system_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-system aggregate metrics from the per-item records (see the module docs for the fields)."""
    by_sys: dict[str, list[dict[str, Any]]] = {n: [] for n in system_names}
    for r in records:
        by_sys[r["system"]].append(r)
    out: dict[str, dict[str, Any]] = {}
    for name, rs in by_sys.items():
        if not rs:
            continue
        n_tokens = sum(r["output_tokens"] for r in rs)
        copied = sum(s["n_tokens"] for r in rs for s in r["spans"])
        n_spans = sum(len(r["spans"]) for r in rs)
        total_s = sum(r["total_s"] for r in rs)
        lat = M.summarize_latencies([r["total_s"] for r in rs])
        s: dict[str, Any] = {"n": len(rs)}
        keys = {
            "qa": ("answer_recall", "answer_recall_strict", "exact_match", "f1", "rouge1"),
            "completion": ("rouge1",),
            "bio": ("supported_share",),
        }[mode]
        for k in keys:
            s[k] = _mean([r["metrics"][k] for r in rs])
        s.update(
            mean_output_tokens=n_tokens / len(rs),
            attribution_ratio=copied / n_tokens if n_tokens else 0.0,
            n_spans=n_spans,
            mean_span_tokens=copied / n_spans if n_spans else 0.0,
            citation_precision=(
                sum(r["metrics"]["spans_from_gold"] for r in rs) / n_spans if mode == "qa" and n_spans else None
            ),
            attribution_exactness=(sum(r["metrics"]["spans_exact"] for r in rs) / n_spans if n_spans else 1.0),
            tokens_per_s=n_tokens / total_s if total_s > 0 else 0.0,
            sec_per_question=lat["mean"],
            sec_per_question_p50=lat["p50"],
            sec_per_question_p90=lat["p90"],
            time_to_first_token_s=_mean([r["first_token_s"] for r in rs]),
            forwards_per_token=sum(r["forward_passes"] for r in rs) / n_tokens if n_tokens else None,
        )
        s.update(_faithfulness_summary(rs))
        out[name] = s
    base = out.get("base")
    for s in out.values():
        if base and base["tokens_per_s"] > 0:
            s["speedup_vs_base"] = s["tokens_per_s"] / base["tokens_per_s"]
            s["sec_per_question_vs_base"] = s["sec_per_question"] / base["sec_per_question"]
        else:
            s["speedup_vs_base"] = None
            s["sec_per_question_vs_base"] = None
    return out


def _faithfulness_summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate :func:`faithfulness_metrics` over one system's records."""
    ms = [r["metrics"] for r in rs if "n_runs" in r["metrics"]]
    if not ms:
        return {}
    n_sent = sum(m["n_sentences"] for m in ms)
    labelled = [m["labels"] for m in ms if m["labels"] is not None]
    n_lab = sum(sum(lab.values()) for lab in labelled)
    words = [w for m in ms for w in m["citation_words"]]
    answered = [m for m in ms if not m["abstained"]]
    return {
        "spliced_sentence_rate": sum(m["spliced_sentences"] for m in ms) / n_sent if n_sent else 0.0,
        "copied_runs": sum(m["n_runs"] for m in ms),
        "word_boundary_violations": sum(m["boundary_violations"] for m in ms),
        "support_shares": (
            {k: sum(lab[k] for lab in labelled) / n_lab for k in ("copied", "grounded", "unsupported")}
            if n_lab
            else None
        ),
        "mean_citation_words": sum(words) / len(words) if words else None,
        "min_citation_words_seen": min(words) if words else None,
        "abstention_rate": sum(m["abstained"] for m in ms) / len(ms),
        "length_limited_share": sum(m["length_limited"] for m in answered) / len(answered) if answered else 0.0,
    }


def _retrieval_recall(engine: NestEngine, items: Sequence[EvalItem], ks: Sequence[int]) -> dict[str, float] | None:
    gold_items = [it for it in items if it.gold_doc_ids]
    if not gold_items:
        return None
    kmax = max(ks)
    hits = [
        [engine.chunks[i].doc_id for i, _ in engine.retrieve(it.prompt, kmax, exclude_doc_ids=it.exclude_doc_ids)]
        for it in gold_items
    ]
    return {
        f"recall@{k}": sum(1 for it, h in zip(gold_items, hits, strict=True) if set(h[:k]) & set(it.gold_doc_ids))
        / len(gold_items)
        for k in ks
    }


def cached_store_path(
    lm: LoadedModel,
    corpus: Sequence[Document],
    key_layer: int,
    chunk_size: int,
    cache_dir: Path,
    key_format: str = "float16",
) -> Path:
    """Where ``evaluate(cache_dir=...)`` keeps the datastore of ``corpus`` (keyed by corpus, chunk size, model,
    dtype, key layer; another key format than float16 sits beside it, suffixed with the format's name)."""
    h = hashlib.sha256()
    for d in corpus:
        h.update(d.doc_id.encode() + b"\0" + d.text.encode() + b"\1")
    h.update(f"{chunk_size}|{lm.model_id}|{lm.dtype}|{key_layer}".encode())
    name = f"store-{h.hexdigest()[:16]}"
    return Path(cache_dir) / (name if key_format == "float16" else f"{name}-{key_format}")


def _cached_engine(
    lm: LoadedModel,
    corpus: Sequence[Document],
    cfg: NestConfig,
    chunk_size: int,
    cache_dir: Path,
    key_format: str = "float16",
) -> NestEngine:
    """An engine over a datastore of ``corpus`` saved under ``cache_dir`` (built and saved on first use).

    The float16 datastore is built with keys streamed to disk (an interrupted build resumes); another
    ``key_format`` is converted from it once and kept beside it.
    """
    from nest_integrations.chunks import chunks_from_documents
    from nest_integrations.datastore import Datastore, build_on_disk
    from nest_integrations.store import KeyFormat

    fmt = KeyFormat.parse(key_format)
    path = cached_store_path(lm, corpus, cfg.key_layer, chunk_size, cache_dir)
    if (path / "manifest.json").exists():
        store = Datastore.load(path, lm)
    else:
        chunks = chunks_from_documents(list(corpus), chunk_size=chunk_size)
        store = build_on_disk(path, lm, chunks, documents=corpus, key_layer=cfg.key_layer, key_format="float16")
    if fmt.name != "float16":
        converted = cached_store_path(lm, corpus, cfg.key_layer, chunk_size, cache_dir, fmt.name)
        if not (converted / "manifest.json").exists():
            store.save(converted, key_format=fmt)
        store = Datastore.load(converted, lm)
    return store.engine(cfg)


def _open_records(path: Path, cfg: NestConfig, max_new_tokens: int | None):
    """Records already in ``path`` and the file opened for appending; the first line holds the config."""
    header = {"config": cfg.model_dump(mode="json"), "max_new_tokens": max_new_tokens}
    records: list[dict[str, Any]] = []
    if path.exists() and path.stat().st_size:
        lines = path.read_text(encoding="utf-8").splitlines()
        first = json.loads(lines[0])
        if isinstance(first, dict) and isinstance(first.get("config"), dict):
            # a file written by an older version may hold removed config fields: compare what they load as
            try:
                first = dict(first, config=NestConfig(**first["config"]).model_dump(mode="json"))
            except ConfigError:
                pass  # not a config of this version: the comparison below refuses it
        if first != header:
            raise ConfigError(f"{path} holds records of another configuration; use a new --records file (or delete it)")
        for line in lines[1:]:
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a record cut by a crash: it is run again
        sink = path.open("w", encoding="utf-8")
        sink.write(json.dumps(header) + "\n")
        for r in records:
            sink.write(json.dumps(r, ensure_ascii=False) + "\n")
        sink.flush()
        return records, sink
    path.parent.mkdir(parents=True, exist_ok=True)
    sink = path.open("w", encoding="utf-8")
    sink.write(json.dumps(header) + "\n")
    sink.flush()
    return records, sink


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("nest-integrations", "torch", "transformers", "faiss-cpu", "sentence-transformers", "bm25s"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _machine(lm: LoadedModel) -> dict[str, Any]:
    import os

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(next(lm.model.parameters()).device),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def run_eval(
    lm: LoadedModel,
    mode: Mode,
    items: Sequence[EvalItem],
    corpus: Sequence[Document] | None,
    *,
    systems: Sequence[str] = DEFAULT_SYSTEMS,
    config: NestConfig | None = None,
    sweep: tuple[str, list[Any]] | None = None,
    max_new_tokens: int | None = None,
    chunk_size: int = 800,
    precompute_keys: bool = True,
    progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    cache_dir: str | Path | None = None,
    records_path: str | Path | None = None,
    key_format: str = "float16",
) -> dict[str, Any]:
    """Run ``systems`` on ``items`` and return the report (a JSON-ready dict).

    Args:
        lm: the model every system uses.
        mode: ``qa`` | ``completion`` | ``bio`` (see :mod:`nest_integrations.eval.data`).
        items: the prompts; corpus: the datastore documents (``None`` in bio mode, where each item's
            knowledge text is its corpus).
        systems: names from :data:`SYSTEMS`; with ``sweep=(key, values)`` every system except
            ``base`` and ``passage-dump`` runs once per value, named ``system[key=value]``.
        max_new_tokens: per item; default 64 (QA), 128 (bio), the reference's token count (completion).
        precompute_keys: build all token keys before timing (indexing time is reported separately).
        cache_dir: keep the corpus's datastore (keys, passage embeddings) here, keyed by corpus, chunk
            size, model and key layer, and reuse it on the next run (no re-encoding).
        key_format: how the datastore's keys are stored (``float16``, ``int8``, ``pq<M>``; needs ``cache_dir``,
            where the converted datastore is kept).
        records_path: a JSON Lines file of per-item records; records already in it (same config) are
            not run again, new ones are appended as they finish — an interrupted run resumes.
    """
    from tqdm.auto import tqdm

    if not items:
        raise ConfigError("no items to evaluate")
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise ConfigError(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    if mode != "bio" and not corpus:
        raise ConfigError(f"{mode} mode needs a corpus")
    from nest_integrations.store import KeyFormat

    if KeyFormat.parse(key_format).name != "float16" and (cache_dir is None or mode == "bio"):
        raise ConfigError(f"key_format={key_format!r} needs a cache_dir (`--cache-dir`) and a shared corpus")
    cfg = config or NestConfig()
    runners: list[EvalSystem] = []
    for name in systems:
        if sweep and name not in ("base", "passage-dump"):
            key, values = sweep
            runners.extend(make_system(name, {key: v}, f"{name}[{key}={v}]") for v in values)
        else:
            runners.append(make_system(name))
    names = [r.name for r in runners]
    raw = mode == "completion"

    def budget(item: EvalItem) -> int:
        if max_new_tokens is not None:
            return max_new_tokens
        if mode == "completion" and item.reference:
            return len(lm.tokenizer(" " + item.reference, add_special_tokens=False)["input_ids"])
        return 128 if mode == "bio" else 64

    t0 = time.perf_counter()
    shared: NestEngine | None = None
    documents: dict[str, str] = {}
    if mode != "bio":
        assert corpus is not None
        if cache_dir is not None:
            shared = _cached_engine(lm, corpus, cfg, chunk_size, Path(cache_dir), key_format)
        else:
            shared = NestEngine.from_documents(corpus, lm, cfg, chunk_size=chunk_size, precompute_keys=precompute_keys)
        shared.retrieve(items[0].prompt, 1)  # builds the passage index
        documents = {d.doc_id: d.text for d in corpus}
    index_s = time.perf_counter() - t0

    def engine_for(item: EvalItem) -> tuple[NestEngine, dict[str, str]]:
        if shared is not None:
            return shared, documents
        doc = Document(item.id, item.knowledge or "", {"title": item.id})
        eng = NestEngine.from_documents([doc], lm, cfg, chunk_size=chunk_size, precompute_keys=True)
        eng.retrieve(item.prompt, 1)
        return eng, {doc.doc_id: doc.text}

    # warm-up: one run of every system, discarded
    eng0, _ = engine_for(items[0])
    for r in runners:
        r.run(eng0, items[0], raw, min(8, budget(items[0])))

    records: list[dict[str, Any]] = []
    done: set[tuple[str, str]] = set()
    sink = None
    if records_path is not None:
        records, sink = _open_records(Path(records_path), cfg, max_new_tokens)
        wanted = {(it.id, r.name) for it in items for r in runners}
        records = [r for r in records if (r["id"], r["system"]) in wanted]
        done = {(r["id"], r["system"]) for r in records}
    bar = tqdm(total=len(items) * len(runners), desc="nest eval", unit="run", disable=not progress)
    bar.update(len(done))
    for n, item in enumerate(items):
        order = runners[n % len(runners) :] + runners[: n % len(runners)]
        order = [r for r in order if (item.id, r.name) not in done]
        if not order:
            continue
        eng, docs = engine_for(item)
        for r in order:
            t = time.perf_counter()
            out = r.run(eng, item, raw, budget(item))
            out.total_s = time.perf_counter() - t
            rec = {
                "id": item.id,
                "system": r.name,
                "output": out.text,
                "spans": [s.to_dict() for s in out.spans],
                "output_tokens": out.output_tokens,
                "total_s": out.total_s,
                "first_token_s": out.first_token_s,
                "forward_passes": out.forward_passes,
                "finish_reason": out.finish_reason,
                "passage_doc_ids": out.passage_doc_ids,
                "metrics": _record_metrics(mode, item, out, docs),
            }
            records.append(rec)
            if sink is not None:
                sink.write(json.dumps(rec, ensure_ascii=False) + "\n")
                sink.flush()
            if on_record:
                on_record(rec)
            bar.update(1)
    bar.close()
    if sink is not None:
        sink.close()
    records.sort(key=lambda r: names.index(r["system"]))  # stable: item order kept
    report: dict[str, Any] = {
        "task": mode,
        "config": cfg.model_dump(mode="json"),
        "sweep": {"key": sweep[0], "values": sweep[1]} if sweep else None,
        "model": {"id": lm.model_id, "path": str(lm.path), "dtype": str(lm.dtype).replace("torch.", "")},
        "machine": _machine(lm),
        "versions": _versions(),
        "data": {
            "items": len(items),
            "documents": len(corpus) if corpus is not None else len(items),
            "chunks": len(shared.chunks) if shared is not None else None,
            "key_format": KeyFormat.parse(key_format).name,
        },
        "index_s": index_s,
        "retrieval": (_retrieval_recall(shared, items, (1, 3, 5)) if shared is not None and mode == "qa" else None),
        "systems": summarize(mode, records, names),
        "records": records,
    }
    return report
