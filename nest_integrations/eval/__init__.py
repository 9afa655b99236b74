"""Evaluation helpers for nest-integrations (QA / completion metrics, latency summaries).

The metric functions live in :mod:`nest_integrations.eval.metrics`; import them from there. This
package module deliberately imports nothing, so ``import nest_integrations.eval`` stays cheap.
The harness is :mod:`nest_integrations.eval.harness` (``nest eval`` on the command line).
"""

#: the systems the harness can run (see :mod:`nest_integrations.eval.harness`)
SYSTEMS = ("base", "ra", "knnlm", "nest", "ra-nest", "ra-pld", "passage-dump")

__all__ = ["SYSTEMS"]
