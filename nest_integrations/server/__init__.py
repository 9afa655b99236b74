"""``nest serve``: an OpenAI-compatible HTTP server whose answers carry exact citations.

Requires the ``server`` extra (``pip install "nest-integrations[server]"``: FastAPI, uvicorn, sse-starlette).

    from nest_integrations.server import NestService, ServerSettings, create_app, serve
    serve(engine, documents, host="127.0.0.1", port=8000)

Any OpenAI client works against it (``openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=...)``,
LangChain ``ChatOpenAI(base_url=..., use_responses_api=True)``, LlamaIndex ``OpenAILike``); see
:mod:`nest_integrations.server.app` for the endpoints and :mod:`nest_integrations.server.openai_format` for
where the citations are.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nest_integrations.server.service import NestService, QueueFullError, ServerSettings

__all__ = ["NestService", "QueueFullError", "ServerSettings", "create_app", "serve"]


def create_app(service: NestService) -> Any:
    """The FastAPI app over ``service`` (see :mod:`nest_integrations.server.app`)."""
    from nest_integrations.server.app import create_app as _create

    return _create(service)


def serve(
    engine: Any,
    documents: dict[str, str],
    settings: ServerSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    titles: dict[str, str] | None = None,
    log_level: str = "info",
    graceful_shutdown_s: float | None = None,
    access_log: bool = True,
) -> None:
    """Serve ``engine`` until interrupted (SIGINT / SIGTERM: in-flight requests get ``graceful_shutdown_s`` to
    finish, default ``settings.graceful_shutdown_s``, then they are cancelled). Binds 127.0.0.1 unless ``host`` says otherwise.
    ``access_log``: one JSON line per request on stderr (:class:`~nest_integrations.server.app.AccessLog`)."""
    import logging

    import uvicorn

    from nest_integrations.server.app import access_log as access

    settings = settings or ServerSettings()
    # one JSON line per request (server.app.AccessLog) on stderr, in place of uvicorn's access log
    if access_log and not access.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s access %(message)s"))
        access.addHandler(handler)
        access.propagate = False
    access.setLevel(logging.INFO if access_log and log_level in ("info", "debug") else logging.WARNING)
    if graceful_shutdown_s is not None:
        settings = dataclasses.replace(settings, graceful_shutdown_s=graceful_shutdown_s)
    app = create_app(NestService(engine, documents, settings, titles))
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        # uvicorn's own wait a little longer than the streams' grace, so a stream ends before uvicorn cuts it
        timeout_graceful_shutdown=settings.graceful_shutdown_s + 2.0,
    )
