"""HTML attribution view: structure, escaping, and every highlighted span equal to its source on disk."""

from __future__ import annotations

import html
import json
from html.parser import HTMLParser
from pathlib import Path

from nest_integrations.attribution import CopiedSpan
from nest_integrations.engine import GenerationStats, NestResult
from nest_integrations.html import render_fragment, render_html
from nest_integrations.support import SentenceSupport
from tests.cli.helpers import DEMO_FILE, needs_model, run_cli
from tests.test_render_support import COPIED, DOC, GROUNDED, UNSUPPORTED, abstained_result, labelled_result


class _Marks(HTMLParser):
    """Collects <mark class="span"> (answer) and <mark class="cited"> (sources) texts and attributes,
    the answer's sentence wrappers (<span class="sentence …">), the <sup class="label …"> after them,
    and every element's classes and text (for badges and notices)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict]] = []
        self.spans: list[tuple[dict, str]] = []
        self.cited: list[str] = []
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.sentences: list[tuple[dict, str]] = []
        self.labels: list[tuple[str, str]] = []
        self.by_class: dict[str, list[str]] = {}
        self._open: list[tuple[str, dict, list[str]]] = []  # every open element, for the text of classes

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        if tag == "mark":
            self.stack.append((a.get("class", ""), a, []))
        self._open.append((tag, a, []))

    def handle_data(self, data):
        for frame in self.stack:
            frame[2].append(data)
        for frame in self._open:
            frame[2].append(data)

    def handle_endtag(self, tag):
        if tag == "mark" and self.stack:
            cls, attrs, text = self.stack.pop()
            if cls == "span":
                self.spans.append((attrs, "".join(text)))
            elif cls == "cited":
                self.cited.append("".join(text))
        while self._open:
            t, attrs, text = self._open.pop()
            joined = "".join(text)
            for c in (attrs.get("class") or "").split():
                self.by_class.setdefault(c, []).append(joined)
            classes = (attrs.get("class") or "").split()
            if t == "span" and "sentence" in classes:
                self.sentences.append((attrs, joined))
            if t == "sup" and "label" in classes:
                self.labels.append(([c for c in classes if c != "label"][0], joined))
            if t == tag:
                break


def _result(text: str, spans: list[CopiedSpan]) -> NestResult:
    return NestResult(text=text, spans=spans, finish_reason="eos", token_ids=[], stats=GenerationStats(), passages=[])


def test_structure_and_escaping() -> None:
    doc = "Intro. The <b>Broncos</b> & friends won 24–10.\nMore text."
    s0 = doc.index("The <b>")
    span_text = doc[s0 : s0 + len("The <b>Broncos</b> & friends won")]
    answer = "Answer: " + span_text + "."
    span = CopiedSpan(span_text, "d1", "d1#0", "notes.txt", s0, s0 + len(span_text), 8, 8 + len(span_text), 9)
    page = render_html(_result(answer, [span]), {"d1": doc}, question="Who won <then>?")
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert "<b>Broncos" not in page  # user text is escaped, never markup
    p = _Marks()
    p.feed(page)
    assert [t for _, t in p.spans] == [span_text] and p.cited == [span_text]
    assert {"span-1", "src-1"} <= p.ids and "#src-1" in p.hrefs and "#span-1" in p.hrefs
    assert "Who won &lt;then&gt;?" in page and "line 1, chars 7–39" in page


def test_support_marks_truncated_badge_and_spans() -> None:
    """Each sentence carries its label; unsupported ones a visible label; truncation a badge."""
    result = labelled_result("length")
    page = render_html(result, {"sb50": DOC}, question="Who won?")
    p = _Marks()
    p.feed(page)
    got = [(a["data-support"], a.get("data-chunk-id"), t.strip()) for a, t in p.sentences]
    assert got == [  # the copied sentence holds its span and the span's [1] marker
        ("copied", "sb50#0", COPIED + "[1]."), ("grounded", "sb50#0", GROUNDED), ("unsupported", None, UNSUPPORTED),
    ]  # fmt: skip
    classes = [a["class"].split() for a, _ in p.sentences]
    assert classes == [["sentence", "copied"], ["sentence", "grounded"], ["sentence", "unsupported"]]
    unsupported = p.sentences[2][0]
    assert "unsupported" in unsupported["title"]
    assert p.labels == [("grounded", "grounded: sb50#0"), ("unsupported", "unsupported")]
    assert ".sentence.unsupported{text-decoration:underline wavy" in page  # the mark is styled, not only tagged
    assert p.by_class["truncated"] == ["truncated"] and "badge" in p.by_class
    assert "abstained" not in p.by_class
    # the span highlighting is kept, inside its sentence
    assert [t for _, t in p.spans] == [COPIED] and p.cited == [COPIED]
    # the Support list names the chunk a grounded sentence relies on
    support = p.by_class["support"][0]
    assert f"grounded in sb50#0: “{GROUNDED}”" in support and f"unsupported: “{UNSUPPORTED}”" in support
    # an answer that ended by itself has no badge; the notebook fragment carries its own styles
    done = labelled_result("eos")
    fragment = render_fragment(done)
    assert "badge truncated" not in fragment and fragment.startswith("<style>") and "underline wavy" in fragment
    assert done._repr_html_() == fragment and "<style>" not in render_fragment(done, style=False)


def test_sentence_marks_never_split_a_span() -> None:
    """A span that crosses a sentence boundary stays one <mark>; the sentence wrappers move around it."""
    text = "Alpha beta. Gamma delta epsilon."
    span_text = "beta. Gamma"
    rs = text.index(span_text)
    span = CopiedSpan(span_text, "d", "d#0", None, 0, len(span_text), rs, rs + len(span_text), 4)
    result = _result(text, [span])
    result.sentences = [SentenceSupport(0, 11, "copied", ["d#0"]), SentenceSupport(12, len(text), "unsupported", [])]
    p = _Marks()
    p.feed(render_html(result, {"d": span_text}))
    assert [t for _, t in p.spans] == [span_text]
    got = [(a["data-support"], t) for a, t in p.sentences]
    assert got == [("copied", "Alpha beta. Gamma[1]"), ("unsupported", " delta epsilon.")]


def test_abstained_notice() -> None:
    result = abstained_result(0.31)
    p = _Marks()
    p.feed(render_html(result, threshold=0.45))
    notice = p.by_class["abstained"]
    assert len(notice) == 1 and "Abstained" in notice[0] and "relevance 0.31 < 0.45" in notice[0]
    assert p.sentences == [] and p.labels == [] and "truncated" not in p.by_class
    assert "support" not in p.by_class  # the abstention message is not labelled as a claim


@needs_model
def test_html_from_the_cli_matches_the_file(tmp_path: Path) -> None:
    docs = {r["id"]: r["text"] for r in map(json.loads, DEMO_FILE.read_text(encoding="utf-8").splitlines())}
    f = tmp_path / "tesla.txt"
    f.write_text(docs["Nikola_Tesla"], encoding="utf-8")
    out = tmp_path / "answer.html"
    proc = run_cli("ask", "Where was Nikola Tesla born?", "--docs", str(f), "--html", str(out), "--max-new-tokens", "48")
    assert proc.returncode == 0, proc.stderr
    p = _Marks()
    p.feed(out.read_text(encoding="utf-8"))
    assert p.spans, "no copied span in the answer"
    on_disk = f.read_text(encoding="utf-8")  # re-read independently of the renderer
    for attrs, text in p.spans:
        assert on_disk[int(attrs["data-start"]) : int(attrs["data-end"])] == text
        assert html.unescape(attrs["data-doc-id"]) == str(f)
    assert p.cited == [t for _, t in p.spans]


def _chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_renders_in_headless_chromium(tmp_path: Path) -> None:
    """A real browser parses the page: its DOM keeps every highlighted span, and a screenshot is taken."""
    import subprocess

    import pytest

    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on this machine (Debian package `chromium`)")
    doc = "Super Bowl 50 was an American football game. The Denver Broncos won 24–10 at Levi's Stadium."
    s0 = doc.index("The Denver")
    span_text = doc[s0 : s0 + len("The Denver Broncos won 24–10")]
    answer = f"{span_text} in 2016."
    span = CopiedSpan(span_text, "sb50", "sb50#0", "sb50.txt", s0, s0 + len(span_text), 0, len(span_text), 8)
    page = tmp_path / "view.html"
    page.write_text(render_html(_result(answer, [span]), {"sb50": doc}, "Who won Super Bowl 50?"), encoding="utf-8")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    p = _Marks()
    p.feed(dom.stdout)
    assert [t for _, t in p.spans] == [span_text] and p.cited == [span_text]
    attrs = p.spans[0][0]
    assert doc[int(attrs["data-start"]) : int(attrs["data-end"])] == span_text
    shot = tmp_path / "view.png"
    run = subprocess.run(
        [browser, *flags, "--window-size=1000,700", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
