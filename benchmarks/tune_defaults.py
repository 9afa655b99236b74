"""Tune shipped defaults on the MEAN of both QA dev sets (seeded subsets), never on one.

    python benchmarks/tune_defaults.py --n 40 --grid 'neighbors=16,32,64' --systems nest,ra-nest \
        --out docs/results/tune-neighbors.json

Each grid point runs ``nest eval``'s harness (``run_eval``) on a seeded ``--n``-question subset of
squad-dev200 and of nq-dev200 (answerable, and with ``--unanswerable`` also the unanswerable variant), bf16,
max_new_tokens 128, with abstention's relevance recorded but not applied (threshold -1), so the abstention
threshold and the support gate can be chosen afterwards from the same records (``--thresholds``). Datastores
are cached in ``--cache``; records are kept per grid point in ``--records`` so an interrupted sweep resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path

from nest_integrations import NestConfig, load_model
from nest_integrations.eval.data import read_corpus, read_items, unanswerable_variant
from nest_integrations.eval.harness import run_eval

SETS = ("squad-dev200", "nq-dev200")


def _grid(specs: list[str]) -> list[dict]:
    keys, values = [], []
    for spec in specs:
        k, v = spec.split("=", 1)
        keys.append(k)
        values.append([getattr(NestConfig(**{k: x}), k) for x in v.split(",")])
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)] or [{}]


def offline_abstention(records: list[dict], threshold: float, support_gate: bool) -> list[dict]:
    """Records as they would be with abstention at ``threshold`` (and the first-sentence support gate)."""
    out = []
    for r in records:
        m = r["metrics"]
        rel = m.get("relevance")
        ab = m.get("abstained") or (rel is not None and rel < threshold)
        if support_gate and m.get("first_support") == "unsupported":
            ab = True
        out.append({**r, "abstained_offline": ab, "strict_offline": 0.0 if ab else m.get("answer_recall_strict", 0.0)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid", action="append", default=[])
    ap.add_argument("--set", dest="settings", action="append", default=[], help="KEY=VALUE for every point")
    ap.add_argument("--systems", default="nest,ra-nest")
    ap.add_argument("--unanswerable", action="store_true")
    ap.add_argument("--thresholds", default="0.4,0.45,0.5,0.55")
    ap.add_argument("--cache", default=".cache/nest-eval")
    ap.add_argument("--records", default=".cache/nest-eval/records")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    lm = load_model(dtype="bfloat16")
    fixed = dict(kv.split("=", 1) for kv in args.settings)
    systems = [s for s in args.systems.split(",") if s]
    results = []
    for point in _grid(args.grid):
        cfg = NestConfig(**{**fixed, **point, "abstain": "retrieval", "abstain_threshold": -1.0})
        tag = "_".join(f"{k}={v}" for k, v in sorted({**fixed, **point}.items())) or "defaults"
        entry = {"point": point, "fixed": fixed, "sets": {}}
        for name in SETS:
            corpus = read_corpus(Path(args.data) / name / "corpus.jsonl")
            _, items = read_items(Path(args.data) / name / "questions.jsonl", corpus=corpus)
            sub = random.Random(args.seed).sample(items, min(args.n, len(items)))
            variants = [("answerable", sub)]
            if args.unanswerable:
                variants.append(("unanswerable", unanswerable_variant(sub, corpus)))
            for variant, its in variants:
                rep = run_eval(
                    lm, "qa", its, corpus, systems=systems, config=cfg, max_new_tokens=128,
                    cache_dir=args.cache, records_path=Path(args.records) / f"{name}-{variant}-{tag}.jsonl",
                    progress=False,
                )
                summ = {}
                for sysname, s in rep["systems"].items():
                    recs = [r for r in rep["records"] if r["system"] == sysname]
                    off = {}
                    for t in [float(x) for x in args.thresholds.split(",")]:
                        for gate in (False, True):
                            rr = offline_abstention(recs, t, gate)
                            off[f"t={t},gate={gate}"] = {
                                "abstention": sum(r["abstained_offline"] for r in rr) / len(rr),
                                "strict": sum(r["strict_offline"] for r in rr) / len(rr),
                            }
                    summ[sysname] = {
                        k: s.get(k)
                        for k in ("answer_recall_strict", "f1", "support_shares", "spliced_sentence_rate",
                                  "word_boundary_violations", "length_limited_share", "mean_citation_words",
                                  "attribution_ratio", "sec_per_question", "tokens_per_s")
                    } | {"offline_abstention": off}
                entry["sets"][f"{name}/{variant}"] = {"systems": summ, "retrieval": rep.get("retrieval")}
                print(tag, name, variant, json.dumps({k: (v["answer_recall_strict"], v["support_shares"]) for k, v in summ.items()}), flush=True)
        results.append(entry)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
