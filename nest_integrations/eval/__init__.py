"""Evaluation helpers for nest-integrations (QA / completion metrics, latency summaries).

The metric functions live in :mod:`nest_integrations.eval.metrics`; import them from there. This
package module deliberately imports nothing, so ``import nest_integrations.eval`` stays cheap.
"""
