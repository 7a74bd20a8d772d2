"""The emulator refuses the built-in objects a real API server refuses (issue 14, item 2): upstream schemas,
name rules, quantities, cron schedules, labels, and a Job's immutable template."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.emulator import cron
from tests.emulator.errors import ApiError
from tests.emulator.server import Emulator


@pytest.fixture()
def emulator() -> Emulator:
    return Emulator()


def job(name: str = "ingest", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "main", "image": "worker:1", "resources": {"limits": {"memory": "8Gi"}}}
                    ],
                }
            },
            **spec,
        },
    }


def cronjob(name: str = "handbook-refresh", schedule: str = "*/30 * * * *") -> dict[str, Any]:
    template = job()["spec"]
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {"schedule": schedule, "jobTemplate": {"spec": template}},
    }


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {"selector": {"app": "x"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def refused(emulator: Emulator, obj: dict[str, Any]) -> list[str]:
    with pytest.raises(ApiError) as err:
        emulator.create(obj)
    assert err.value.code == 422, err.value.message
    return [f"{c['field']}: {c['message']}" for c in (err.value.details or {}).get("causes", [])]


def test_valid_children_are_stored(emulator: Emulator) -> None:
    for obj in (job(), cronjob(), service("assistant")):
        emulator.create(obj)


def test_a_service_name_is_a_dns_1035_label(emulator: Emulator) -> None:
    [cause] = refused(emulator, service("1st-line-bot"))
    assert cause.startswith('metadata.name: Invalid value: "1st-line-bot": a DNS-1035 label must consist of')


def test_a_cronjob_name_leaves_room_for_its_jobs(emulator: Emulator) -> None:
    name = "a" * 45 + "-refresh"  # 53 characters
    [cause] = refused(emulator, cronjob(name))
    assert cause == f'metadata.name: Invalid value: "{name}": must be no more than 52 characters'


def test_a_schedule_is_a_cron_schedule(emulator: Emulator) -> None:
    [cause] = refused(emulator, cronjob(schedule="61 25 * * *"))
    assert cause == 'spec.schedule: Invalid value: "61 25 * * *": End of range (61) above maximum (59): 61'
    assert cron.errors("*/30 * * * *") == [] and cron.errors("@hourly") == []
    assert cron.errors("0 9 * * MON-FRI") == [] and cron.errors("0 0 1 JAN ?") == []
    assert cron.errors("every hour") == ["expected exactly 5 fields, found 2: [every hour]"]
    assert cron.errors("0 24 * * *") == ["End of range (24) above maximum (23): 24"]
    assert cron.errors("*/0 * * * *") == ["Step of range should be a positive number: */0"]


def test_a_quantity_is_a_quantity(emulator: Emulator) -> None:
    bad = job()
    bad["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "8 gigs"
    [cause] = refused(emulator, bad)
    assert cause.startswith(
        'spec.template.spec.containers[0].resources.limits[memory]: Invalid value: "8 gigs": quantities must'
    )


def test_a_label_value_is_at_most_63_characters(emulator: Emulator) -> None:
    name = "x" * 64
    labelled = service("assistant")
    labelled["metadata"]["labels"] = {"tandem.dev/name": name}
    [cause] = refused(emulator, labelled)
    assert cause == f'metadata.labels: Invalid value: "{name}": must be no more than 63 characters'
    # a Job's name labels its pods
    [cause] = refused(emulator, job(name))
    assert cause == f'spec.template.labels: Invalid value: "{name}": must be no more than 63 characters'


def test_the_schema_names_a_wrong_type_and_a_missing_field(emulator: Emulator) -> None:
    bad = job()
    bad["spec"]["backoffLimit"] = "three"
    del bad["spec"]["template"]["spec"]["containers"][0]["name"]
    causes = refused(emulator, bad)
    assert "spec.backoffLimit: Invalid value: \"three\": 'three' is not of type 'integer', 'null'" in causes
    assert "spec.template.spec.containers[0].name: Required value" in causes


def test_unknown_fields_are_refused_with_strict_validation_and_dropped_otherwise(emulator: Emulator) -> None:
    rt = emulator.registry.by_kind("batch/v1", "Job")
    assert rt is not None
    body = job()
    body["spec"]["backoffLimits"] = 3
    with pytest.raises(ApiError) as err:
        emulator.store.create(rt, "team", copy.deepcopy(body), field_validation="Strict")
    assert err.value.code == 400
    assert 'strict decoding error: unknown field "spec.backoffLimits"' in err.value.message
    result = emulator.store.create(rt, "team", body)
    assert result.warnings == ['unknown field "spec.backoffLimits"']
    assert "backoffLimits" not in result.object["spec"]


def test_a_jobs_template_is_immutable(emulator: Emulator) -> None:
    created = emulator.create(job())
    rt = emulator.registry.by_kind("batch/v1", "Job")
    assert rt is not None
    changed = copy.deepcopy(created)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "worker:2"
    with pytest.raises(ApiError) as err:
        emulator.store.replace(rt, "team", "ingest", changed)
    assert err.value.code == 422
    [cause] = err.value.details["causes"]  # type: ignore[index]
    assert cause["field"] == "spec.template" and cause["message"].endswith("field is immutable")
    # what may change, does
    suspended = copy.deepcopy(created)
    suspended["spec"]["suspend"] = True
    assert emulator.store.replace(rt, "team", "ingest", suspended).object["spec"]["suspend"] is True


def test_a_deployment_selector_matches_its_template(emulator: Emulator) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "vllm", "namespace": "team"},
        "spec": {
            "selector": {"matchLabels": {"app": "vllm"}},
            "template": {
                "metadata": {"labels": {"app": "gateway"}},
                "spec": {"containers": [{"name": "vllm", "image": "vllm:1"}]},
            },
        },
    }
    [cause] = refused(emulator, deployment)
    assert cause.startswith("spec.template.metadata.labels: Invalid value:")
    assert "`selector` does not match template `labels`" in cause


def test_configmap_keys_are_file_names(emulator: Emulator) -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "team"}}
    [cause] = refused(emulator, {**config, "data": {"../token": "x"}})
    assert cause.startswith('data[../token]: Invalid value: "../token": a valid config key must consist')
