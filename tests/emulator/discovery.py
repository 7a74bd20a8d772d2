"""
Discovery documents (``/api``, ``/apis``, ``/api/v1``, ``/apis/G/V``, ``/version``) and OpenAPI v3.

Only the legacy (non-aggregated) discovery is served: clients asking for the aggregated discovery
(``as=APIGroupDiscoveryList``) receive the plain ``application/json`` documents and fall back, as they do
with older apiservers.

OpenAPI v3 (``/openapi/v3`` and ``/openapi/v3/apis/G/V``) is built from the registry: every resource gets
the standard paths with the ``x-kubernetes-group-version-kind`` extension and the ``fieldValidation``
query parameter (so that ``kubectl apply`` uses the server-side field validation), and a component schema
(CRDs: their ``openAPIV3Schema``; built-in kinds: an open object) — enough for ``kubectl explain``.
OpenAPI v2 is not served (kubectl requests it only as protobuf).
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from tests.emulator.resources import Registry, ResourceType

KUBERNETES_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0+emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group_doc(group: str, versions: list[str]) -> dict[str, Any]:
    return {
        "name": group,
        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
        "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
    }


def api_group_list(registry: Registry) -> dict[str, Any]:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_doc(group, versions) for group, versions in registry.groups().items()],
    }


def api_group(registry: Registry, group: str) -> dict[str, Any] | None:
    versions = registry.groups().get(group)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group, versions)}


def _storage_hash(rt: ResourceType) -> str:
    digest = hashlib.sha256(f"{rt.group}/{rt.version}/{rt.kind}".encode()).digest()
    import base64

    return base64.b64encode(digest[:8]).decode()


def api_resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    rtypes = [rt for rt in registry if rt.group == group and rt.version == version]
    if not rtypes and group:
        return None
    resources: list[dict[str, Any]] = []
    for rt in sorted(rtypes, key=lambda r: r.plural):
        entry: dict[str, Any] = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(rt.verbs),
            "storageVersionHash": _storage_hash(rt),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        resources.append(entry)
        if rt.status_subresource:
            resources.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if rt.scale_subresource is not None:
            resources.append(
                {
                    "name": f"{rt.plural}/scale",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def root_paths(registry: Registry) -> dict[str, Any]:
    paths = {"/api", "/api/v1", "/apis", "/version", "/openapi/v3", "/healthz", "/livez", "/readyz"}
    for group, versions in registry.groups().items():
        paths.add(f"/apis/{group}")
        paths.update(f"/apis/{group}/{v}" for v in versions)
    return {"paths": sorted(paths)}


# ---------------------------------------------------------------------------------------------------------
# OpenAPI v3
# ---------------------------------------------------------------------------------------------------------


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _definition_name(rt: ResourceType) -> str:
    group = ".".join(reversed(rt.group.split("."))) if rt.group else "core"
    if rt.group and "." not in rt.group:
        group = f"io.k8s.api.{rt.group}"
    elif not rt.group:
        group = "io.k8s.api.core"
    return f"{group}.{rt.version}.{rt.kind}"


def openapi_v3_index(registry: Registry) -> dict[str, Any]:
    gvs = sorted({(rt.group, rt.version) for rt in registry})
    paths: dict[str, Any] = {}
    for group, version in gvs:
        doc = openapi_v3_document(registry, group, version)
        digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:64].upper()
        paths[_gv_path(group, version)] = {
            "serverRelativeURL": f"/openapi/v3/{_gv_path(group, version)}?hash={digest}"
        }
    return {"paths": paths}


_OBJECT_META_REF = {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}

_OBJECT_META_SCHEMA: dict[str, Any] = {
    "description": "ObjectMeta is metadata that all persisted resources must have.",
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "Name must be unique within a namespace."},
        "generateName": {
            "type": "string",
            "description": "An optional prefix used to generate a unique name.",
        },
        "namespace": {"type": "string", "description": "Namespace defines the space for the name."},
        "labels": {
            "type": "object",
            "additionalProperties": {"type": "string", "default": ""},
            "description": "Map of string keys and values for organizing and categorizing objects.",
        },
        "annotations": {
            "type": "object",
            "additionalProperties": {"type": "string", "default": ""},
            "description": "Unstructured key-value map stored with a resource.",
        },
        "uid": {
            "type": "string",
            "description": "UID is the unique in time and space value for this object.",
        },
        "resourceVersion": {"type": "string", "description": "An opaque value of the internal version."},
        "generation": {
            "type": "integer",
            "format": "int64",
            "description": "A sequence number representing a specific generation of the desired state.",
        },
        "creationTimestamp": {
            "type": "string",
            "format": "date-time",
            "description": "The time when this object was created.",
        },
        "deletionTimestamp": {
            "type": "string",
            "format": "date-time",
            "description": "The time after which this resource will be deleted.",
        },
        "finalizers": {
            "type": "array",
            "items": {"type": "string", "default": ""},
            "description": "Must be empty before the object is deleted from the registry.",
        },
        "ownerReferences": {
            "type": "array",
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "description": "List of objects depended by this object.",
        },
    },
}


def _component_schema(rt: ResourceType) -> dict[str, Any]:
    gvk = [{"group": rt.group, "version": rt.version, "kind": rt.kind}]
    if rt.schema:
        result = copy.deepcopy(dict(rt.schema))
        result.setdefault("type", "object")
        props = result.setdefault("properties", {})
        props["metadata"] = {
            "allOf": [_OBJECT_META_REF],
            "default": {},
            "description": "Standard object's metadata.",
        }
        props.setdefault(
            "apiVersion",
            {
                "type": "string",
                "description": "APIVersion defines the versioned schema of this representation of an object.",
            },
        )
        props.setdefault(
            "kind",
            {
                "type": "string",
                "description": "Kind is a string value representing the REST "
                "resource this object represents.",
            },
        )
    else:
        result = {
            "type": "object",
            "description": f"{rt.kind} (schema not emulated; any fields are accepted).",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"allOf": [_OBJECT_META_REF], "default": {}},
            },
            "x-kubernetes-preserve-unknown-fields": True,
        }
    result["x-kubernetes-group-version-kind"] = gvk
    return result


def _parameters(namespaced: bool, named: bool) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    if named:
        params.append({"name": "name", "in": "path", "required": True, "schema": {"type": "string"}})
    if namespaced:
        params.append({"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}})
    return params


def _op(rt: ResourceType, action: str, op_id: str, ref: str, *, write: bool) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": op_id,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": ref}}}}
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
    }
    if write:
        op["parameters"] = [
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
        ]
    return op


def openapi_v3_document(registry: Registry, group: str, version: str) -> dict[str, Any]:
    rtypes = [rt for rt in registry if rt.group == group and rt.version == version]
    schemas: dict[str, Any] = {"io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": _OBJECT_META_SCHEMA}
    paths: dict[str, Any] = {}
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    for rt in rtypes:
        def_name = _definition_name(rt)
        schemas[def_name] = _component_schema(rt)
        ref = f"#/components/schemas/{def_name}"
        base = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"
        ident = f"{rt.kind}{rt.version.capitalize()}"
        paths[base] = {
            "get": _op(rt, "list", f"list{ident}", ref, write=False),
            "post": _op(rt, "post", f"create{ident}", ref, write=True),
            "parameters": _parameters(rt.namespaced, named=False),
        }
        paths[f"{base}/{{name}}"] = {
            "get": _op(rt, "get", f"read{ident}", ref, write=False),
            "put": _op(rt, "put", f"replace{ident}", ref, write=True),
            "patch": _op(rt, "patch", f"patch{ident}", ref, write=True),
            "delete": _op(rt, "delete", f"delete{ident}", ref, write=False),
            "parameters": _parameters(rt.namespaced, named=True),
        }
        if rt.status_subresource:
            paths[f"{base}/{{name}}/status"] = {
                "get": _op(rt, "get", f"read{ident}Status", ref, write=False),
                "put": _op(rt, "put", f"replace{ident}Status", ref, write=True),
                "patch": _op(rt, "patch", f"patch{ident}Status", ref, write=True),
                "parameters": _parameters(rt.namespaced, named=True),
            }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": schemas},
    }
