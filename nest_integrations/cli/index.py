"""``nest index``: build or update a datastore from files (the sync itself is
:func:`nest_integrations.datastore.index_documents`; this module only parses and prints)."""

from __future__ import annotations

import argparse
from typing import Any

from nest_integrations.cli.common import (
    Command,
    UsageError,
    add_model_options,
    load_lm,
    note,
    positive_int,
    read_files,
    write,
)

__all__ = ["COMMAND", "configure_index", "run_index"]


def configure_index(p: argparse.ArgumentParser) -> None:
    """``PATH ...``, ``--out``, ``--chunk-size``, ``--max-tokens``, ``--rebuild``, ``--prune``, ``--quiet``, model."""
    p.add_argument("paths", metavar="PATH", nargs="+", help="files and folders (.txt, .md, .pdf; folders recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="datastore directory (created, or updated if it exists)")
    p.add_argument("--chunk-size", type=positive_int, default=800, help="characters per chunk (default: %(default)s)")
    p.add_argument(
        "--max-tokens",
        type=positive_int,
        default=None,
        help="refuse to compute keys for more tokens than this (default: 50,000,000 for a new datastore, whose keys "
        "stream to disk; 2,000,000 for an update)",
    )
    p.add_argument(
        "--key-format",
        default=None,
        metavar="FORMAT",
        help="how token keys are stored: float16 (1,152 bytes a token with the default model), int8 (578) or pqM "
        "(product quantisation, M bytes a token, e.g. pq192); default: the stored datastore's, else pq192 for the "
        "default model (D/3 codes a token; float16 under 10,000 tokens; docs/scale.md). "
        "Giving another one converts a stored datastore's keys",
    )
    p.add_argument(
        "--key-mode",
        choices=["precomputed", "on_the_fly", "cached"],
        default=None,
        help="precomputed (default): keys computed now and saved; on_the_fly: no keys saved, each question encodes "
        "the passages it retrieved (the paper's way; for a GPU or a huge corpus); cached: on the fly, keeping "
        "recently used passages' keys in memory",
    )
    p.add_argument(
        "--vector-store",
        default=None,
        metavar="milvus:PATH_OR_URI",
        help="also keep the chunks in a Milvus collection (the passage stage of `nest ask --vector-store`): "
        "milvus:FILE.db for Milvus Lite, milvus:http://HOST:19530 for a server or cluster ($MILVUS_TOKEN if it needs one)",
    )
    p.add_argument("--collection", default=None, metavar="NAME", help="the Milvus collection (default: nest_chunks)")
    p.add_argument("--rebuild", action="store_true", help="build from scratch even if --out holds a datastore")
    p.add_argument("--prune", action="store_true", help="also delete stored documents that are not in PATH")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(p)


def run_index(args: argparse.Namespace) -> int:
    """Read the files, sync the datastore in ``--out`` with them, print what changed."""
    from nest_integrations.datastore import Datastore, has_datastore, index_documents
    from nest_integrations.store import KeyFormat

    if args.key_format not in (None, "auto"):
        KeyFormat.parse(args.key_format)  # a typo fails before the model loads
    milvus = _open_vector_store(args)  # a bad target or a collection of another size fails before anything is written
    documents, chunks = read_files(args.paths, args.chunk_size)
    how = "--dtype"
    if args.dtype is None and not args.rebuild and has_datastore(args.out):
        args.dtype = Datastore.stored_dtype(args.out)
        how = "the dtype the datastore was built with"
    if args.dtype is None:
        how = "the fastest this device supports; --dtype to choose"
    lm = load_lm(args)
    note(f"indexing with {lm.model_id} in {lm.dtype} ({how}) …")
    fresh = args.rebuild or not has_datastore(args.out)
    changed: list[str] = []
    store, report = index_documents(
        args.out,
        lm,
        chunks,
        documents,
        rebuild=args.rebuild,
        prune=args.prune,
        max_tokens=args.max_tokens,
        progress=not args.quiet,
        key_format=args.key_format,
        key_mode=args.key_mode,
        on_change=lambda kind, doc_id: changed.append(doc_id),
    )
    if store.key_mode == "precomputed":
        keys = f"{store.n_tokens:,} tokens, {store.key_format.name} keys"
    else:
        keys = f"keys {store.key_mode.replace('_', ' ')} (none stored)"
    write(f"{args.out}: {len(store.doc_ids)} documents, {len(store)} chunks, {keys} ({report.summary()})\n")
    if milvus is not None:
        synced = milvus.sync(store, None if fresh else changed)
        write(f"{args.vector_store} collection {milvus.collection}: {synced.summary()}\n")
    return 0


def _open_vector_store(args: argparse.Namespace) -> Any:
    """The ``--vector-store`` collection (checked: schema and vector size), or ``None`` without the option."""
    if args.vector_store is None:
        if args.collection is not None:
            raise UsageError("--collection needs --vector-store")
        return None
    from nest_integrations.langchain.vector_stores import DEFAULT_COLLECTION, MilvusChunkStore, parse_vector_store

    return MilvusChunkStore(parse_vector_store(args.vector_store), args.collection or DEFAULT_COLLECTION)


COMMAND = Command(
    help="build or update a datastore from your files (.txt, .md, .pdf)",
    description="Read files (text exactly as on disk, PDFs page by page), split them into chunks at "
    "verified offsets (the same reading and splitting as `nest ask --docs`), compute the token keys with the "
    "model and save a datastore to --out. If --out already holds one, only new and changed documents are "
    "(re)indexed. Use it with `nest ask --store DIR`.",
    configure=configure_index,
    run=run_index,
    epilog="examples:\n  nest index notes/ manual.pdf --out my-store\n  nest ask \"What does the manual say about "
    "backups?\" --store my-store\n",
)
