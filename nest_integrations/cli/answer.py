"""``nest ask`` and ``nest chat``: answer over the demo corpus, your files (``--docs``) or a datastore (``--store``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from nest_integrations.cli.common import (
    Command,
    UsageError,
    add_config_options,
    add_corpus_options,
    add_model_options,
    add_output_options,
    add_vector_store_options,
    build_config,
    isatty,
    load_corpus,
    load_lm,
    note,
    use_color,
    write,
)
from nest_integrations.errors import EmptyQuestionError

if TYPE_CHECKING:  # pragma: no cover
    from nest_integrations.config import NestConfig

__all__ = ["ASK", "CHAT", "configure_ask", "configure_chat", "make_engine", "run_ask", "run_chat"]


def configure_ask(p: argparse.ArgumentParser) -> None:
    """``QUESTION`` and the corpus, model, decoding and output options."""
    p.add_argument("question", metavar="QUESTION", help="the question to answer (quote it)")
    add_corpus_options(p)
    add_vector_store_options(p)
    add_model_options(p)
    add_config_options(p)
    add_output_options(p)


def run_ask(args: argparse.Namespace) -> int:
    """Answer one question: streamed text, then flags, support labels, sources and stats (or ``--json``)."""
    question: str = args.question
    if not question.strip():
        raise EmptyQuestionError("the question is empty")
    config = build_config(args)
    from nest_integrations.render import mark_answer

    engine, doc_texts = make_engine(args, config)
    color = use_color(args.color, sys.stdout)
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
        write(json.dumps(_result_payload(result, engine, question=question), ensure_ascii=False, indent=2) + "\n")
        write_html(result)
        return 0

    if args.no_stream:
        result = engine.generate(question)
        write(mark_answer(result, color) + "\n")
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
            write(delta.text)
            last = delta.text
        if delta.result is not None:
            result = delta.result
    assert result is not None
    if not last.endswith("\n"):
        write("\n")
    return result


def _write_after_answer(
    result: Any, doc_texts: dict[str, str], color: bool, threshold: float, *, stats: bool
) -> None:
    """What follows an answer: the abstained / truncated lines, the support labels, the sources and
    (when ``stats``) the stats footer, blocks separated by a blank line."""
    from nest_integrations.render import render_flags, render_sources, render_stats, render_support

    flags = render_flags(result, color, threshold)
    if flags:
        write(flags + "\n")
    for block in (render_support(result, color), render_sources(result, doc_texts, color)):
        if block:
            write("\n" + block + "\n")
    if stats:
        write("\n" + render_stats(result, color) + "\n")


def configure_chat(p: argparse.ArgumentParser) -> None:
    """The corpus, model and decoding options, ``--json`` and ``--color``."""
    add_corpus_options(p)
    add_vector_store_options(p)
    add_model_options(p)
    add_config_options(p)
    g = p.add_argument_group("output")
    g.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per line and turn (turn, message, retrieval_query, text, spans, sentences, "
        "abstained, truncated, passages, stats, model, config) instead of text",
    )
    g.add_argument("--color", choices=("auto", "always", "never"), default="auto", help="highlight copied spans")


def make_engine(args: argparse.Namespace, config: NestConfig) -> tuple[Any, dict[str, str]]:
    """The engine and document texts for --store, --docs or the demo corpus (shared by ask and chat);
    with --vector-store, the --store's passages come from that Milvus collection."""
    vector_store = getattr(args, "vector_store", None)
    if vector_store is None and getattr(args, "collection", None) is not None:
        raise UsageError("--collection needs --vector-store")
    if vector_store is not None and not args.store:
        raise UsageError("--vector-store needs --store (the datastore `nest index --vector-store` built with it)")
    milvus = None
    if vector_store is not None:  # a bad target or collection fails before the model loads
        from nest_integrations.langchain.vector_stores import (
            DEFAULT_COLLECTION,
            MilvusChunkStore,
            parse_vector_store,
        )

        milvus = MilvusChunkStore(parse_vector_store(vector_store), args.collection or DEFAULT_COLLECTION)
    if args.store:
        if args.docs:
            raise UsageError("give either --store or --docs, not both")
        from nest_integrations.datastore import Datastore

        if args.dtype is None:
            args.dtype = Datastore.stored_dtype(args.store)
        lm = load_lm(args)
        store = Datastore.load(args.store, lm)
        if "key_layer" not in dict(args.settings or []):
            config = config.replace(key_layer=store.key_layer)
        doc_texts = {d.doc_id: d.text for d in store.documents.values()}
        if milvus is not None:
            return milvus.engine(store, config), doc_texts
        return store.engine(config), doc_texts
    documents, chunks = load_corpus(args)
    lm = load_lm(args)
    from nest_integrations.engine import NestEngine

    return NestEngine(lm, chunks, config), {d.doc_id: d.text for d in documents}


def run_chat(args: argparse.Namespace) -> int:
    """Answer one message per line of stdin, keeping the conversation (``/reset``, ``/exit``)."""
    from nest_integrations.prompts import retrieval_query_of, to_messages
    from nest_integrations.render import render_stats

    config = build_config(args)
    engine, doc_texts = make_engine(args, config)
    color = use_color(args.color, sys.stdout) and not args.json
    threshold = engine.config.abstain_threshold
    interactive = isatty(sys.stdin) and not args.json
    if interactive:
        note("chat with NEST: type a message, /reset to forget the conversation, /exit or Ctrl-D to quit")
    messages: list[dict[str, str]] = []
    turn = 0
    while True:
        if interactive:
            write("\nyou> ")
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
                write("(conversation forgotten)\n")
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
            write(json.dumps(payload, ensure_ascii=False) + "\n")
        else:
            write("nest> " if interactive else "")
            result = _stream_answer(engine, messages)
            _write_after_answer(result, doc_texts, color, threshold, stats=False)
            if interactive:
                write(render_stats(result, color) + "\n")
        messages.append({"role": "assistant", "content": result.text})
    return 0



ASK_EPILOG = """examples:
  nest ask "Who won Super Bowl 50?"
  nest ask "What does the guide say about backups?" --docs notes/ README.md
  nest ask "Where is Warsaw?" --json --max-new-tokens 64
  nest ask "Who was Nikola Tesla?" --method ra-nest --set alpha=0.4 --set passages=8
"""


ASK = Command(
    help="answer a question over the demo corpus or your files, citing copied spans",
    description="Answer QUESTION with NEST over the demo corpus (five abridged Wikipedia articles) or over your "
    "own files (--docs: .txt, .md, .pdf). The answer is streamed as it is generated, then the spans copied verbatim "
    "from the documents are listed with their source, line and character range.",
    configure=configure_ask,
    run=run_ask,
    epilog=ASK_EPILOG,
)

CHAT = Command(
    help="talk with NEST over the demo corpus, your files or a datastore (remembers the conversation)",
    description="An interactive chat: each message is answered with NEST (streamed), the copied spans are "
    "listed with their sources and every sentence's support label, and the conversation is kept for the next "
    "turn: the model sees it all, and retrieval uses a query condensed from it (a follow-up such as 'Who was her "
    "father?' is searched together with the earlier questions). /reset forgets it, /exit or Ctrl-D quits. Reads "
    "one message per line when stdin is not a terminal; --json prints one JSON object per turn.",
    configure=configure_chat,
    run=run_chat,
    epilog="examples:\n  nest chat\n  nest chat --store my-store\n  printf 'Who won Super Bowl 50?\\n' | nest chat\n"
    "  printf 'Where was Nikola Tesla born?\\nWhen did he die?\\n' | nest chat --json\n",
)
