"""Bad inputs to the public entry points: each raises a typed error of the package's hierarchy, with a clear message.

The cases are the table of ``docs/bad-inputs.md``; ``python -m tests.test_bad_inputs`` runs them outside
pytest and prints that table (with the message each one gives). Command-line cases are run in process:
without ``NEST_DEBUG`` they must exit with status 2 and print one ``nest: error:`` line holding the
excerpt; with ``NEST_DEBUG=1`` the typed error itself comes out, and its type is checked.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from nest_integrations import langchain, llama_index
from nest_integrations.chunks import Document, chunks_from_documents
from nest_integrations.cli.common import UsageError
from nest_integrations.cli.main import main
from nest_integrations.datastore import Datastore
from nest_integrations.demo import load_demo_documents
from nest_integrations.engine import NestEngine
from nest_integrations.errors import (
    ConfigError,
    DatastoreError,
    DocumentLoadError,
    DuplicateIdError,
    EmptyCorpusError,
    ModelNotFoundError,
    NestError,
    OffsetError,
)
from nest_integrations.langchain.text_splitter import BoundaryTextSplitter
from nest_integrations.loading import load_documents, read_text_file
from nest_integrations.models import LoadedModel, default_model_dir, load_model
from tests.conftest import make_tiny_lm
from tests.pdf import make_pdf


class Context:
    """Where a case runs: a fresh folder, and the tiny model (made once, on demand)."""

    _lm: Any = None

    def __init__(self, root: Path, lm_factory: Callable[[], Any]) -> None:
        self.root = root
        self._factory = lm_factory

    @property
    def lm(self) -> Any:
        """The tiny random model of the tests (float32)."""
        if Context._lm is None:
            Context._lm = self._factory()
        return Context._lm

    def file(self, name: str, data: str | bytes) -> Path:
        """Write ``data`` to ``root/name`` (UTF-8 for text) and return the path."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        return path

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def store(self, name: str, lm: Any | None = None) -> Path:
        """A small datastore saved by ``lm`` (default: the tiny model)."""
        path = self.root / name
        Datastore.from_documents(load_demo_documents()[:1], lm or self.lm, chunk_size=400, progress=False).save(path)
        return path

    def model_dir(self, name: str, *files: str) -> Path:
        """A model directory holding only ``files`` of the default model (``junk:NAME`` writes a damaged NAME)."""
        src = default_model_dir()
        path = self.folder(name)
        for f in files:
            if f.startswith("junk:"):
                (path / f[5:]).write_text("garbage{", encoding="utf-8")
            elif f == "empty-weights":
                (path / "model.safetensors").write_bytes(b"")
            else:
                shutil.copy(src / f, path / f)
        return path

    def cli(self, *argv: str, patch_lm: bool = False) -> None:
        """Run ``nest ARGV`` in process; check the one-line error and exit status 2, then raise the typed error."""
        patches: list[Any] = []
        if patch_lm:  # the commands get the tiny model instead of loading one
            for target in ("nest_integrations.cli.index.load_lm", "nest_integrations.cli.answer.load_lm"):
                patches.append(mock.patch(target, lambda args: self.lm))
        with contextlib.ExitStack() as stack:
            for p in patches:
                stack.enter_context(p)
            stack.enter_context(mock.patch.dict(os.environ, {"NEST_DEBUG": ""}))
            os.environ.pop("NEST_DEBUG")
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = main(list(argv))
            lines = [x for x in err.getvalue().splitlines() if x.startswith("nest: error: ")]
            if code != 2 or len(lines) != 1:
                raise AssertionError(f"expected exit status 2 and one error line, got {code}: {err.getvalue()!r}")
            self.last_cli_line = lines[0]
            os.environ["NEST_DEBUG"] = "1"
            with contextlib.redirect_stderr(io.StringIO()):
                main(list(argv))
        raise AssertionError("NEST_DEBUG=1 did not raise the error")


@dataclass(frozen=True)
class Case:
    """One bad input: which entry point gets it, what it is, and what must come out."""

    id: str
    entry: str
    given: str
    run: Callable[[Context], Any]
    error: type[BaseException]
    excerpt: str


def _denied(self: Path) -> bytes:
    raise PermissionError(13, "Permission denied", str(self))


def _unreadable(c: Context) -> Any:
    path = c.file("secret.txt", "text")
    with mock.patch.object(Path, "read_bytes", _denied):
        return load_documents([path], errors="raise")


def _altering_splitter() -> Any:
    from langchain_text_splitters import TextSplitter

    class Upper(TextSplitter):
        def split_text(self, text: str) -> list[str]:
            return [text.upper()]

    return Upper(chunk_size=100, chunk_overlap=0)


def _other_dtype_store_for_index(c: Context) -> Any:
    store = c.store("bf16-store")
    manifest = json.loads((store / "manifest.json").read_text(encoding="utf-8"))
    manifest["fingerprint"]["dtype"] = "bfloat16"  # as if built with --dtype bfloat16
    (store / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return c.cli("index", str(c.file("docs/a.txt", "Some text to index.")), "--out", str(store), patch_lm=True)


def _bfloat16(lm: Any) -> Any:
    import copy

    import torch

    return LoadedModel(copy.deepcopy(lm.model).to(torch.bfloat16), lm.tokenizer, lm.model_id, lm.path, "bfloat16")


def _other_model(c: Context) -> Any:
    return Datastore.load(c.store("s"), make_tiny_lm(seed=1))


_load = load_documents
_split = chunks_from_documents
_doc = Document
_load_model = load_model


BINARY = b"PK\x03\x04\x00\x00binary"
LATIN1 = "café au lait".encode("latin-1")

CASES: list[Case] = [
    # ---- the loader -------------------------------------------------------------------------
    Case("load-empty-list", "load_documents", "`[]` (no paths)", lambda c: _load([]), EmptyCorpusError,
         "no files or folders given"),
    Case("load-missing", "load_documents", "a path that does not exist", lambda c: _load([c.root / "nope.txt"]),
         EmptyCorpusError, "nope.txt: no such file or folder"),
    Case("load-missing-raise", "load_documents", "a path that does not exist, `errors=\"raise\"`",
         lambda c: _load([c.root / "nope.txt"], errors="raise"), DocumentLoadError, "nope.txt: no such file or folder"),
    Case("load-binary", "load_documents", "a binary file (NUL bytes), `errors=\"raise\"`",
         lambda c: _load([c.file("blob.md", BINARY)], errors="raise"), DocumentLoadError,
         "blob.md: binary file (contains NUL bytes), not text"),
    Case("load-binary-only", "load_documents", "a folder holding only a binary file",
         lambda c: (c.file("only/blob.txt", BINARY), _load([c.root / "only"])), EmptyCorpusError,
         "blob.txt: binary file (contains NUL bytes), not text"),
    Case("load-latin1", "load_documents", "a Latin-1 (not UTF-8) text file", lambda c: _load([c.file("l.txt", LATIN1)], errors="raise"),
         DocumentLoadError, "l.txt: not UTF-8 text (invalid continuation byte at byte 3)"),
    Case("load-empty-file", "load_documents", "an empty file", lambda c: _load([c.file("e.txt", "")], errors="raise"),
         DocumentLoadError, "e.txt: empty file"),
    Case("load-blank-file", "load_documents", "a whitespace-only `.md` file",
         lambda c: _load([c.file("b.md", " \n\t\n")], errors="raise"), DocumentLoadError, "b.md: empty file"),
    Case("load-unreadable", "load_documents", "a file that cannot be read (permission denied)", _unreadable,
         DocumentLoadError, "secret.txt: cannot read (Permission denied)"),
    Case("load-damaged-pdf", "load_documents", "a damaged `.pdf`",
         lambda c: _load([c.file("d.pdf", b"%PDF-1.4 not really")], errors="raise"), DocumentLoadError,
         "d.pdf: unreadable PDF ("),
    Case("load-pdf-no-text", "load_documents", "a `.pdf` without text (scanned)",
         lambda c: (make_pdf(c.root / "scan.pdf", [[]]), _load([c.root / "scan.pdf"], errors="raise")),
         DocumentLoadError, "scan.pdf: PDF without extractable text (scanned images need OCR first)"),
    Case("load-folder-no-files", "load_documents", "a folder without `.txt`/`.md`/`.pdf` files",
         lambda c: (c.file("csv/a.csv", "a,b"), _load([c.root / "csv"], errors="raise")), DocumentLoadError,
         "csv: folder holds no .txt, .md, .pdf files"),
    Case("load-bad-errors-mode", "load_documents", "`errors=\"ignore\"`",
         lambda c: _load([c.file("ok.txt", "fine")], errors="ignore"), ConfigError, "errors must be 'skip' or 'raise'"),
    Case("read-text-folder", "read_text_file", "a folder instead of a file",
         lambda c: read_text_file(c.folder("dir")),
         DocumentLoadError, "dir: is a folder, not a file"),
    Case("exact-text-loader-latin1", "langchain.ExactTextLoader", "a Latin-1 file",
         lambda c: langchain.ExactTextLoader(c.file("x.txt", LATIN1)).load(),
         DocumentLoadError, "x.txt: not UTF-8 text"),
    Case("nest-file-loader-binary", "langchain.NestFileLoader", "a binary file",
         lambda c: langchain.NestFileLoader(c.file("y.txt", BINARY)).load(),
         DocumentLoadError, "y.txt: binary file (contains NUL bytes), not text"),
    Case("nest-file-reader-binary", "llama_index.NestFileReader", "a binary file",
         lambda c: llama_index.NestFileReader().load_data(c.file("z.txt", BINARY)),
         DocumentLoadError, "z.txt: binary file (contains NUL bytes), not text"),
    # ---- the splitter path ------------------------------------------------------------------
    Case("split-empty-list", "chunks_from_documents", "`[]` (no documents)", lambda c: _split([]), EmptyCorpusError,
         "the corpus is empty"),
    Case("split-blank-doc", "chunks_from_documents", "one whitespace-only document", lambda c: _split([_doc("d", " \n\t ")]),
         EmptyCorpusError, "no chunk holds any text"),
    Case("split-size-0", "chunks_from_documents", "`chunk_size=0`", lambda c: _split([_doc("d", "text")], chunk_size=0),
         ConfigError, "chunk_size must be a positive integer, got 0"),
    Case("split-size-str", "chunks_from_documents", "`chunk_size=\"800\"` (a string)",
         lambda c: _split([_doc("d", "text")], chunk_size="800"), ConfigError, "chunk_size must be a positive integer"),
    Case("split-overlap", "chunks_from_documents", "`chunk_overlap` = `chunk_size`",
         lambda c: _split([_doc("d", "text")], chunk_size=10, chunk_overlap=10), ConfigError,
         "chunk_overlap must be an integer >= 0 and smaller than chunk_size (10), got 10"),
    Case("split-duplicate-ids", "chunks_from_documents", "two documents with the same id",
         lambda c: _split([_doc("same", "alpha"), _doc("same", "beta")]), DuplicateIdError,
         "two documents have the same id 'same'"),
    Case("split-altering-splitter", "chunks_from_documents", "a splitter that changes the text (upper-cases it)",
         lambda c: _split([_doc("d", "some text")], splitter=_altering_splitter()), OffsetError,
         "does not occur in the document text"),
    Case("splitter-negative-overlap", "BoundaryTextSplitter", "`chunk_overlap=-1`",
         lambda c: BoundaryTextSplitter(100, -1),
         ConfigError, "chunk_overlap must be"),
    # ---- nest index -------------------------------------------------------------------------
    Case("index-empty-folder", "nest index", "an empty folder",
         lambda c: c.cli("index", str(c.folder("empty")), "--out", str(c.root / "s1")), EmptyCorpusError,
         "no readable text in"),
    Case("index-binary-only", "nest index", "a folder holding only a binary file",
         lambda c: c.cli("index", str(c.file("bin/b.txt", BINARY).parent), "--out", str(c.root / "s2")),
         EmptyCorpusError, "b.txt: binary file (contains NUL bytes), not text"),
    Case("index-missing", "nest index", "a path that does not exist",
         lambda c: c.cli("index", str(c.root / "nope"), "--out", str(c.root / "s3")), EmptyCorpusError,
         "nope: no such file or folder"),
    Case("index-chunk-size-0", "nest index", "`--chunk-size 0`",
         lambda c: c.cli("index", str(c.root), "--out", str(c.root / "s4"), "--chunk-size", "0"),
         UsageError, "--chunk-size"),
    Case("index-other-dtype", "nest index", "`--out` holding a datastore built in bfloat16 (model loaded in float32)",
         _other_dtype_store_for_index, DatastoreError, "load it with dtype='bfloat16'"),
    Case("index-damaged-store", "nest index", "`--out` holding a damaged manifest",
         lambda c: (c.file("bad-store/manifest.json", "{not json"),
                    c.cli("index", str(c.file("d2/a.txt", "text")), "--out", str(c.root / "bad-store"), patch_lm=True)),
         DatastoreError, "unreadable manifest"),
    # ---- nest ask --docs --------------------------------------------------------------------
    Case("ask-docs-empty-folder", "nest ask --docs", "an empty folder",
         lambda c: c.cli("ask", "q", "--docs", str(c.folder("empty2"))), EmptyCorpusError, "no readable text in"),
    Case("ask-docs-latin1", "nest ask --docs", "only a Latin-1 file", lambda c: c.cli("ask", "q", "--docs", str(c.file("l2.md", LATIN1))),
         EmptyCorpusError, "l2.md: not UTF-8 text"),
    Case("ask-docs-scanned-pdf", "nest ask --docs", "only a `.pdf` without text",
         lambda c: (make_pdf(c.root / "scan2.pdf", [[]]), c.cli("ask", "q", "--docs", str(c.root / "scan2.pdf"))),
         EmptyCorpusError, "scan2.pdf: PDF without extractable text"),
    Case("ask-docs-and-store", "nest ask --docs", "`--docs` together with `--store`",
         lambda c: c.cli("ask", "q", "--docs", str(c.file("t.txt", "text")), "--store", str(c.root)),
         UsageError, "give either --store or --docs, not both"),
    # ---- Datastore.load ---------------------------------------------------------------------
    Case("load-store-other-model", "Datastore.load", "a datastore built with another model", _other_model,
         DatastoreError, "was built with another model ('tiny-random-llama'"),
    Case("load-store-other-dtype", "Datastore.load", "a float32 datastore, the model loaded in bfloat16",
         lambda c: Datastore.load(c.store("f32"), _bfloat16(c.lm)),
         DatastoreError, "load it with dtype='float32'"),
    Case("load-store-not-a-store", "Datastore.load", "a folder that is not a datastore",
         lambda c: Datastore.load(c.folder("plain"), c.lm),
         DatastoreError, "not a datastore (no manifest.json)"),
    Case("load-store-missing", "Datastore.load", "a folder that does not exist",
         lambda c: Datastore.load(c.root / "gone", c.lm),
         DatastoreError, "no such datastore directory"),
    # ---- an empty document list -------------------------------------------------------------
    Case("build-empty", "Datastore.build", "`[]` (no chunks)",
         lambda c: Datastore.build(c.lm, [], progress=False),
         EmptyCorpusError, "the corpus is empty"),
    Case("store-from-empty-docs", "Datastore.from_documents", "`[]` (no documents)",
         lambda c: Datastore.from_documents([], c.lm, progress=False),
         EmptyCorpusError, "the corpus is empty"),
    Case("engine-empty", "NestEngine", "`[]` (no chunks)",
         lambda c: NestEngine(c.lm, []), EmptyCorpusError,
         "the corpus is empty"),
    Case("engine-from-empty-docs", "NestEngine.from_documents", "`[]` (no documents)",
         lambda c: NestEngine.from_documents([], c.lm),
         EmptyCorpusError, "the corpus is empty"),
    # ---- load_model -------------------------------------------------------------------------
    Case("model-config-only", "load_model", "a folder with only `config.json`",
         lambda c: _load_model(c.model_dir("m1", "config.json")), ModelNotFoundError, "holds no model weights"),
    Case("model-no-weights", "load_model", "config and tokenizer, no weights",
         lambda c: _load_model(c.model_dir("m2", "config.json", "tokenizer.json", "tokenizer_config.json")),
         ModelNotFoundError, "holds no model weights"),
    Case("model-no-tokenizer", "load_model", "config and weights, no tokenizer",
         lambda c: _load_model(c.model_dir("m3", "config.json", "empty-weights")), ModelNotFoundError,
         "holds no tokenizer"),
    Case("model-bad-tokenizer", "load_model", "a `tokenizer.json` that is not JSON",
         lambda c: _load_model(c.model_dir("m4", "config.json", "empty-weights", "junk:tokenizer.json")),
         ModelNotFoundError, "cannot load the tokenizer"),
    Case("model-damaged-weights", "load_model", "a damaged `model.safetensors`",
         lambda c: _load_model(c.model_dir("m5", "config.json", "tokenizer.json", "tokenizer_config.json",
                                           "junk:model.safetensors")),
         ModelNotFoundError, "cannot load the weights"),
    Case("model-no-config", "load_model", "a folder without `config.json`", lambda c: _load_model(c.folder("m6")),
         ModelNotFoundError, "is not a model directory (no config.json)"),
    Case("model-missing-path", "load_model", "a path that does not exist", lambda c: _load_model(str(c.root / "no-model")),
         ModelNotFoundError, "does not exist"),
]  # fmt: skip


def _message(exc: BaseException, context: Context) -> str:
    """What the user reads: the exception's message (for command-line cases, the ``nest: error:`` line)."""
    line = getattr(context, "last_cli_line", None)
    return line if line is not None else " ".join(str(exc).split())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_raises_a_typed_error(case: Case, tmp_path: Path, tiny_lm: Any) -> None:
    context = Context(tmp_path, lambda: tiny_lm)
    with pytest.raises(case.error) as info:
        case.run(context)
    assert isinstance(info.value, NestError), f"{type(info.value).__name__} is not a NestError"
    message = _message(info.value, context)
    assert case.excerpt in message, message
    assert case.excerpt in str(info.value) or message.startswith("nest: error: ")


def table() -> str:
    """Run every case outside pytest and give the markdown table of ``docs/bad-inputs.md``."""
    rows = []
    passed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for n, case in enumerate(CASES):
            root = Path(tmp) / f"{n:02d}"
            root.mkdir()
            context = Context(root, make_tiny_lm)
            got: BaseException | None = None
            try:
                case.run(context)
            except BaseException as exc:  # noqa: BLE001 - recorded, whatever it is
                got = exc
            message = _message(got, context) if got is not None else "(nothing raised)"
            ok = isinstance(got, case.error) and isinstance(got, NestError) and case.excerpt in message
            passed += ok
            shown = message.replace(str(root) + os.sep, "…/")
            shown = shown if len(shown) <= 170 else shown[:167] + "…"
            rows.append(
                f"| {case.given} | `{case.entry}` | `{type(got).__name__ if got else '—'}` | "
                f"{shown.replace('|', chr(92) + '|')} | {'yes' if ok else '**no**'} |"
            )
    head = "| input | entry point | error type | message (excerpt) | passed |\n|---|---|---|---|---|\n"
    return f"{len(CASES)} bad inputs tried, {passed} passed.\n\n" + head + "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m tests.test_bad_inputs > table.md
    sys.stdout.write(table())
