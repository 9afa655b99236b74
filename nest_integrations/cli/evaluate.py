"""``nest eval``: compare the paper's systems and the speed peers on a question, completion or biography file."""

from __future__ import annotations

import argparse
import sys

from nest_integrations.cli.common import (
    Command,
    UsageError,
    add_abstain_option,
    add_model_options,
    build_config,
    key_value,
    load_lm,
    note,
    positive_int,
    quiet_libraries,
    write,
)

__all__ = ["COMMAND", "configure_eval", "run_eval"]


def configure_eval(p: argparse.ArgumentParser) -> None:
    """Data (``--questions`` / ``--corpus`` or ``--sample``), systems, model and output options."""
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
    g.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N items")
    g.add_argument(
        "--subset", type=positive_int, default=None, metavar="N", help="evaluate a seeded random sample of N items"
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
        "--key-format", default="float16", metavar="FORMAT",
        help="how the datastore's keys are stored: float16, int8 or pqM (converted once and kept in --cache-dir; "
        "default: %(default)s)",
    )
    g.add_argument(
        "--records", metavar="FILE", default=None,
        help="JSON Lines of per-item records: items already in it are not run again (resume), new ones are appended",
    )
    g.add_argument("--chunk-size", type=positive_int, default=800, help="characters per chunk (default: %(default)s)")
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
        type=positive_int,
        default=None,
        help="per item (default: 64 for QA, 128 for biographies, the reference's length for completion)",
    )
    s.add_argument(
        "--set", dest="settings", action="append", type=key_value, default=[], metavar="KEY=VALUE",
        help="a NestConfig field for all systems (repeatable)",
    )
    add_abstain_option(s)
    s.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    add_model_options(p)
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="FILE", help="write the JSON report here")
    o.add_argument("--markdown", metavar="FILE", help="write a markdown page with the table here")
    o.add_argument("--plot", metavar="FILE", help="write a quality-vs-speed plot here (PNG, SVG or PDF)")
    o.add_argument("--quiet", action="store_true", help="no progress bar")


def run_eval(args: argparse.Namespace) -> int:
    """Run the evaluation, write the reports asked for, print the markdown table."""
    import shlex

    quiet_libraries()
    from nest_integrations.eval.data import read_corpus, read_items
    from nest_integrations.eval.harness import SYSTEMS, parse_sweep, run_eval
    from nest_integrations.eval.report import markdown_table, write_json, write_markdown, write_plot

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad or not systems:
        raise UsageError(f"unknown system(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(SYSTEMS)}")
    config = build_config(args)
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
    lm = load_lm(args)
    note(f"{mode} task: {len(items)} items{' (unanswerable variant)' if args.unanswerable else ''}, systems {', '.join(systems)}")
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
        key_format=args.key_format,
    )
    report["variant"] = "unanswerable" if args.unanswerable else "answerable"
    report["command"] = "nest eval " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["eval"] else None
    if args.out:
        write_json(report, args.out)
    if args.markdown:
        write_markdown(report, args.markdown, report["command"])
    if args.plot:
        write_plot(report, args.plot)
    write(markdown_table(report) + "\n")
    return 0


EVAL_EPILOG = """examples:
  nest eval --sample --systems base,nest,passage-dump --out report.json
  nest eval --questions data/squad-dev200/questions.jsonl --corpus data/squad-dev200/corpus.jsonl \\
            --limit 20 --out report.json --markdown report.md --plot report.png
  nest eval --questions data/wikitext2-test/completion_prompts.jsonl --corpus data/wikitext2-test/articles.jsonl
  nest eval --questions data/bio-small/bios.jsonl --systems base,nest
  nest eval --questions q.jsonl --corpus c.jsonl --systems nest,ra-nest --sweep gamma=5e-4,5e-3,5e-2,0.5
  nest eval --questions q.jsonl --corpus c.jsonl --unanswerable --systems nest --cache-dir .cache --records r.jsonl
"""


COMMAND = Command(
    help="compare base / RA / kNN-LM / NEST / RA-NEST / RA-PLD / passage-dump on your data",
    description="Run the paper's systems and the speed peers on a question (or completion / biography) file, "
    "or with --sample on the SQuAD questions shipped with the package over the demo corpus, "
    "interleaved per item in one process, and report answer quality, attribution and speed relative to the "
    "base LM as a table (stdout), JSON (--out), markdown (--markdown) and a plot (--plot).",
    configure=configure_eval,
    run=run_eval,
    epilog=EVAL_EPILOG,
)
