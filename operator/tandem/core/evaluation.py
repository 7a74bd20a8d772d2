"""What an Evaluation's job is told about the endpoint it asks, the same in both platforms."""

from __future__ import annotations

from tandem.api.v1alpha1 import EvaluationSpec, HybridEndpointSpec
from tandem.workloads.evaluation.job import KnowledgeBaseInfo, RouteInfo

from .errors import PlanError
from .gateway import routes
from .references import ResolvedKnowledgeBase


def evaluation_routes(
    namespace: str, name: str, endpoint: HybridEndpointSpec, spec: EvaluationSpec, raft: dict[str, bool]
) -> list[RouteInfo]:
    """The endpoint's routes (`raft`: adapter name -> trained with RAFT); every strategy's route must be
    one of them."""
    out = [
        RouteInfo(
            name=r.name,
            adapter=r.adapter,
            retrieval=r.retrieval,
            raft=bool(r.adapter) and raft.get(r.adapter or "", False),
        )
        for r in routes(endpoint)
    ]
    known = [r.name for r in out]
    for strategy in spec.strategies:
        if strategy.route not in known:
            raise PlanError(
                "UnknownRoute",
                f"spec.strategies[{strategy.name}].route: HybridEndpoint {namespace}/{name} has no route "
                f"{strategy.route} (routes: {', '.join(known)})",
            )
    return out


def knowledge_base_info(kb: ResolvedKnowledgeBase, token_file: str | None) -> KnowledgeBaseInfo:
    return KnowledgeBaseInfo(
        name=kb.name,
        collection=kb.collection,
        milvus_uri=kb.milvus_uri,
        embedding_model=kb.embedding_model,
        database=kb.database,
        token_file=token_file,
        spec=kb.spec,
    )
