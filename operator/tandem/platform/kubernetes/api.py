"""A small async client for the objects the operator reads and writes.

Transport, kubeconfig and in-cluster authentication come from kubernetes_asyncio; paths come from a
fixed table of the kinds Tandem touches, so no discovery round-trips are needed and every call the
operator can make is listed here (the chart's RBAC is checked against `RESOURCES`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from tandem.api.kinds import ALL_KINDS

from .ownership import FIELD_MANAGER


@dataclass(frozen=True)
class Resource:
    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        """The object's (or collection's) path; namespace None: the collection across all namespaces."""
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if namespace is None:
            return f"{prefix}/{self.plural}"
        path = f"{prefix}/namespaces/{quote(namespace)}/{self.plural}"
        if name is not None:
            path += f"/{quote(name)}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


RESOURCES: dict[tuple[str, str], Resource] = {
    (r.api_version, r.kind): r
    for r in [
        Resource("v1", "ConfigMap", "configmaps"),
        Resource("v1", "Service", "services"),
        Resource("v1", "Pod", "pods"),  # read only: workload results in termination messages
        Resource("v1", "Event", "events"),  # read only: pods' FailedMount (a missing Secret)
        Resource("v1", "Secret", "secrets"),  # create only: an endpoint's vLLM key (vllm_key.py)
        Resource("batch/v1", "Job", "jobs"),
        Resource("batch/v1", "CronJob", "cronjobs"),
        Resource("apps/v1", "Deployment", "deployments"),
        Resource("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
        Resource("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
        Resource("ray.io/v1", "RayJob", "rayjobs"),
        Resource("keda.sh/v1alpha1", "ScaledObject", "scaledobjects"),  # a pool's autoscaler with KEDA
        *(Resource(k.api_version, k.kind, k.plural) for k in ALL_KINDS),
    ]
}


def resource_of(api_version: str, kind: str) -> Resource:
    try:
        return RESOURCES[(api_version, kind)]
    except KeyError:
        raise KeyError(f"the operator does not manage {kind} ({api_version})") from None


class ApiError(Exception):
    """A non-2xx answer of the API server, with its Status message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class KubeApi:
    """get / list / create / apply / patch-status / delete of namespaced objects."""

    def __init__(self, api_client: k8s_client.ApiClient) -> None:
        self._client = api_client

    @classmethod
    async def connect(cls, server: str | None = None) -> KubeApi:
        """In-cluster config, else kubeconfig; or a plain server URL (tests against the emulator)."""
        configuration = k8s_client.Configuration()
        if server is not None:
            configuration.host = server
            configuration.verify_ssl = False
        else:
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except k8s_config.ConfigException:
                await k8s_config.load_kube_config(client_configuration=configuration)
        return cls(k8s_client.ApiClient(configuration))

    async def close(self) -> None:
        await self._client.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        response = await self._client.call_api(
            path,
            method,
            {},
            query or [],
            {"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=30,
        )
        try:
            raw = await response.read()
        finally:
            response.release()
        data: dict[str, Any] = json.loads(raw) if raw else {}
        if not 200 <= response.status < 300:
            raise ApiError(
                response.status, str(data.get("reason", response.reason)), str(data.get("message", raw))
            )
        return data

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", resource_of(api_version, kind).path(namespace, name))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        labels: dict[str, str] | None = None,
        fields: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Objects of a kind in a namespace (None: in every namespace), by label and field selectors."""
        query = [("labelSelector", ",".join(f"{k}={v}" for k, v in sorted(labels.items())))] if labels else []
        if fields:  # only the fields the API server indexes for the kind (e.g. an Event's reason)
            query.append(("fieldSelector", ",".join(f"{k}={v}" for k, v in sorted(fields.items()))))
        try:
            data = await self._call("GET", resource_of(api_version, kind).path(namespace), query=query)
        except ApiError as e:
            if e.status == 404:  # the kind is not installed (e.g. no KubeRay): nothing to list
                return []
            raise
        items: list[dict[str, Any]] = data.get("items", [])
        for item in items:  # list items carry no apiVersion/kind of their own
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        res = resource_of(obj["apiVersion"], obj["kind"])
        return await self._call("POST", res.path(obj["metadata"]["namespace"]), body=obj)

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply as the operator's field manager, taking ownership of conflicting fields."""
        res = resource_of(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        return await self._call(
            "PATCH",
            res.path(meta["namespace"], meta["name"]),
            body=obj,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        res = resource_of(api_version, kind)
        return await self._call(
            "PATCH",
            res.path(namespace, name, "status"),
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            await self._call(
                "DELETE",
                resource_of(api_version, kind).path(namespace, name),
                body={"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"},
            )
        except ApiError as e:
            if e.status != 404:
                raise
