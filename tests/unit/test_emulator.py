"""Tests of the Kubernetes API emulator (tests/emulator): in-process, fast, 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import copy
import json
import pathlib
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kopf
import pytest
import yaml

from tandem.api.admission import schema
from tests.emulator.runner import run_emulator
from tests.emulator.selectors import Selector, SelectorError, parse_label_selector
from tests.emulator.server import Emulator

pytest_plugins = ["tests.emulator.fixtures"]  # the k8s_emulator & k8s_kubeconfig fixtures

RAYJOB_CRD = pathlib.Path(__file__).parents[1] / "emulator" / "upstream" / "ray.io_rayjobs.yaml"

KB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["sources"],
            "x-kubernetes-validations": [
                {
                    "rule": "self.chunking.overlap < self.chunking.size",
                    "message": "overlap must be smaller than size",
                    "fieldPath": ".chunking.overlap",
                },
            ],
            "properties": {
                "sources": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 3,
                    "items": {
                        "type": "object",
                        "required": ["url"],
                        "properties": {"url": {"type": "string", "pattern": "^(https?|s3)://"}},
                    },
                },
                "index": {
                    "type": "object",
                    "default": {},
                    "properties": {"type": {"type": "string", "enum": ["HNSW", "FLAT"], "default": "HNSW"}},
                },
                "chunking": {
                    "type": "object",
                    "default": {},
                    "properties": {
                        "size": {"type": "integer", "minimum": 16, "maximum": 4096, "default": 512},
                        "overlap": {"type": "integer", "minimum": 0, "default": 64},
                    },
                },
                "model": {
                    "type": "string",
                    "x-kubernetes-validations": [
                        {"rule": "self == oldSelf", "message": "model is immutable"}
                    ],
                },
                "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 5}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "port": {"x-kubernetes-int-or-string": True},
                "note": {"type": "string", "nullable": True},
            },
        },
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}

KB_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "knowledgebases.tandem.dev"},
    "spec": {
        "group": "tandem.dev",
        "scope": "Namespaced",
        "names": {
            "kind": "KnowledgeBase",
            "listKind": "KnowledgeBaseList",
            "plural": "knowledgebases",
            "singular": "knowledgebase",
            "shortNames": ["kb"],
            "categories": ["tandem"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Index", "type": "string", "jsonPath": ".spec.index.type"},
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.chunking.size"},
                    {
                        "name": "Ready",
                        "type": "string",
                        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                    },
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": KB_SCHEMA},
            }
        ],
    },
}

KB_URL = "/apis/tandem.dev/v1/namespaces/default/knowledgebases"


def kb(name: str = "docs", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tandem.dev/v1",
        "kind": "KnowledgeBase",
        "metadata": {"name": name},
        "spec": {"sources": [{"url": "https://example.com/docs"}], **spec},
    }


def cm(name: str, labels: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, **({"labels": labels} if labels else {}), **meta},
        "data": {"k": "v"},
    }


class Api:
    """A tiny JSON client for the tests."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        data = None
        if body is not None:
            data = body if isinstance(body, str | bytes) else json.dumps(body)
        hdrs = {"Content-Type": content_type, **(headers or {})}
        async with self.session.request(
            method, self.base + path, data=data, params=params, headers=hdrs
        ) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text and text[0] in "{[" else text)

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
        return await self.call("POST", path, body, **kw)

    async def put(self, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
        return await self.call("PUT", path, body, **kw)

    async def patch(
        self, path: str, body: Any, content_type: str = "application/merge-patch+json", **kw: Any
    ) -> tuple[int, Any]:
        return await self.call("PATCH", path, body, content_type=content_type, **kw)

    async def delete(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.call("DELETE", path, body, **kw)

    async def watch(
        self, path: str, params: dict[str, str], *, count: int, timeout: float = 3
    ) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        async with self.session.get(self.base + path, params={"watch": "true", **params}) as resp:
            try:
                async with asyncio.timeout(timeout):
                    async for line in resp.content:
                        if line.strip():
                            events.append(json.loads(line))
                        if len(events) >= count:
                            break
            except TimeoutError:
                pass
        return events


@pytest.fixture()
async def emu(k8s_emulator: Emulator) -> Emulator:
    k8s_emulator.install_crds(KB_CRD)
    return k8s_emulator


@pytest.fixture()
async def api(emu: Emulator) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, emu.url)


# ---------------------------------------------------------------------------------------------------------
# 1. resourceVersion & optimistic concurrency
# ---------------------------------------------------------------------------------------------------------


async def test_resource_version_is_monotonic_cluster_wide(api: Api) -> None:
    s1, a = await api.post("/api/v1/namespaces/default/configmaps", cm("a"))
    s2, b = await api.post(KB_URL, kb("x"))
    s3, a2 = await api.patch("/api/v1/namespaces/default/configmaps/a", {"data": {"k": "w"}})
    assert (s1, s2, s3) == (201, 201, 200)
    rvs = [int(o["metadata"]["resourceVersion"]) for o in (a, b, a2)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    assert all(isinstance(o["metadata"]["resourceVersion"], str) for o in (a, b, a2))

    status, lst = await api.get("/api/v1/namespaces/default/configmaps")
    assert status == 200
    assert lst["kind"] == "ConfigMapList" and lst["apiVersion"] == "v1"
    assert int(lst["metadata"]["resourceVersion"]) >= rvs[-1]
    status, lst = await api.get(KB_URL)
    assert lst["kind"] == "KnowledgeBaseList" and lst["apiVersion"] == "tandem.dev/v1"


async def test_stale_resource_version_conflicts(api: Api) -> None:
    _, obj = await api.post(KB_URL, kb("x"))
    stale = copy.deepcopy(obj)
    _, obj2 = await api.patch(f"{KB_URL}/x", {"metadata": {"labels": {"a": "b"}}})
    assert obj2["metadata"]["resourceVersion"] != stale["metadata"]["resourceVersion"]

    stale["spec"]["chunking"]["size"] = 100
    status, err = await api.put(f"{KB_URL}/x", stale)
    assert status == 409
    assert err["kind"] == "Status" and err["reason"] == "Conflict" and err["code"] == 409
    assert err["message"] == (
        'Operation cannot be fulfilled on knowledgebases.tandem.dev "x": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )

    status, err = await api.patch(
        f"{KB_URL}/x",
        {"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]}, "spec": {"model": "m"}},
    )
    assert status == 409 and err["reason"] == "Conflict"

    status, err = await api.delete(
        f"{KB_URL}/x", {"preconditions": {"resourceVersion": stale["metadata"]["resourceVersion"]}}
    )
    assert status == 409 and err["reason"] == "Conflict"

    status, _ = await api.patch(
        f"{KB_URL}/x",
        {"metadata": {"resourceVersion": obj2["metadata"]["resourceVersion"]}, "spec": {"model": "m"}},
    )
    assert status == 200


async def test_noop_writes_do_not_bump_resource_version(api: Api, emu: Emulator) -> None:
    _, obj = await api.post(KB_URL, kb("x"))
    rv = emu.store.resource_version
    status, same = await api.patch(f"{KB_URL}/x", {"spec": {"chunking": {"size": 512}}})
    assert status == 200
    assert same["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
    assert emu.store.resource_version == rv


# ---------------------------------------------------------------------------------------------------------
# 2. uid, creationTimestamp, AlreadyExists, generateName
# ---------------------------------------------------------------------------------------------------------


async def test_create_sets_uid_timestamp_and_rejects_duplicates(api: Api) -> None:
    _, obj = await api.post(KB_URL, kb("x"))
    meta = obj["metadata"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", meta["uid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert meta["namespace"] == "default" and meta["generation"] == 1

    status, err = await api.post(KB_URL, kb("x"))
    assert status == 409 and err["reason"] == "AlreadyExists"
    assert err["message"] == 'knowledgebases.tandem.dev "x" already exists'


async def test_generate_name(api: Api) -> None:
    body = cm("")
    body["metadata"] = {"generateName": "job-"}
    status, obj = await api.post("/api/v1/namespaces/default/configmaps", body)
    assert status == 201
    assert re.fullmatch(r"job-[a-z0-9]{5}", obj["metadata"]["name"])
    status, err = await api.post("/api/v1/namespaces/default/configmaps", {"metadata": {}})
    assert status == 422 and err["reason"] == "Invalid"


async def test_invalid_name_is_rejected(api: Api) -> None:
    status, err = await api.post("/api/v1/namespaces/default/configmaps", cm("Bad_Name"))
    assert status == 422
    assert err["details"]["causes"][0]["field"] == "metadata.name"


# ---------------------------------------------------------------------------------------------------------
# 3 & 4. generation, status subresource, patch types
# ---------------------------------------------------------------------------------------------------------


async def test_generation_bumps_on_spec_changes_only(api: Api) -> None:
    _, obj = await api.post(KB_URL, kb("x"))
    assert obj["metadata"]["generation"] == 1
    _, obj = await api.patch(f"{KB_URL}/x", {"metadata": {"labels": {"a": "b"}, "annotations": {"c": "d"}}})
    assert obj["metadata"]["generation"] == 1
    _, obj = await api.patch(f"{KB_URL}/x/status", {"status": {"phase": "Ready"}})
    assert obj["metadata"]["generation"] == 1
    _, obj = await api.patch(f"{KB_URL}/x", {"spec": {"chunking": {"size": 1024}}})
    assert obj["metadata"]["generation"] == 2

    # Built-in kinds: any top-level field except metadata/status.
    _, c = await api.post("/api/v1/namespaces/default/configmaps", cm("c"))
    _, c = await api.patch("/api/v1/namespaces/default/configmaps/c", {"data": {"k": "new"}})
    assert c["metadata"]["generation"] == 2


async def test_status_subresource_separation(api: Api) -> None:
    body = kb("x")
    body["status"] = {"phase": "Faked"}
    _, obj = await api.post(KB_URL, body)
    assert "status" not in obj  # ignored on create

    _, obj = await api.patch(f"{KB_URL}/x", {"status": {"phase": "Ignored"}, "spec": {"model": "m"}})
    assert "status" not in obj and obj["spec"]["model"] == "m"

    _, obj = await api.patch(
        f"{KB_URL}/x/status",
        {"status": {"phase": "Ready"}, "spec": {"model": "z"}, "metadata": {"labels": {"x": "y"}}},
    )
    assert obj["status"] == {"phase": "Ready"}
    assert obj["spec"]["model"] == "m" and "labels" not in obj["metadata"]

    # PUT to the main resource keeps the status; PUT to /status keeps the spec.
    obj["spec"]["chunking"]["size"] = 100
    obj["status"] = {"phase": "Lost"}
    status, obj = await api.put(f"{KB_URL}/x", obj)
    assert status == 200 and obj["status"] == {"phase": "Ready"} and obj["spec"]["chunking"]["size"] == 100
    obj["status"] = {"phase": "Done"}
    obj["spec"]["chunking"]["size"] = 200
    status, obj = await api.put(f"{KB_URL}/x/status", obj)
    assert status == 200 and obj["status"] == {"phase": "Done"} and obj["spec"]["chunking"]["size"] == 100

    status, got = await api.get(f"{KB_URL}/x/status")
    assert status == 200 and got["status"] == {"phase": "Done"}


async def test_no_status_subresource_for_peering_crds(api: Api) -> None:
    body = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "p"}, "status": {"a": 1}}
    status, obj = await api.post("/apis/kopf.dev/v1/namespaces/default/kopfpeerings", body)
    assert status == 201 and obj["status"] == {"a": 1}
    status, obj = await api.patch("/apis/kopf.dev/v1/namespaces/default/kopfpeerings/p", {"status": {"a": 2}})
    assert status == 200 and obj["status"] == {"a": 2}
    assert obj["metadata"]["generation"] == 2  # without the subresource, status is just a field
    status, _ = await api.patch("/apis/kopf.dev/v1/namespaces/default/kopfpeerings/p/status", {})
    assert status == 404
    status, obj = await api.get("/apis/kopf.dev/v1/clusterkopfpeerings")
    assert status == 200


async def test_merge_patch_null_deletes_keys(api: Api) -> None:
    await api.post("/api/v1/namespaces/default/configmaps", cm("m", labels={"a": "1", "b": "2"}))
    _, obj = await api.patch(
        "/api/v1/namespaces/default/configmaps/m",
        {"metadata": {"labels": {"a": None}}, "data": {"k": None, "n": "x"}},
    )
    assert obj["metadata"]["labels"] == {"b": "2"}
    assert obj["data"] == {"n": "x"}


async def test_json_patch(api: Api) -> None:
    _, obj = await api.post(KB_URL, kb("x"))
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": obj["metadata"]["resourceVersion"]},
        {"op": "add", "path": "/metadata/finalizers", "value": ["f1"]},
        {"op": "replace", "path": "/spec/chunking/size", "value": 1000},
    ]
    status, obj = await api.patch(f"{KB_URL}/x", ops, content_type="application/json-patch+json")
    assert (
        status == 200 and obj["metadata"]["finalizers"] == ["f1"] and obj["spec"]["chunking"]["size"] == 1000
    )
    status, _ = await api.patch(f"{KB_URL}/x", ops, content_type="application/json-patch+json")
    assert status == 422  # the failed "test" op


async def test_strategic_merge_patch_merges_named_lists(api: Api) -> None:
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {
                    "containers": [
                        {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]},
                        {"name": "b", "image": "b:1"},
                    ]
                },
            },
        },
    }
    await api.post("/apis/apps/v1/namespaces/default/deployments", deploy)
    smp = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                    "containers": [{"name": "b", "image": "b:2"}],
                }
            }
        }
    }
    status, obj = await api.patch(
        "/apis/apps/v1/namespaces/default/deployments/d",
        smp,
        content_type="application/strategic-merge-patch+json",
    )
    assert status == 200
    containers = obj["spec"]["template"]["spec"]["containers"]
    assert containers == [
        {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]},
        {"name": "b", "image": "b:2"},
    ]
    assert obj["metadata"]["generation"] == 2

    # Custom resources do not support the strategic merge patch (as in the apiserver).
    await api.post(KB_URL, kb("x"))
    status, err = await api.patch(
        f"{KB_URL}/x", {"spec": {}}, content_type="application/strategic-merge-patch+json"
    )
    assert status == 415 and err["reason"] == "UnsupportedMediaType"


async def test_apply_patch_creates_and_updates(api: Api) -> None:
    manifest = yaml.safe_dump(kb("applied"))
    status, _ = await api.patch(f"{KB_URL}/applied", manifest, content_type="application/apply-patch+yaml")
    assert status == 422  # fieldManager is required
    params = {"fieldManager": "test", "force": "true"}
    status, obj = await api.patch(
        f"{KB_URL}/applied", manifest, content_type="application/apply-patch+yaml", params=params
    )
    assert status == 201 and obj["metadata"]["generation"] == 1
    status, obj = await api.patch(
        f"{KB_URL}/applied", manifest, content_type="application/apply-patch+yaml", params=params
    )
    assert status == 200 and obj["metadata"]["generation"] == 1
    changed = yaml.safe_dump(kb("applied", model="m2"))
    status, obj = await api.patch(
        f"{KB_URL}/applied", changed, content_type="application/apply-patch+yaml", params=params
    )
    assert status == 200 and obj["spec"]["model"] == "m2" and obj["metadata"]["generation"] == 2


# ---------------------------------------------------------------------------------------------------------
# 5. namespaces
# ---------------------------------------------------------------------------------------------------------


async def test_namespace_from_url_and_mismatch(api: Api) -> None:
    status, obj = await api.post("/api/v1/namespaces/team-a/configmaps", cm("c"))
    assert status == 201 and obj["metadata"]["namespace"] == "team-a"
    status, err = await api.post("/api/v1/namespaces/team-a/configmaps", cm("d", namespace="team-b"))
    assert status == 400 and err["reason"] == "BadRequest"
    assert "does not match the namespace" in err["message"]


async def test_namespaces_are_objects(api: Api) -> None:
    await api.post("/api/v1/namespaces/implicit/configmaps", cm("c"))
    status, ns = await api.post(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "explicit"}}
    )
    assert status == 201
    status, lst = await api.get("/api/v1/namespaces")
    assert status == 200 and lst["kind"] == "NamespaceList"
    names = {item["metadata"]["name"] for item in lst["items"]}
    assert {"default", "kube-system", "implicit", "explicit"} <= names
    status, ns = await api.get("/api/v1/namespaces/implicit")
    assert status == 200 and ns["status"]["phase"] == "Active"

    status, v1 = await api.get("/api/v1")
    assert status == 200 and v1["groupVersion"] == "v1" and v1["kind"] == "APIResourceList"


async def test_namespace_deletion_deletes_content(api: Api, emu: Emulator) -> None:
    await api.post("/api/v1/namespaces/doomed/configmaps", cm("c1"))
    await api.post("/api/v1/namespaces/doomed/configmaps", cm("c2", finalizers=["x/y"]))
    status, ns = await api.delete("/api/v1/namespaces/doomed")
    assert status == 200 and ns["status"]["phase"] == "Terminating"
    assert emu.get("configmaps", "doomed", "c1") is None
    assert (emu.get("configmaps", "doomed", "c2") or {})["metadata"]["deletionTimestamp"]
    status, _ = await api.post("/api/v1/namespaces/doomed/configmaps", cm("c3"))
    assert status == 403
    await api.patch("/api/v1/namespaces/doomed/configmaps/c2", {"metadata": {"finalizers": None}})
    assert emu.get("configmaps", "doomed", "c2") is None
    assert emu.get("namespaces", None, "doomed") is None


# ---------------------------------------------------------------------------------------------------------
# 6. selectors
# ---------------------------------------------------------------------------------------------------------


def test_label_selector_parsing_and_matching() -> None:
    def match(sel: str, labels: dict[str, str]) -> bool:
        return Selector.parse(sel, None).matches({"metadata": {"labels": labels}})

    assert match("a=1", {"a": "1"}) and not match("a=1", {"a": "2"}) and not match("a=1", {})
    assert match("a==1", {"a": "1"})
    assert match("a!=1", {"a": "2"}) and match("a!=1", {}) and not match("a!=1", {"a": "1"})
    assert (
        match("a in (1, 2)", {"a": "2"}) and not match("a in (1,2)", {"a": "3"}) and not match("a in (1)", {})
    )
    assert (
        match("a notin (1,2)", {"a": "3"})
        and match("a notin (1)", {})
        and not match("a notin (1)", {"a": "1"})
    )
    assert match("a", {"a": ""}) and not match("a", {"b": "1"})
    assert match("!a", {"b": "1"}) and not match("!a", {"a": "1"})
    assert match(
        "app.kubernetes.io/name=x,tier in (web),!legacy", {"app.kubernetes.io/name": "x", "tier": "web"}
    )
    with pytest.raises(SelectorError):
        parse_label_selector("a=1,")


async def test_selectors_on_list(api: Api) -> None:
    await api.post("/api/v1/namespaces/default/configmaps", cm("a", {"app": "x", "tier": "web"}))
    await api.post("/api/v1/namespaces/default/configmaps", cm("b", {"app": "y"}))
    await api.post("/api/v1/namespaces/other/configmaps", cm("c", {"app": "x"}))

    async def names(path: str, **params: str) -> list[str]:
        status, lst = await api.get(path, params=params)
        assert status == 200, lst
        return sorted(item["metadata"]["name"] for item in lst["items"])

    assert await names("/api/v1/configmaps", labelSelector="app=x") == ["a", "c"]
    assert await names("/api/v1/namespaces/default/configmaps", labelSelector="app=x") == ["a"]
    assert await names("/api/v1/configmaps", labelSelector="app in (x,y),!tier") == ["b", "c"]
    assert await names("/api/v1/configmaps", labelSelector="tier") == ["a"]
    assert await names("/api/v1/configmaps", labelSelector="app notin (x)") == ["b"]
    assert await names("/api/v1/configmaps", fieldSelector="metadata.name=b") == ["b"]
    assert await names("/api/v1/configmaps", fieldSelector="metadata.namespace!=default") == ["c"]
    assert await names("/api/v1/configmaps", fieldSelector="metadata.namespace=default,metadata.name!=a") == [
        "b"
    ]
    status, _ = await api.get("/api/v1/configmaps", params={"labelSelector": "a in ("})
    assert status == 400


# ---------------------------------------------------------------------------------------------------------
# 7. PUT
# ---------------------------------------------------------------------------------------------------------


async def test_put_replaces(api: Api) -> None:
    _, obj = await api.post("/api/v1/namespaces/default/configmaps", cm("p", {"a": "1"}))
    obj["data"] = {"only": "this"}
    obj["metadata"]["labels"] = {"b": "2"}
    status, new = await api.put("/api/v1/namespaces/default/configmaps/p", obj)
    assert status == 200 and new["data"] == {"only": "this"} and new["metadata"]["labels"] == {"b": "2"}
    assert new["metadata"]["uid"] == obj["metadata"]["uid"]
    status, err = await api.put("/api/v1/namespaces/default/configmaps/p", obj)  # stale now
    assert status == 409
    status, err = await api.put("/api/v1/namespaces/default/configmaps/nope", cm("nope"))
    assert status == 404 and err["reason"] == "NotFound"
    assert err["message"] == 'configmaps "nope" not found'
    # Custom resources require the resourceVersion on PUT.
    _, k = await api.post(KB_URL, kb("x"))
    del k["metadata"]["resourceVersion"]
    status, err = await api.put(f"{KB_URL}/x", k)
    assert status == 422


# ---------------------------------------------------------------------------------------------------------
# 8. watching
# ---------------------------------------------------------------------------------------------------------


async def test_watch_from_scratch_and_resume(api: Api) -> None:
    _, a = await api.post("/api/v1/namespaces/default/configmaps", cm("a"))
    events = await api.watch("/api/v1/namespaces/default/configmaps", {}, count=1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]

    rv = a["metadata"]["resourceVersion"]
    await api.patch("/api/v1/namespaces/default/configmaps/a", {"data": {"k": "2"}})
    await api.post("/api/v1/namespaces/default/configmaps", cm("b"))
    await api.delete("/api/v1/namespaces/default/configmaps/a")
    events = await api.watch("/api/v1/namespaces/default/configmaps", {"resourceVersion": rv}, count=3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", "a"),
        ("ADDED", "b"),
        ("DELETED", "a"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)


async def test_watch_live_events_and_selectors(api: Api) -> None:
    _, a = await api.post("/api/v1/namespaces/default/configmaps", cm("a", {"app": "x"}))
    rv = a["metadata"]["resourceVersion"]

    async def writer() -> None:
        await asyncio.sleep(0.1)
        await api.post("/api/v1/namespaces/default/configmaps", cm("b", {"app": "y"}))
        await api.patch("/api/v1/namespaces/default/configmaps/a", {"metadata": {"labels": {"app": "z"}}})
        await api.patch("/api/v1/namespaces/default/configmaps/b", {"metadata": {"labels": {"app": "x"}}})

    task = asyncio.create_task(writer())
    events = await api.watch(
        "/api/v1/namespaces/default/configmaps", {"resourceVersion": rv, "labelSelector": "app=x"}, count=2
    )
    await task
    # Leaving the selector looks like a deletion, entering it — like an addition (as in the apiserver).
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("DELETED", "a"),
        ("ADDED", "b"),
    ]


async def test_watch_too_old_resource_version_is_gone() -> None:
    async with run_emulator(history_size=2) as emu, aiohttp.ClientSession() as session:
        api = Api(session, emu.url)
        _, first = await api.post("/api/v1/namespaces/default/configmaps", cm("a"))
        for i in range(4):
            await api.patch("/api/v1/namespaces/default/configmaps/a", {"data": {"i": str(i)}})
        events = await api.watch(
            "/api/v1/namespaces/default/configmaps",
            {"resourceVersion": first["metadata"]["resourceVersion"]},
            count=1,
        )
        assert len(events) == 1 and events[0]["type"] == "ERROR"
        assert events[0]["object"]["code"] == 410 and events[0]["object"]["kind"] == "Status"
        assert "too old resource version" in events[0]["object"]["message"]


async def test_watch_timeout_seconds(api: Api) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with api.session.get(
        api.base + "/api/v1/namespaces/default/configmaps",
        params={"watch": "true", "timeoutSeconds": "1", "resourceVersion": "1"},
    ) as resp:
        assert await resp.read() == b""
    assert 0.9 <= loop.time() - started < 3


async def test_watch_single_object_by_name(api: Api) -> None:
    await api.post("/api/v1/namespaces/default/configmaps", cm("a"))
    await api.post("/api/v1/namespaces/default/configmaps", cm("b"))
    events = await api.watch("/api/v1/namespaces/default/configmaps/b", {"timeoutSeconds": "1"}, count=5)
    assert [e["object"]["metadata"]["name"] for e in events] == ["b"]


# ---------------------------------------------------------------------------------------------------------
# 9. finalizers & garbage collection
# ---------------------------------------------------------------------------------------------------------


def owner_ref(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


async def test_finalizers_block_deletion(api: Api, emu: Emulator) -> None:
    await api.post(KB_URL, {**kb("x"), "metadata": {"name": "x", "finalizers": ["a/b"]}})
    status, obj = await api.delete(f"{KB_URL}/x")
    assert status == 200 and obj["metadata"]["deletionTimestamp"] and obj["metadata"]["generation"] == 2
    status, obj = await api.get(f"{KB_URL}/x")
    assert status == 200
    status, _ = await api.patch(f"{KB_URL}/x", {"metadata": {"finalizers": ["a/b", "c/d"]}})
    assert status == 422  # no new finalizers on deleted objects
    status, obj = await api.patch(f"{KB_URL}/x", {"metadata": {"finalizers": []}})
    assert status == 200
    assert emu.get("knowledgebases.tandem.dev", "default", "x") is None


async def test_garbage_collection_cascades(api: Api, emu: Emulator) -> None:
    _, owner = await api.post(KB_URL, kb("owner"))
    _, child = await api.post(
        "/api/v1/namespaces/default/configmaps", cm("child", ownerReferences=[owner_ref(owner)])
    )
    await api.post(
        "/api/v1/namespaces/default/configmaps", cm("grandchild", ownerReferences=[owner_ref(child)])
    )
    await api.post(
        "/api/v1/namespaces/default/configmaps",
        cm("sticky", ownerReferences=[owner_ref(owner)], finalizers=["keep/me"]),
    )
    _, shared = await api.post("/api/v1/namespaces/default/configmaps", cm("other-owner"))
    await api.post(
        "/api/v1/namespaces/default/configmaps",
        cm("co-owned", ownerReferences=[owner_ref(owner), owner_ref(shared)]),
    )

    status, _ = await api.delete(f"{KB_URL}/owner")
    assert status == 200
    assert emu.get("configmaps", "default", "child") is None
    assert emu.get("configmaps", "default", "grandchild") is None
    assert (emu.get("configmaps", "default", "sticky") or {})["metadata"]["deletionTimestamp"]
    remaining = emu.get("configmaps", "default", "co-owned")
    assert remaining is not None
    assert [r["name"] for r in remaining["metadata"]["ownerReferences"]] == ["other-owner"]


async def test_orphan_propagation(api: Api, emu: Emulator) -> None:
    _, owner = await api.post(KB_URL, kb("owner"))
    await api.post("/api/v1/namespaces/default/configmaps", cm("child", ownerReferences=[owner_ref(owner)]))
    status, _ = await api.delete(
        f"{KB_URL}/owner", {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Orphan"}
    )
    assert status == 200
    child = emu.get("configmaps", "default", "child")
    assert child is not None and "ownerReferences" not in child["metadata"]


# ---------------------------------------------------------------------------------------------------------
# 10. CRDs & discovery
# ---------------------------------------------------------------------------------------------------------


async def test_discovery_reflects_crds(api: Api) -> None:
    status, groups = await api.get("/apis")
    assert status == 200 and groups["kind"] == "APIGroupList"
    names = {g["name"] for g in groups["groups"]}
    assert {
        "tandem.dev",
        "kopf.dev",
        "apps",
        "batch",
        "autoscaling",
        "networking.k8s.io",
        "coordination.k8s.io",
        "events.k8s.io",
        "apiextensions.k8s.io",
    } <= names

    status, rl = await api.get("/apis/tandem.dev/v1")
    assert status == 200 and rl["groupVersion"] == "tandem.dev/v1"
    by_name = {r["name"]: r for r in rl["resources"]}
    kbr = by_name["knowledgebases"]
    assert kbr["kind"] == "KnowledgeBase" and kbr["singularName"] == "knowledgebase"
    assert kbr["shortNames"] == ["kb"] and kbr["categories"] == ["tandem"] and kbr["namespaced"] is True
    assert {"get", "list", "watch", "create", "update", "patch", "delete"} <= set(kbr["verbs"])
    assert "knowledgebases/status" in by_name

    status, rl = await api.get("/apis/kopf.dev/v1")
    peering = {r["name"]: r for r in rl["resources"]}
    assert peering["clusterkopfpeerings"]["namespaced"] is False
    assert peering["kopfpeerings"]["namespaced"] is True

    status, version = await api.get("/version")
    assert status == 200 and version["major"] == "1"
    status, _ = await api.get("/apis/nope.dev/v1")
    assert status == 404


async def test_crds_via_api(api: Api) -> None:
    crd = copy.deepcopy(KB_CRD)
    crd["metadata"]["name"] = "gadgets.example.dev"
    crd["spec"]["group"] = "example.dev"
    crd["spec"]["scope"] = "Cluster"
    crd["spec"]["names"] = {"kind": "Gadget", "plural": "gadgets", "singular": "gadget", "shortNames": ["gd"]}
    status, created = await api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert status == 201
    assert {c["type"] for c in created["status"]["conditions"]} == {"NamesAccepted", "Established"}
    status, rl = await api.get("/apis/example.dev/v1")
    assert (
        status == 200
        and rl["resources"][0]["name"] == "gadgets"
        and rl["resources"][0]["namespaced"] is False
    )
    body = {
        "apiVersion": "example.dev/v1",
        "kind": "Gadget",
        "metadata": {"name": "g"},
        "spec": {"sources": [{"url": "http://x"}]},
    }
    status, obj = await api.post("/apis/example.dev/v1/gadgets", body)
    assert status == 201 and "namespace" not in obj["metadata"]
    status, _ = await api.delete(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.dev"
    )
    assert status == 200
    status, _ = await api.get("/apis/example.dev/v1/gadgets")
    assert status == 404

    bad = copy.deepcopy(crd)
    bad["metadata"]["name"] = "wrong.example.dev"
    status, err = await api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", bad)
    assert status == 422 and err["details"]["causes"][0]["field"] == "metadata.name"


async def test_install_crds_from_directory(k8s_emulator: Emulator, tmp_path: pathlib.Path) -> None:
    crd = copy.deepcopy(KB_CRD)
    (tmp_path / "kb.yaml").write_text(yaml.safe_dump(crd) + "---\n" + yaml.safe_dump(cm("not-a-crd")))
    installed = k8s_emulator.install_crds(tmp_path)
    assert [rt.plural for rt in installed] == ["knowledgebases"]
    assert k8s_emulator.resource_type("kb").qualified_name == "knowledgebases.tandem.dev"
    installed = k8s_emulator.install_crds(tmp_path)  # idempotent
    assert len(installed) == 1


async def test_openapi_v3(api: Api) -> None:
    status, index = await api.get("/openapi/v3")
    assert status == 200 and "apis/tandem.dev/v1" in index["paths"]
    status, doc = await api.get(index["paths"]["apis/tandem.dev/v1"]["serverRelativeURL"])
    assert status == 200
    schemas = doc["components"]["schemas"]
    kb_schema = next(
        s
        for s in schemas.values()
        if s.get("x-kubernetes-group-version-kind")
        == [{"group": "tandem.dev", "version": "v1", "kind": "KnowledgeBase"}]
    )
    assert "chunking" in kb_schema["properties"]["spec"]["properties"]


async def test_table_output_uses_printer_columns(api: Api) -> None:
    await api.post(KB_URL, kb("x", index={"type": "FLAT"}))
    await api.patch(f"{KB_URL}/x/status", {"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    status, table = await api.get(KB_URL, headers={"Accept": accept})
    assert status == 200 and table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Index", "Size", "Ready", "Age"]
    cells = table["rows"][0]["cells"]
    assert cells[:4] == ["x", "FLAT", 512, "True"] and re.fullmatch(r"\d+s", cells[4])
    assert table["rows"][0]["object"]["metadata"]["name"] == "x"


# ---------------------------------------------------------------------------------------------------------
# 11. schema validation (pure) and via HTTP
# ---------------------------------------------------------------------------------------------------------


def check(
    obj: dict[str, Any],
    old: dict[str, Any] | None = None,
    sch: dict[str, Any] = KB_SCHEMA,
    keep_nil: bool = False,
) -> list[str]:
    obj = copy.deepcopy(obj)
    schema.prepare(sch, obj)
    return [str(c) for c in schema.validate(sch, obj, old) if keep_nil or c.field != "<nil>"]


def test_schema_defaults_are_applied_recursively() -> None:
    obj: dict[str, Any] = {"spec": {"sources": [{"url": "http://x"}]}}
    schema.apply_defaults(KB_SCHEMA, obj)
    assert obj["spec"]["index"] == {"type": "HNSW"}
    assert obj["spec"]["chunking"] == {"size": 512, "overlap": 64}
    obj = {"spec": {"sources": [], "chunking": {"size": 100}, "note": None, "index": None}}
    schema.apply_defaults(KB_SCHEMA, obj)
    assert obj["spec"]["chunking"] == {"size": 100, "overlap": 64}
    assert obj["spec"]["note"] is None  # nullable: kept
    assert obj["spec"]["index"] == {"type": "HNSW"}  # non-nullable null: dropped, then defaulted


def test_schema_pruning() -> None:
    obj = {
        "apiVersion": "x",
        "kind": "y",
        "metadata": {"name": "n", "labels": {"a": "b"}},
        "spec": {
            "sources": [{"url": "http://x", "junk": 1}],
            "junk": 2,
            "extra": {"any": {"thing": 1}},
            "labels": {"free": "form"},
        },
        "status": {"whatever": True},
        "junk": 3,
    }
    assert schema.unknown_fields(KB_SCHEMA, obj) == ["spec.sources[0].junk", "spec.junk", "junk"]
    schema.prune(KB_SCHEMA, obj)
    assert obj == {
        "apiVersion": "x",
        "kind": "y",
        "metadata": {"name": "n", "labels": {"a": "b"}},
        "spec": {
            "sources": [{"url": "http://x"}],
            "extra": {"any": {"thing": 1}},
            "labels": {"free": "form"},
        },
        "status": {"whatever": True},
    }


def test_schema_validation_messages() -> None:
    assert check({"spec": {}}) == ["spec.sources: Required value"]
    assert check({"spec": {"sources": [{"url": "http://x"}], "chunking": {"size": 5000}}}) == [
        "spec.chunking.size: Invalid value: 5000: "
        "spec.chunking.size in body should be less than or equal to 4096"
    ]
    assert check({"spec": {"sources": [{"url": "http://x"}], "chunking": {"size": 1, "overlap": 0}}}) == [
        "spec.chunking.size: Invalid value: 1: "
        "spec.chunking.size in body should be greater than or equal to 16"
    ]
    assert check({"spec": {"sources": [{"url": "http://x"}], "index": {"type": "FOO"}}}) == [
        'spec.index.type: Unsupported value: "FOO": supported values: "HNSW", "FLAT"'
    ]
    assert check({"spec": {"sources": "x"}})[0] == (
        'spec.sources: Invalid value: "string": spec.sources in body must be of type array: "string"'
    )
    assert check({"spec": {"sources": []}}) == [
        "spec.sources: Invalid value: 0: spec.sources in body should have at least 1 items"
    ]
    assert check({"spec": {"sources": [{"url": "http://x"}] * 4}}) == [
        "spec.sources: Too many: 4: must have at most 3 items"
    ]
    assert check({"spec": {"sources": [{"url": "ftp://x"}]}}) == [
        "spec.sources[0].url: Invalid value: \"ftp://x\": spec.sources[0].url in body should match '^(https?|s3)://'"
    ]
    assert check({"spec": {"sources": [{}]}}) == ["spec.sources[0].url: Required value"]
    assert check({"spec": {"sources": [{"url": "http://x"}], "labels": {"k": "toolong"}}}) == [
        "spec.labels[k]: Too long: may not be more than 5 bytes"
    ]
    assert check({"spec": {"sources": [{"url": "http://x"}], "port": 80}}) == []
    assert check({"spec": {"sources": [{"url": "http://x"}], "port": "http"}}) == []
    assert check({"spec": {"sources": [{"url": "http://x"}], "port": 1.5}})[0].startswith(
        'spec.port: Invalid value: "number": spec.port in body must be of type integer,string'
    )
    assert check({"spec": {"sources": [{"url": "http://x"}], "chunking": {"size": True}}})[0].startswith(
        'spec.chunking.size: Invalid value: "boolean"'
    )


def test_schema_numeric_string_object_constraints() -> None:
    sch = {
        "type": "object",
        "properties": {
            "a": {
                "type": "number",
                "maximum": 10,
                "exclusiveMaximum": True,
                "minimum": 0,
                "exclusiveMinimum": True,
            },
            "b": {"type": "string", "minLength": 2, "format": "date-time"},
            "c": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 2,
                "additionalProperties": {"type": "integer", "format": "int32"},
            },
            "d": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "e": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}}},
            },
        },
    }
    assert (
        check(
            {
                "a": 5,
                "b": "2024-01-01T00:00:00Z",
                "c": {"x": 1},
                "d": ["a", "b"],
                "e": [{"name": "a"}, {"name": "b"}],
            },
            sch=sch,
        )
        == []
    )
    assert check({"a": 10}, sch=sch) == ["a: Invalid value: 10: a in body should be less than 10"]
    assert check({"a": 0}, sch=sch) == ["a: Invalid value: 0: a in body should be greater than 0"]
    assert check({"b": "x"}, sch=sch) == [
        'b: Invalid value: "x": b in body must be of type date-time: "x"',
        'b: Invalid value: "x": b in body should be at least 2 chars long',
    ]
    assert check({"c": {}}, sch=sch) == ["c: Invalid value: 0: c in body should have at least 1 properties"]
    assert check({"c": {"x": 1, "y": 2, "z": 3}}, sch=sch) == ["c: Too many: 3: must have at most 2 items"]
    assert check({"c": {"x": 2**40}}, sch=sch) == [
        "c[x]: Invalid value: 1099511627776: c[x] in body must be of type int32: 1099511627776"
    ]
    assert check({"d": ["a", "a"]}, sch=sch) == ['d[1]: Duplicate value: "a"']
    assert check({"e": [{"name": "a"}, {"name": "a"}]}, sch=sch) == ['e[1]: Duplicate value: {"name":"a"}']


def test_cel_rules() -> None:
    ok = {"spec": {"sources": [{"url": "http://x"}]}}
    assert check(ok) == []
    bad = {"spec": {"sources": [{"url": "http://x"}], "chunking": {"size": 100, "overlap": 200}}}
    assert check(bad) == ['spec.chunking.overlap: Invalid value: "object": overlap must be smaller than size']

    # Transition rules: skipped on create, evaluated on update.
    new = {"spec": {"sources": [{"url": "http://x"}], "model": "b"}}
    assert check(new) == []
    assert check(new, old={"spec": {"model": "a"}}) == [
        'spec.model: Invalid value: "string": model is immutable'
    ]
    assert check(new, old={"spec": {"model": "b"}}) == []
    assert check(new, old={"spec": {}}) == []  # a newly added field: no oldSelf

    sch: dict[str, Any] = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "urls": {"type": "array", "items": {"type": "string"}},
                    "n": {"type": "integer"},
                },
                "x-kubernetes-validations": [
                    {"rule": 'self.name.lowerAscii().startsWith("ab") && self.name.matches("^[a-zA-Z]+$")'},
                    {
                        "rule": 'self.urls.all(u, isURL(u)) && self.urls.exists_one(u, u.endsWith(".dev"))',
                        "messageExpression": '"bad urls: " + string(size(self.urls))',
                    },
                    {
                        "rule": "has(self.n) && self.n > 0",
                        "message": "n must be positive",
                        "reason": "FieldValueForbidden",
                        "fieldPath": ".n",
                    },
                    {
                        "rule": 'size(self.urls.filter(u, u.contains("x"))) == '
                        "size(self.urls.map(u, u).filter(u, false))"
                    },
                ],
            }
        },
    }
    good = {"spec": {"name": "ABc", "urls": ["https://a.dev", "https://b.com"], "n": 1}}
    assert check(good, sch=sch) == []
    bad2 = {"spec": {"name": "zz", "urls": ["nope", "https://x.com"], "n": 0}}
    assert check(bad2, sch=sch) == [
        'spec: Invalid value: "object": failed rule: self.name.lowerAscii().startsWith("ab") && '
        'self.name.matches("^[a-zA-Z]+$")',
        'spec: Invalid value: "object": bad urls: 2',
        "spec.n: Forbidden: n must be positive",
        'spec: Invalid value: "object": failed rule: size(self.urls.filter(u, u.contains("x"))) == '
        "size(self.urls.map(u, u).filter(u, false))",
    ]


def test_cel_is_skipped_on_type_errors() -> None:
    causes = check({"spec": {"sources": "x", "chunking": {"size": 100, "overlap": 200}}}, keep_nil=True)
    assert causes[-1].startswith('<nil>: Invalid value: "null": some validation rules were not checked')


async def test_invalid_objects_are_rejected_with_422(api: Api) -> None:
    body = kb("docs", index={"type": "FOO"}, chunking={"size": 5000})
    body["spec"]["sources"] = "oops"
    body["spec"].pop("sources")
    status, err = await api.post(KB_URL, body)
    assert status == 422
    assert err["kind"] == "Status" and err["reason"] == "Invalid" and err["code"] == 422
    assert err["details"]["name"] == "docs" and err["details"]["kind"] == "KnowledgeBase"
    fields = [c["field"] for c in err["details"]["causes"]]
    assert fields[:3] == ["spec.sources", "spec.index.type", "spec.chunking.size"]
    assert err["message"].startswith(
        'KnowledgeBase.tandem.dev "docs" is invalid: [spec.sources: Required value, '
    )
    assert (
        "spec.chunking.size: Invalid value: 5000: spec.chunking.size in body should be less than or equal to "
        "4096" in err["message"]
    )
    assert 'spec.index.type: Unsupported value: "FOO": supported values: "HNSW", "FLAT"' in err["message"]

    # A single cause: no brackets. Updates are validated too (with transition rules).
    await api.post(KB_URL, kb("ok", model="m1"))
    status, err = await api.patch(f"{KB_URL}/ok", {"spec": {"chunking": {"size": 5000}}})
    assert status == 422
    assert err["message"] == (
        'KnowledgeBase.tandem.dev "ok" is invalid: spec.chunking.size: Invalid value: 5000: '
        "spec.chunking.size in body should be less than or equal to 4096"
    )
    status, err = await api.patch(f"{KB_URL}/ok", {"spec": {"model": "m2"}})
    assert status == 422 and err["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "string": model is immutable',
            "field": "spec.model",
        }
    ]


async def test_unknown_fields_pruned_or_rejected_in_strict_mode(api: Api) -> None:
    body = kb("x")
    body["spec"]["bogus"] = 1
    status, obj = await api.post(KB_URL, body)
    assert status == 201 and "bogus" not in obj["spec"]
    body["metadata"]["name"] = "y"
    status, err = await api.post(KB_URL, body, params={"fieldValidation": "Strict"})
    assert status == 400 and 'unknown field "spec.bogus"' in err["message"]


async def test_rayjob_crd_validation(k8s_emulator: Emulator) -> None:
    k8s_emulator.install_crds(RAYJOB_CRD)
    async with aiohttp.ClientSession() as session:
        api = Api(session, k8s_emulator.url)
        job: dict[str, Any] = {
            "apiVersion": "ray.io/v1",
            "kind": "RayJob",
            "metadata": {"name": "train"},
            "spec": {
                "entrypoint": "python train.py",
                "shutdownAfterJobFinishes": True,
                "rayClusterSpec": {
                    "headGroupSpec": {
                        "rayStartParams": {},
                        "template": {
                            "spec": {
                                "containers": [
                                    {
                                        "name": "head",
                                        "image": "rayproject/ray:2.9.0",
                                        "resources": {"limits": {"cpu": 1, "memory": "2Gi"}},
                                    }
                                ]
                            }
                        },
                    }
                },
            },
        }
        status, obj = await api.post("/apis/ray.io/v1/namespaces/default/rayjobs", job)
        assert status == 201, obj
        assert obj["spec"]["submissionMode"] == "K8sJobMode"  # a default from the CRD

        job["metadata"]["name"] = "bad"
        job["spec"]["shutdownAfterJobFinishes"] = "yes"
        status, err = await api.post("/apis/ray.io/v1/namespaces/default/rayjobs", job)
        assert status == 422
        assert err["details"]["causes"][0]["field"] == "spec.shutdownAfterJobFinishes"
        assert err["message"].startswith(
            'RayJob.ray.io "bad" is invalid: [spec.shutdownAfterJobFinishes: Invalid value: "string": '
            'spec.shutdownAfterJobFinishes in body must be of type boolean: "string"'
        )


# ---------------------------------------------------------------------------------------------------------
# 12. the fixture API, kmock integration, kopf
# ---------------------------------------------------------------------------------------------------------


async def test_fixture_api(api: Api, emu: Emulator, k8s_kubeconfig: pathlib.Path) -> None:
    assert emu.url.startswith("http://127.0.0.1:")
    config = yaml.safe_load(k8s_kubeconfig.read_text())
    assert config["clusters"][0]["cluster"]["server"] == emu.url

    emu.reset_write_counts()
    await api.post(KB_URL, kb("x"))
    await api.patch(f"{KB_URL}/x", {"spec": {"model": "a"}})
    await api.get(f"{KB_URL}/x")
    await api.post("/api/v1/namespaces/default/configmaps", cm("c"))
    assert emu.writes("knowledgebases.tandem.dev") == 2
    assert emu.writes("tandem.dev/v1/knowledgebases") == 2
    assert emu.writes("kb") == 2
    assert emu.writes("configmaps") == 1
    assert emu.writes() == 3
    assert (emu.get("tandem.dev/v1/knowledgebases", "default", "x") or {})["spec"]["model"] == "a"
    assert emu.get("kb", "default", "nope") is None
    assert [o["metadata"]["name"] for o in emu.list_objects("configmaps", "default")] == ["c"]
    assert [o["metadata"]["name"] for o in emu.list("configmaps", "default", label_selector="!x")] == ["c"]

    created = emu.create(cm("direct", namespace="ns1"))
    assert created["metadata"]["uid"] and emu.get("v1/configmaps", "ns1", "direct") is not None
    assert emu.writes() == 3  # direct writes are not requests


def _ld(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


async def test_protobuf_bodies_of_simple_kinds(api: Api) -> None:
    type_meta = _ld(1, b"v1") + _ld(2, b"ConfigMap")
    meta = _ld(1, b"pb") + _ld(11, _ld(1, b"app") + _ld(2, b"x"))
    raw = _ld(1, meta) + _ld(2, _ld(1, b"key") + _ld(2, b"value"))
    body = b"k8s\x00" + _ld(1, type_meta) + _ld(2, raw)
    headers = {"Content-Type": "application/vnd.kubernetes.protobuf"}
    status, obj = await api.call(
        "POST", "/api/v1/namespaces/default/configmaps", body, content_type=headers["Content-Type"]
    )
    assert status == 201, obj
    assert obj["metadata"]["labels"] == {"app": "x"} and obj["data"] == {"key": "value"}

    type_meta = _ld(1, b"apps/v1") + _ld(2, b"Deployment")
    body = b"k8s\x00" + _ld(1, type_meta) + _ld(2, _ld(1, _ld(1, b"d")))
    status, err = await api.call(
        "POST", "/apis/apps/v1/namespaces/default/deployments", body, content_type=headers["Content-Type"]
    )
    assert status == 415 and err["reason"] == "UnsupportedMediaType"


async def test_kmock_reactions_take_precedence(api: Api, emu: Emulator) -> None:
    emu["get /api/v1/namespaces/default/configmaps/faulty"] << 503
    status, _ = await api.get("/api/v1/namespaces/default/configmaps/faulty")
    assert status == 503
    status, _ = await api.get("/api/v1/namespaces/default/configmaps/other")
    assert status == 404
    assert len(list(emu)) >= 2  # kmock's request log


WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.dev"},
    "spec": {
        "group": "example.dev",
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


async def wait_for(predicate: Any, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_kopf_operator_in_process(k8s_emulator: Emulator) -> None:
    emu = k8s_emulator
    emu.install_crds(WIDGET_CRD)
    emu.create({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "default"}})

    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=emu.url, insecure=True, token="test")

    @kopf.on.create("example.dev", "v1", "widgets", registry=registry, id="created")
    def created(spec: Any, **_: Any) -> dict[str, Any]:
        return {"seen": spec.get("size")}

    deleted: list[str] = []

    @kopf.on.delete("example.dev", "v1", "widgets", registry=registry)
    def on_delete(name: str, **_: Any) -> None:
        deleted.append(name)

    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 5
    settings.posting.enabled = False
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=settings,
            clusterwide=True,
            peering_name="default",
            stop_flag=stop,
            ready_flag=ready,
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 5)
        emu.create(
            {
                "apiVersion": "example.dev/v1",
                "kind": "Widget",
                "metadata": {"name": "w1", "namespace": "default"},
                "spec": {"size": 3},
            }
        )

        def handled() -> bool:
            obj = emu.get("widgets.example.dev", "default", "w1")
            return bool(obj and (obj.get("status") or {}).get("created"))

        await wait_for(handled)
        obj = emu.get("widgets.example.dev", "default", "w1")
        assert obj is not None
        assert obj["status"]["created"] == {"seen": 3}
        assert obj["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
        assert obj["metadata"]["generation"] == 1  # status & finalizers do not bump it

        # The peering: kopf keeps itself alive in the cluster-wide peering object.
        peering = emu.get("clusterkopfpeerings", None, "default")
        assert peering is not None and peering.get("status")

        url = emu.url + "/apis/example.dev/v1/namespaces/default/widgets/w1"
        async with aiohttp.ClientSession() as session, session.delete(url) as resp:
            assert resp.status == 200
        await wait_for(lambda: emu.get("widgets.example.dev", "default", "w1") is None)
        assert deleted == ["w1"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
