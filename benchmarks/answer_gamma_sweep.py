"""Sweep of NestConfig overrides on a seeded subset of a dev set: strict recall, abstention, unsupported sentences.

    python benchmarks/answer_gamma_sweep.py squad-dev200 40 '[{"answer_gamma": null}, {"answer_gamma": 0.0}]'

Items are shuffled with seed 1; the datastore is cached under .cache/nest-eval (as nest eval --cache-dir).
"""

import json
import random
import sys
import time
from pathlib import Path

from nest_integrations.config import NestConfig
from nest_integrations.eval.data import read_corpus, read_items
from nest_integrations.eval.harness import _cached_engine
from nest_integrations.eval.metrics import answer_recall_strict
from nest_integrations.models import load_model

name = sys.argv[1]
n = int(sys.argv[2])
variants = json.loads(sys.argv[3])
lm = load_model(dtype="bfloat16")
docs = read_corpus(f"../shared/data/{name}/corpus.jsonl")
_, items = read_items(f"../shared/data/{name}/questions.jsonl")
random.Random(1).shuffle(items)
eng = _cached_engine(lm, docs, NestConfig(), 800, Path(".cache/nest-eval"))
for v in variants:
    t0 = time.time()
    tot = 0
    ab = 0
    uns = 0
    nsent = 0
    words = 0
    for it in items[:n]:
        r = eng.generate(it.prompt, max_new_tokens=128, **v)
        tot += answer_recall_strict(r.text, it.answers) if not r.abstained else 0
        ab += r.abstained
        if not r.abstained:
            nsent += len(r.sentences)
            uns += sum(s.support == "unsupported" for s in r.sentences)
    print(
        name,
        json.dumps(v),
        f"strict={tot / n:.3f} abst={ab / n:.2f} unsupported={uns / max(nsent, 1):.2f} ({time.time() - t0:.0f}s)",
        flush=True,
    )
