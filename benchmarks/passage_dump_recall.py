"""Strict recall of the passage-dump control (first sentence of the top chunk, default retriever) on both dev sets.

    python benchmarks/passage_dump_recall.py   # writes docs/results/passage-dump.json
"""
import json
import random
from pathlib import Path

from nest_integrations import NestConfig, NestEngine, load_model
from nest_integrations.eval import metrics as M
from nest_integrations.eval.data import read_corpus, read_items
from nest_integrations.eval.harness import PassageDumpSystem

lm = load_model(dtype="bfloat16")
out = {}
for name in ("squad-dev200", "nq-dev200"):
    corpus = read_corpus(Path("../shared/data")/name/"corpus.jsonl")
    _, items = read_items(Path("../shared/data")/name/"questions.jsonl", corpus=corpus)
    eng = NestEngine.from_documents(corpus, lm, NestConfig())
    for label, its in (("subset30-seed1", random.Random(1).sample(items, 30)), ("all200", items)):
        pd = PassageDumpSystem()
        s = [M.answer_recall_strict(pd.run(eng, it, False, 128).text, it.answers) for it in its]
        out[f"{name}/{label}"] = sum(s) / len(s)
        print(name, label, out[f"{name}/{label}"], flush=True)
Path("docs/results/passage-dump.json").write_text(json.dumps(out, indent=1))
