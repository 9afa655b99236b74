"""The NEST decoding loop and its parts: kNN distribution, RRC λ, proposer, acceptors, KV cache."""

from nest_integrations.decoding.acceptor import Acceptor, LosslessAcceptor, RelaxedAcceptor, make_acceptor
from nest_integrations.decoding.knn import Neighbours, knn_distribution, mixture, rrc_lambda, search
from nest_integrations.decoding.loop import Committed, DecodeStats, NestDecoder
from nest_integrations.decoding.proposer import SpanProposer

__all__ = [
    "Acceptor",
    "Committed",
    "DecodeStats",
    "LosslessAcceptor",
    "NestDecoder",
    "Neighbours",
    "RelaxedAcceptor",
    "SpanProposer",
    "knn_distribution",
    "make_acceptor",
    "mixture",
    "rrc_lambda",
    "search",
]
