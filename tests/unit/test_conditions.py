from __future__ import annotations

from tandem.platform.kubernetes.conditions import Outcome, conditions_for, is_ready
from tandem.platform.kubernetes.references import reference_allowed


def by_type(conds: list[dict]) -> dict[str, dict]:
    return {c["type"]: c for c in conds}


def test_outcome_maps_to_kstatus_conditions() -> None:
    ready = by_type(conditions_for(Outcome.ready("Indexed", "ok"), 3, [], now="T1"))
    assert (ready["Ready"]["status"], ready["Reconciling"]["status"], ready["Stalled"]["status"]) == (
        "True",
        "False",
        "False",
    )
    assert ready["Ready"]["observedGeneration"] == 3 and ready["Ready"]["reason"] == "Indexed"
    stalled = by_type(conditions_for(Outcome.stalled("JobFailed", "bad"), 3, [], now="T1"))
    assert (stalled["Ready"]["status"], stalled["Stalled"]["status"]) == ("False", "True")


def test_transition_time_moves_only_when_status_changes() -> None:
    first = conditions_for(Outcome.progressing("Running", "1/2"), 1, [], now="T1")
    again = by_type(conditions_for(Outcome.progressing("Running", "2/2"), 1, first, now="T2"))
    assert again["Reconciling"]["lastTransitionTime"] == "T1"
    assert again["Reconciling"]["message"] == "2/2"
    done = by_type(conditions_for(Outcome.ready("Indexed", "ok"), 1, first, now="T3"))
    assert done["Ready"]["lastTransitionTime"] == "T3"
    assert done["Stalled"]["lastTransitionTime"] == "T1"  # was False, still False


def test_is_ready_requires_the_current_generation() -> None:
    conds = conditions_for(Outcome.ready("Indexed", "ok"), 1, [], now="T1")
    assert is_ready({"metadata": {"generation": 1}, "status": {"conditions": conds}})
    assert not is_ready({"metadata": {"generation": 2}, "status": {"conditions": conds}})
    assert not is_ready(None)


GRANT = {
    "metadata": {"namespace": "shared", "name": "g"},
    "spec": {"from": [{"kind": "HybridEndpoint", "namespace": "team-a"}], "to": [{"kind": "KnowledgeBase"}]},
}


def test_same_namespace_needs_no_grant() -> None:
    assert reference_allowed(
        from_kind="HybridEndpoint",
        from_namespace="a",
        to_kind="KnowledgeBase",
        to_namespace="a",
        to_name="kb",
        grants=[],
    )


def test_cross_namespace_needs_a_matching_grant_in_the_target_namespace() -> None:
    args = dict(from_kind="HybridEndpoint", to_kind="KnowledgeBase", to_namespace="shared", to_name="kb")
    assert reference_allowed(from_namespace="team-a", grants=[GRANT], **args)
    assert not reference_allowed(from_namespace="team-b", grants=[GRANT], **args)
    assert not reference_allowed(from_namespace="team-a", grants=[], **args)
    elsewhere = {**GRANT, "metadata": {"namespace": "team-a"}}
    assert not reference_allowed(from_namespace="team-a", grants=[elsewhere], **args)
    wrong_kind = dict(args, to_kind="AdapterTraining")
    assert not reference_allowed(from_namespace="team-a", grants=[GRANT], **wrong_kind)
    named = {**GRANT, "spec": {**GRANT["spec"], "to": [{"kind": "KnowledgeBase", "name": "other"}]}}
    assert not reference_allowed(from_namespace="team-a", grants=[named], **args)
