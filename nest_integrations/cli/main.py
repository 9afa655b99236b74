"""The ``nest`` entry point: the command registry, the parser, and how errors become exit statuses.

Errors are reported as one line ``nest: error: ...`` on stderr (no traceback; set ``NEST_DEBUG=1`` to get
one): exit status 2 for bad usage or bad input (arguments, configuration, files that cannot be read, empty
question or corpus, prompt too long, a datastore of another model), 1 for other failures (model not
found, download failed, ...).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence

from nest_integrations.cli import answer, download, evaluate, index, serve
from nest_integrations.cli.common import PROG, USAGE_ERRORS, Command, Parser, UsageError
from nest_integrations.errors import NestError

__all__ = ["COMMANDS", "build_parser", "main"]

#: The subcommands, name → :class:`~nest_integrations.cli.common.Command`; a new one is one more entry.
COMMANDS: dict[str, Command] = {
    "download-model": download.COMMAND,
    "ask": answer.ASK,
    "chat": answer.CHAT,
    "index": index.COMMAND,
    "eval": evaluate.COMMAND,
    "serve": serve.COMMAND,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``nest`` argument parser, with one subparser per entry of :data:`COMMANDS`."""
    from nest_integrations import __version__

    parser = Parser(
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
    """2 for errors the user's input caused (:data:`~nest_integrations.cli.common.USAGE_ERRORS`), else 1."""
    return 2 if isinstance(exc, USAGE_ERRORS) else 1


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (its type name when it has none)."""
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
        if os.environ.get("NEST_DEBUG"):
            raise
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
