"""The evaluation workload's input: one JSON file, written by the operator's planner (a Job) or by local
mode (`tandem eval`). One model, so both sides agree on every field."""

from __future__ import annotations

from pydantic import Field

from tandem.api.v1alpha1 import EvaluationSpec, KnowledgeBaseSpec

from ..jobs import JobContract, KnowledgeBaseTarget


class RouteInfo(JobContract):
    """A route of the endpoint, as its spec declares it."""

    name: str
    adapter: str | None = None
    retrieval: bool = True
    raft: bool = False  # the adapter comes from an AdapterTraining with spec.raft


class KnowledgeBaseInfo(KnowledgeBaseTarget):
    """How to reach a knowledge base of the endpoint (to check document ids and time a re-index)."""

    name: str
    spec: KnowledgeBaseSpec | None = None  # chunking, embedding and index: to time a re-index like its own


class RetrainInfo(JobContract):
    """The adapter behind a route, with the run time of its last training (from its status)."""

    adapter: str
    seconds: float | None = None
    recorded: str | None = None  # RFC 3339: when that training finished


class EvaluationJob(JobContract):
    namespace: str
    name: str
    gateway: str = Field(description="Base URL of the endpoint's OpenAI-compatible API, ending in /v1.")
    api_key_files: dict[str, str] = Field(
        default_factory=dict, description="Tenant name -> file holding its API key, in the endpoint's order."
    )
    routes: list[RouteInfo]
    questions: str = Field(description="Path of the question set (JSONL).")
    knowledge_bases: list[KnowledgeBaseInfo] = Field(default_factory=list)
    retrain: list[RetrainInfo] = Field(default_factory=list)
    judge_api_key_file: str | None = None
    output: str | None = Field(
        default=None, description="Directory for report.md, report.html, scorecard.json."
    )
    spec: EvaluationSpec
