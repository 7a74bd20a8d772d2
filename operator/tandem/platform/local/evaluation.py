"""`tandem eval`: an Evaluation's job built from the manifests and what `tandem up` recorded."""

from __future__ import annotations

from pathlib import Path

from tandem.api.v1alpha1 import EvaluationSpec, HybridEndpointSpec
from tandem.core.errors import PlanError
from tandem.core.evaluation import evaluation_routes, knowledge_base_info
from tandem.workloads.evaluation.job import EvaluationJob, RetrainInfo

from .manifests import Manifests, Resource, local_path
from .references import knowledge_base, secret_token_file
from .runner import WorkFailed
from .state import State


def evaluation_job(
    ev: Resource[EvaluationSpec],
    he: Resource[HybridEndpointSpec],
    manifests: Manifests,
    state: State,
    directory: Path,
    output: Path,
) -> EvaluationJob:
    served = state.resource("HybridEndpoint", he.namespace, he.name)
    raft = {}
    for adapter in he.spec.adapters:
        ref = adapter.adapter_training_ref
        if ref is not None:
            training = manifests.training(ref.namespace or he.namespace, ref.name)
            raft[adapter.name] = training is not None and training.spec.raft is not None
    try:
        routes = evaluation_routes(he.namespace, he.name, he.spec, ev.spec, raft)
    except PlanError as e:
        raise WorkFailed(e.reason, str(e)) from None
    knowledge_bases = []
    for ref in he.spec.knowledge_bases:
        kb = knowledge_base(state, manifests, ref.namespace or he.namespace, ref.name)
        knowledge_bases.append(knowledge_base_info(kb, secret_token_file(directory, manifests, kb)))
    return EvaluationJob(
        namespace=ev.namespace,
        name=ev.name,
        gateway=served.figures["url"],
        api_key_files=served.local.get("keyFiles") or {},
        routes=routes,
        questions=str(local_path(ev.spec.questions.uri or "", ev.file.parent, directory)),
        knowledge_bases=knowledge_bases,
        retrain=[_retrain(he, state, a.name) for a in he.spec.adapters],
        output=str(output),
        spec=ev.spec,
    )


def _retrain(he: Resource[HybridEndpointSpec], state: State, name: str) -> RetrainInfo:
    adapter = next(a for a in he.spec.adapters if a.name == name)
    ref = adapter.adapter_training_ref
    if ref is None:
        return RetrainInfo(adapter=name)
    trained = state.resource("AdapterTraining", ref.namespace or he.namespace, ref.name)
    return RetrainInfo(
        adapter=name,
        seconds=trained.local.get("trainingSeconds"),
        recorded=trained.local.get("trainedAt"),
    )
