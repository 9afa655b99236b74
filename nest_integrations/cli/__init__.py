"""The ``nest`` command line.

Usage::

    nest download-model [--force] [--quiet]
    nest ask QUESTION [--docs PATH ...] [--model PATH_OR_ID] [--dtype auto|float32|bfloat16|float16]
             [--method nest|ra-nest|knnlm|ra|base] [--max-new-tokens N] [--abstain off|retrieval|retrieval+support]
             [--set KEY=VALUE ...] [--chunk-size N] [--json] [--no-stream] [--html FILE] [--color auto|always|never]
    nest chat [--docs PATH ... | --store DIR] [--model ...] [--abstain ...] [--set KEY=VALUE ...] [--json]
    nest index PATH... --out DIR [--chunk-size N] [--max-tokens N] [--rebuild] [--prune]
    nest ask QUESTION --store DIR ...
    nest eval (--questions FILE [--corpus FILE] | --sample)
              [--systems base,ra,knnlm,nest,ra-nest,ra-pld,passage-dump]
              [--limit N] [--model PATH] [--set KEY=VALUE ...] [--sweep KEY=V1,V2]
              [--out report.json] [--markdown report.md] [--plot plot.png]

``nest ask`` answers over the demo corpus shipped with the package (five abridged Wikipedia
articles) or over your own ``.txt`` / ``.md`` / ``.pdf`` files (``--docs``), streams the answer, then
shows whether it is complete (``[truncated: max_new_tokens reached]``) or an abstention
(``[abstained: …]``), the support label of every sentence (``⚠ unsupported: …`` for a sentence no
retrieved passage supports, NEST.md §10), and the spans it copied verbatim with their exact place in
the documents. ``nest index`` reads files the same way (:func:`nest_integrations.loading.load_documents`,
then :func:`nest_integrations.chunks.chunks_from_documents`) and keeps a datastore in step with them
(:func:`nest_integrations.datastore.index_documents`). ``nest eval --sample`` runs the SQuAD questions
shipped with the package over the demo corpus.

One module per command group: :mod:`~nest_integrations.cli.answer` (ask, chat),
:mod:`~nest_integrations.cli.index`, :mod:`~nest_integrations.cli.evaluate`,
:mod:`~nest_integrations.cli.download`; what they share is in :mod:`~nest_integrations.cli.common`, the
registry and the entry point (:func:`main`) in :mod:`~nest_integrations.cli.main`. Heavy imports (torch,
transformers, the engine) happen inside the command functions, so parsing arguments and ``--help`` stay
cheap.
"""

from __future__ import annotations

from nest_integrations.cli.common import Command, UsageError
from nest_integrations.cli.main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "Command", "UsageError", "build_parser", "main"]
