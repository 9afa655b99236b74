"""The evaluation harness: hand-made aggregation cases, and end-to-end runs on the default model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nest_integrations.chunks import Document
from nest_integrations.demo import load_demo_documents
from nest_integrations.errors import ConfigError
from nest_integrations.eval import SYSTEMS
from nest_integrations.eval.data import EvalItem
from nest_integrations.eval.harness import _first_sentence_range, make_system, parse_sweep, run_eval, summarize
from nest_integrations.eval.report import markdown_table, write_markdown, write_plot

# ---- structure, no model ------------------------------------------------------------------------


def test_parse_sweep() -> None:
    assert parse_sweep("gamma=5e-4, 5e-3,0.5") == ("gamma", [5e-4, 5e-3, 0.5])
    assert parse_sweep("span_stop=chunk_end,sentence_end") == ("span_stop", ["chunk_end", "sentence_end"])
    with pytest.raises(ConfigError, match="unknown config field"):
        parse_sweep("gama=1")
    with pytest.raises(ConfigError):
        parse_sweep("gamma=-1")  # out of range, rejected by NestConfig
    with pytest.raises(ConfigError, match="key=v1"):
        parse_sweep("gamma")


def test_make_system_names() -> None:
    assert [make_system(n).name for n in SYSTEMS] == list(SYSTEMS)
    with pytest.raises(ConfigError, match="unknown system"):
        make_system("gpt")


def test_first_sentence_range() -> None:
    text = "  The Broncos won 24–10. Then it rained.\nNext"
    s, e = _first_sentence_range(text)
    assert text[s:e] == "The Broncos won 24–10."
    s, e = _first_sentence_range("A line\nwith 3.5 and more")
    assert (s, e) == (0, 6)
    assert _first_sentence_range("no end") == (0, 6)


def _rec(system: str, output_tokens: int, total_s: float, spans: list[dict], **metrics: float) -> dict:
    return {
        "system": system,
        "output_tokens": output_tokens,
        "total_s": total_s,
        "first_token_s": total_s / 4,
        "forward_passes": output_tokens,
        "spans": spans,
        "metrics": {
            "answer_recall": 1.0,
            "answer_recall_strict": 0.0,
            "exact_match": 0.0,
            "f1": 0.5,
            "rouge1": 0.5,
            **metrics,
        },
    }


def test_summarize_hand_made() -> None:
    span = {"n_tokens": 6}
    records = [
        _rec("base", 10, 1.0, [], spans_from_gold=0, spans_exact=0),
        _rec("base", 30, 3.0, [], spans_from_gold=0, spans_exact=0),
        _rec("nest", 20, 0.5, [span, span], spans_from_gold=1, spans_exact=2),
        _rec("nest", 20, 0.5, [span], spans_from_gold=1, spans_exact=0),
    ]
    s = summarize("qa", records, ["base", "nest"])
    assert s["base"]["tokens_per_s"] == pytest.approx(10.0)
    assert s["nest"]["tokens_per_s"] == pytest.approx(40.0)
    assert s["nest"]["speedup_vs_base"] == pytest.approx(4.0)
    assert s["base"]["speedup_vs_base"] == pytest.approx(1.0)
    assert s["nest"]["sec_per_question_vs_base"] == pytest.approx(0.25)
    assert s["nest"]["attribution_ratio"] == pytest.approx(18 / 40)
    assert s["nest"]["mean_span_tokens"] == pytest.approx(6.0)
    assert s["nest"]["citation_precision"] == pytest.approx(2 / 3)
    assert s["nest"]["attribution_exactness"] == pytest.approx(2 / 3)
    assert s["base"]["attribution_exactness"] == 1.0 and s["base"]["citation_precision"] is None
    assert s["base"]["sec_per_question_p50"] == pytest.approx(2.0)
    assert s["base"]["answer_recall"] == 1.0 and s["base"]["f1"] == 0.5


def test_run_eval_rejects_bad_arguments(tiny_lm) -> None:
    item = EvalItem("1", "q", answers=["a"])
    with pytest.raises(ConfigError, match="unknown system"):
        run_eval(tiny_lm, "qa", [item], [Document("d", "text")], systems=["base", "gpt"])
    with pytest.raises(ConfigError, match="needs a corpus"):
        run_eval(tiny_lm, "qa", [item], None, systems=["base"])
    with pytest.raises(ConfigError, match="no items"):
        run_eval(tiny_lm, "qa", [], [Document("d", "text")])


# ---- end to end on the default model -------------------------------------------------------------

# Questions written for the demo corpus shipped in the package (its answers occur in those articles).
DEMO_QUESTIONS = [
    EvalItem("q1", "Which team won Super Bowl 50?", answers=["Denver Broncos"], gold_doc_ids=["Super_Bowl_50"]),
    EvalItem("q2", "When was Nikola Tesla born?", answers=["10 July 1856"], gold_doc_ids=["Nikola_Tesla"]),
    EvalItem(
        "q3",
        "What thermodynamic cycle is used to analyze steam engines?",
        answers=["Rankine cycle", "the Rankine cycle"],
        gold_doc_ids=["Steam_engine"],
    ),
]


@pytest.fixture(scope="module")
def demo_docs_from_disk() -> dict[str, str]:
    """The demo corpus re-read from the package file, independently of the engine."""
    path = Path(__file__).resolve().parents[2] / "nest_integrations" / "data" / "demo_corpus.jsonl"
    return {r["id"]: r["text"] for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


@pytest.fixture(scope="module")
def qa_report(default_lm) -> dict:
    return run_eval(
        default_lm,
        "qa",
        DEMO_QUESTIONS,
        load_demo_documents(),
        systems=list(SYSTEMS),
        max_new_tokens=24,
        progress=False,
    )


def test_qa_report_shape(qa_report: dict) -> None:
    for key in ("config", "machine", "versions", "systems", "records", "retrieval", "model"):
        assert key in qa_report
    assert list(qa_report["systems"]) == list(SYSTEMS)
    required = {
        "answer_recall", "answer_recall_strict", "exact_match", "f1", "rouge1", "mean_output_tokens",
        "attribution_ratio", "mean_span_tokens", "citation_precision", "attribution_exactness", "tokens_per_s",
        "sec_per_question", "sec_per_question_p50", "sec_per_question_p90", "time_to_first_token_s",
        "forwards_per_token", "speedup_vs_base",
    }  # fmt: skip
    for name, s in qa_report["systems"].items():
        assert required <= set(s), name
        for k in ("answer_recall", "answer_recall_strict", "exact_match", "f1", "rouge1", "attribution_ratio"):
            assert 0.0 <= s[k] <= 1.0, (name, k)
    assert len(qa_report["records"]) == len(DEMO_QUESTIONS) * len(SYSTEMS)
    for r in qa_report["records"]:
        assert {"id", "system", "output", "spans"} <= set(r)
    assert set(qa_report["retrieval"]) == {"recall@1", "recall@3", "recall@5"}
    json.dumps(qa_report)  # JSON-ready


def test_qa_attribution_exact_against_the_file(qa_report: dict, demo_docs_from_disk: dict[str, str]) -> None:
    n_spans = 0
    for r in qa_report["records"]:
        for s in r["spans"]:
            n_spans += 1
            assert demo_docs_from_disk[s["doc_id"]][s["doc_start"] : s["doc_end"]] == s["text"]
            assert r["output"][s["response_start"] : s["response_end"]] == s["text"]
    assert n_spans > 0
    for name, s in qa_report["systems"].items():
        assert s["attribution_exactness"] == 1.0, name
    # passage-dump output is one copied span (its whole output), and needs no LM forward
    dump = qa_report["systems"]["passage-dump"]
    assert dump["attribution_ratio"] == 1.0 and dump["forwards_per_token"] == 0.0
    # systems that never copy report no spans
    for name in ("base", "ra", "ra-pld", "knnlm"):
        assert qa_report["systems"][name]["attribution_ratio"] == 0.0, name


def test_qa_speed_columns(qa_report: dict) -> None:
    sysm = qa_report["systems"]
    assert sysm["base"]["speedup_vs_base"] == pytest.approx(1.0)
    # transformers generate: one forward per generated token (one more when it produced EOS)
    base_recs = [r for r in qa_report["records"] if r["system"] == "base"]
    for r in base_recs:
        assert r["forward_passes"] - r["output_tokens"] in (0, 1), r
    # kNN-LM decodes token by token: the same count
    for r in (r for r in qa_report["records"] if r["system"] == "knnlm"):
        assert r["forward_passes"] - r["output_tokens"] in (0, 1), r
    for s in sysm.values():
        assert s["time_to_first_token_s"] <= s["sec_per_question"] + 1e-9


def test_prompt_lookup_is_lossless(qa_report: dict) -> None:
    """ra-pld decodes the RA prompt with prompt lookup; greedy verification must give RA's output."""
    ra = {r["id"]: r["output"] for r in qa_report["records"] if r["system"] == "ra"}
    pld = {r["id"]: r["output"] for r in qa_report["records"] if r["system"] == "ra-pld"}
    assert ra == pld


def test_reports_written(qa_report: dict, tmp_path: Path) -> None:
    write_markdown(qa_report, tmp_path / "r.md", "nest eval --limit 3")
    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "nest eval --limit 3" in md
    for name in SYSTEMS:
        assert f"| {name} |" in md
    main_table, faith_table = markdown_table(qa_report).split("\n\n")
    assert main_table.count("\n") == len(SYSTEMS) + 1
    assert "spliced sent." in faith_table and "word-boundary violations" in faith_table
    write_plot(qa_report, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_completion_mode_leaves_own_article_out(default_lm) -> None:
    docs = load_demo_documents()
    warsaw = next(d for d in docs if d.doc_id == "Warsaw")
    words = warsaw.text.split()
    item = EvalItem("Warsaw", " ".join(words[:24]), reference=" ".join(words[24:40]), exclude_doc_ids=["Warsaw"])
    report = run_eval(default_lm, "completion", [item], docs, systems=["base", "nest", "passage-dump"], progress=False)
    assert report["task"] == "completion"
    for r in report["records"]:
        assert "Warsaw" not in r["passage_doc_ids"], r["system"]
        assert all(s["doc_id"] != "Warsaw" for s in r["spans"]), r["system"]
        assert 0.0 <= r["metrics"]["rouge1"] <= 1.0
    # passage-dump gives as many words as the reference
    dump = next(r for r in report["records"] if r["system"] == "passage-dump")
    assert len(dump["output"].split()) == 16
    # the budget is the reference's length in tokens
    base = next(r for r in report["records"] if r["system"] == "base")
    n_ref = len(default_lm.tokenizer(" " + item.reference, add_special_tokens=False)["input_ids"])
    assert base["output_tokens"] <= n_ref


def test_bio_mode_uses_the_knowledge_text(default_lm) -> None:
    tesla = next(d for d in load_demo_documents() if d.doc_id == "Nikola_Tesla")
    item = EvalItem("bio:tesla", "Tell me a bio of Nikola Tesla.", knowledge=tesla.text)
    report = run_eval(default_lm, "bio", [item], None, systems=["nest", "passage-dump"], max_new_tokens=32, progress=False)
    assert report["task"] == "bio"
    for r in report["records"]:
        for s in r["spans"]:
            assert s["doc_id"] == "bio:tesla"
            assert tesla.text[s["doc_start"] : s["doc_end"]] == s["text"]
    dump = report["systems"]["passage-dump"]
    assert dump["supported_share"] == 1.0  # copied verbatim: every word supported
    assert 0.0 <= report["systems"]["nest"]["supported_share"] <= 1.0
