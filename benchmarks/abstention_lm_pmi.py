"""Does the LM help abstention? PMI of the question given the best sentences (UPR, normalised), vs the support score.

    python benchmarks/answer_sentence_study.py dump --no-lm     # the candidates (once)
    python benchmarks/abstention_lm_pmi.py                      # ~10 min on 2 shared cores (bf16)

For every question of both dev sets (answerable and unanswerable variant), the 3 candidate sentences with the
best support score get log P(question | "Passage: <sentence>\\nQuestion:") - log P(question | "Passage: \\nQuestion:")
under the default LM (mean per token). Printed: AUC of each feature and unanswerable abstention at <= 10%
answerable abstention (one threshold for both sets) for support + a x PMI.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nest_integrations.answer_selection import SUPPORT_WEIGHTS, question_likelihood
from nest_integrations.models import load_model

SETS = ("squad-dev200", "nq-dev200")


def _support(c: dict) -> float:
    return sum(w * float(c.get(k, 0.0)) for k, w in SUPPORT_WEIGHTS.items())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default=".cache/answer-sentences")
    args = ap.parse_args()
    lm = load_model(dtype="bfloat16")
    feats: dict[str, list[tuple[bool, float, float]]] = {}
    for s in SETS:
        rows = json.loads((Path(args.cache) / f"{s}.json").read_text())
        out = []
        for r in rows:
            cands = sorted(r["cands"], key=lambda c: -_support(c))[:3]
            if not cands:
                out.append((r["variant"] == "answerable", -1.0, -5.0))
                continue
            ll = question_likelihood(lm, [c["text"] for c in cands] + [""], r["question"])
            out.append((r["variant"] == "answerable", _support(cands[0]), max(x - ll[-1] for x in ll[:-1])))
        feats[s] = out
    from sklearn.metrics import roc_auc_score

    for i, name in ((1, "support"), (2, "pmi")):
        print(name, " ".join(f"{s}: auc {roc_auc_score([f[0] for f in v], [f[i] for f in v]):.3f}" for s, v in feats.items()))
    for a in (0.0, 0.05, 0.1, 0.2, 0.3):
        sc = {s: (np.array([f[0] for f in v]), np.array([f[1] + a * f[2] for f in v])) for s, v in feats.items()}
        thr = min(float(np.quantile(x[y], 0.10, method="lower")) for y, x in sc.values())
        print(
            f"support + {a} x pmi: "
            + " ".join(f"{s}: ans {np.mean(x[y] < thr):.3f} unans {np.mean(x[~y] < thr):.3f}" for s, (y, x) in sc.items())
        )


if __name__ == "__main__":
    main()
