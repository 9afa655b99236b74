"""Report outputs of the evaluation harness: JSON file, markdown table, quality-vs-speed plot."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["QUALITY_METRIC", "write_json", "markdown_table", "write_markdown", "write_plot"]

#: the quality metric each task is plotted and ranked by
QUALITY_METRIC = {"qa": "answer_recall_strict", "completion": "rouge1", "bio": "supported_share"}

_COLUMNS = {
    "qa": [
        ("answer_recall_strict", "strict recall", "{:.3f}"),
        ("answer_recall", "recall", "{:.3f}"),
        ("exact_match", "EM", "{:.3f}"),
        ("f1", "F1", "{:.3f}"),
        ("rouge1", "ROUGE-1", "{:.3f}"),
    ],
    "completion": [("rouge1", "ROUGE-1", "{:.3f}")],
    "bio": [("supported_share", "supported share", "{:.3f}")],
}
_COMMON = [
    ("mean_output_tokens", "out tok", "{:.1f}"),
    ("attribution_ratio", "copied", "{:.0%}"),
    ("mean_span_tokens", "span tok", "{:.1f}"),
    ("citation_precision", "cit. prec.", "{:.2f}"),
    ("attribution_exactness", "exact", "{:.0%}"),
    ("tokens_per_s", "tok/s", "{:.1f}"),
    ("speedup_vs_base", "× base tok/s", "{:.2f}"),
    ("sec_per_question", "s/q mean", "{:.2f}"),
    ("sec_per_question_p50", "p50", "{:.2f}"),
    ("sec_per_question_p90", "p90", "{:.2f}"),
    ("time_to_first_token_s", "TTFT s", "{:.2f}"),
    ("forwards_per_token", "fwd/tok", "{:.2f}"),
]


def _atomic_write(path: str | Path, data: bytes) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is an ordinary file
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(report: dict[str, Any], path: str | Path) -> None:
    """Write the report as indented UTF-8 JSON (atomically)."""
    _atomic_write(path, json.dumps(report, indent=1, ensure_ascii=False).encode("utf-8"))


_FAITHFULNESS = [
    ("copied", "copied sent.", "{:.0%}"),
    ("grounded", "grounded sent.", "{:.0%}"),
    ("unsupported", "unsupported sent.", "{:.0%}"),
    ("spliced_sentence_rate", "spliced sent.", "{:.1%}"),
    ("word_boundary_violations", "word-boundary violations", "{:d}"),
    ("copied_runs", "copied runs", "{:d}"),
    ("mean_citation_words", "cit. words", "{:.1f}"),
    ("min_citation_words_seen", "min cit. words", "{:d}"),
    ("abstention_rate", "abstained", "{:.0%}"),
    ("length_limited_share", "length-limited", "{:.0%}"),
]


def faithfulness_table(report: dict[str, Any]) -> str:
    """NEST.md §10 figures per system (support labels, splicing, word boundaries, abstention, length limits)."""
    lines = [
        "| system | " + " | ".join(c[1] for c in _FAITHFULNESS) + " |",
        "|---|" + "---:|" * len(_FAITHFULNESS),
    ]
    for name, s in report["systems"].items():
        if "copied_runs" not in s:
            continue
        flat = {**s, **(s.get("support_shares") or {})}
        lines.append(f"| {name} | " + " | ".join(_fmt(flat.get(k), spec) for k, _, spec in _FAITHFULNESS) + " |")
    return "\n".join(lines)


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "–"
    return spec.format(value)


def markdown_table(report: dict[str, Any]) -> str:
    """The per-system table of a report, as GitHub markdown."""
    cols = _COLUMNS[report["task"]] + _COMMON
    lines = [
        "| system | " + " | ".join(c[1] for c in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for name, s in report["systems"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(s.get(k), spec) for k, _, spec in cols) + " |")
    table = "\n".join(lines)
    if any("copied_runs" in s for s in report["systems"].values()):
        table += "\n\n" + faithfulness_table(report)
    return table


def write_markdown(report: dict[str, Any], path: str | Path, command: str | None = None) -> None:
    """A markdown page: what was run, on what, the table and retrieval recall."""
    m = report["model"]
    mach = report["machine"]
    parts = [f"# nest eval — {report['task']}", ""]
    if command:
        parts += ["```", command, "```", ""]
    parts += [
        f"- model: `{m['id']}` ({m['dtype']}), {report['data']['items']} items, "
        f"{report['data']['documents']} documents" + (f", {report['data']['chunks']} chunks" if report["data"]["chunks"] else ""),
        f"- machine: {mach['processor']}, {mach['cpu_count']} CPUs, {mach['torch_threads']} torch threads, "
        f"device {mach['device']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
    ]
    if report.get("retrieval"):
        parts.append("- passage retrieval: " + ", ".join(f"{k} {v:.3f}" for k, v in report["retrieval"].items()))
    if report.get("sweep"):
        parts.append(f"- sweep: {report['sweep']['key']} over {report['sweep']['values']}")
    parts += ["", markdown_table(report), ""]
    _atomic_write(path, "\n".join(parts).encode("utf-8"))


def write_plot(report: dict[str, Any], path: str | Path) -> None:
    """Quality (the task's metric) against speed (tokens/s relative to base) per system, as an image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = QUALITY_METRIC[report["task"]]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for name, s in report["systems"].items():
        x = s.get("speedup_vs_base")
        if x is None:
            x = s["tokens_per_s"]
        y = s.get(metric) or 0.0
        ax.scatter([x], [y], s=40)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    has_base = any(s.get("speedup_vs_base") is not None for s in report["systems"].values())
    ax.set_xlabel("tokens/s relative to base" if has_base else "tokens/s")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"nest eval ({report['task']}, {report['data']['items']} items, {report['model']['id']})", fontsize=9)
    ax.grid(alpha=0.3)
    if has_base:
        ax.set_xscale("log")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    plt.close(fig)
