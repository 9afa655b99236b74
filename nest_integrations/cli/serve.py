"""``nest serve``: the OpenAI-compatible server (:mod:`nest_integrations.server`) over --store, --docs or the demo corpus."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from nest_integrations.cli.common import (
    Command,
    UsageError,
    add_config_options,
    add_corpus_options,
    add_model_options,
    build_config,
    note,
    positive_int,
)

__all__ = ["COMMAND", "configure_serve", "run_serve"]


def configure_serve(p: argparse.ArgumentParser) -> None:
    """Address, API key, limits, corpus, model and decoding options."""
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    g.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0 = any free port)")
    g.add_argument(
        "--api-key",
        default=None,
        help="require `Authorization: Bearer KEY` on /v1 and /metrics (default: $NEST_API_KEY; none if unset)",
    )
    g.add_argument("--model-name", default="nest", help="model id the API lists and answers with (default: %(default)s)")
    g.add_argument("--max-active", type=positive_int, default=8, help="requests decoding at once (default: %(default)s)")
    g.add_argument(
        "--max-queue", type=int, default=32, help="requests waiting beyond those; more get 429 (default: %(default)s)"
    )
    g.add_argument(
        "--max-tokens-limit", type=positive_int, default=1024, help="largest max_tokens accepted (default: %(default)s)"
    )
    g.add_argument("--max-body-bytes", type=positive_int, default=1_000_000, help="largest request body (default: 1 MB)")
    g.add_argument(
        "--timeout", type=float, default=300.0, help="seconds a request may run before it is cancelled (default: 300)"
    )
    g.add_argument(
        "--graceful-shutdown",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on SIGINT / SIGTERM, seconds the requests in flight get to finish before they are cut (default: 10)",
    )
    g.add_argument(
        "--log-level", choices=("critical", "error", "warning", "info", "debug"), default="info", help="uvicorn log level"
    )
    g.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="no access log (default: one JSON line per request on stderr: client, method, path, status, bytes, ms)",
    )
    add_corpus_options(p)
    add_model_options(p)
    add_config_options(p)


def run_serve(args: argparse.Namespace) -> int:
    """Load the model and corpus, then serve until interrupted."""
    try:
        import fastapi  # noqa: F401
        import sse_starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError('`nest serve` needs the server extra: pip install "nest-integrations[server]"') from None
    from nest_integrations.cli.answer import make_engine
    from nest_integrations.server import ServerSettings, serve

    if args.port < 0 or args.port > 65535:
        raise UsageError(f"--port must be 0..65535, got {args.port}")
    api_key = args.api_key if args.api_key is not None else os.environ.get("NEST_API_KEY") or None
    settings = ServerSettings(
        model_name=args.model_name,
        api_key=api_key,
        max_active=args.max_active,
        max_queue=args.max_queue,
        max_tokens_limit=args.max_tokens_limit,
        default_max_tokens=min(256, args.max_tokens_limit),
        max_body_bytes=args.max_body_bytes,
        request_timeout_s=args.timeout,
        graceful_shutdown_s=args.graceful_shutdown,
    )
    config = build_config(args)
    engine, documents = make_engine(args, config)
    titles = {}
    for c in engine.chunks:
        src = c.metadata.get("source") if c.metadata else None
        if src and c.doc_id not in titles:
            titles[c.doc_id] = Path(str(src)).name
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        note(f"warning: serving on {args.host} without an API key: anyone who can reach it can use it")
    note(f"{len(documents)} documents, {len(engine.chunks)} chunks; model {engine.lm.model_id}")
    serve(
        engine,
        documents,
        settings,
        host=args.host,
        port=args.port,
        titles=titles,
        log_level=args.log_level,
        access_log=args.access_log,
    )
    return 0


COMMAND = Command(
    help="serve an OpenAI-compatible API (chat completions, responses, completions) with citations and a chat page",
    description="Start an HTTP server on --host:--port (127.0.0.1:8000 by default) that answers OpenAI API requests "
    "with NEST over --store, --docs or the demo corpus: every answer carries its copied spans as url_citation "
    "annotations and in a `nest` object (spans, sentence support labels, abstention). Documents sent inside the "
    "messages (a RAG chain's context) are copied from and cited by message index. Open http://HOST:PORT/ for the "
    "chat page; /docs has the OpenAPI schema.",
    configure=configure_serve,
    run=run_serve,
    epilog="example: nest serve --docs notes/ --port 8000, then "
    "OpenAI(base_url='http://127.0.0.1:8000/v1', api_key='unused').chat.completions.create(...)",
)
