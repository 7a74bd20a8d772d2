"""
The HTTP side of the emulator: :class:`Emulator`, a kmock ``KubernetesEmulator`` with its own router.

kmock's DSL still works on top of it: user-defined reactions (e.g. ``emulator['get /api/v1/pods'] << 500``)
are tried first, and every request is recorded (``emulator.requests``, ``list(emulator)``).
Only kmock's default (fallback) Kubernetes behaviour is replaced — by the faithful one of :mod:`store`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import pathlib
import traceback
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, cast, overload

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import apps, enums, parsing, references, rendering

from tandem.api.admission.causes import Cause
from tests.emulator import builtin, discovery, errors, protobuf, tables
from tests.emulator.resources import Registry, ResourceType
from tests.emulator.selectors import Selector, SelectorError
from tests.emulator.store import Store, WatchEvent

logger = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The apiserver's limit on a request body (its MaxRequestBodyBytes, 3 MiB by default).
MAX_REQUEST_BODY_BYTES = 3 * 1024 * 1024
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_manifests(*sources: str | pathlib.Path | Mapping[str, Any] | Iterable[Any]) -> list[dict[str, Any]]:
    """Load YAML/JSON documents from files, directories (all *.yaml/*.yml/*.json), dicts, or lists thereof."""
    result: list[dict[str, Any]] = []
    for source in sources:
        if isinstance(source, Mapping):
            if source.get("kind") == "List" or (
                source.get("kind", "").endswith("List") and "items" in source
            ):
                result.extend(load_manifests(*source.get("items") or []))
            else:
                result.append(dict(source))
        elif isinstance(source, str | pathlib.Path):
            path = pathlib.Path(source)
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
                result.extend(load_manifests(*files))
            else:
                docs = yaml.load_all(path.read_text(), Loader=_YAML_LOADER)
                result.extend(load_manifests(*[doc for doc in docs if doc]))
        elif isinstance(source, Iterable):
            result.extend(load_manifests(*source))
        else:
            raise TypeError(f"unsupported manifest source: {source!r}")
    return result


@attrs.define(kw_only=True, repr=False)
class Emulator(kmock.KubernetesEmulator):
    """
    A faithful-enough Kubernetes API server in memory (see README.md).

    Use it as an async context manager together with ``kmock.Server`` (or via
    :func:`tests.emulator.fixtures.run_emulator` / the ``k8s_emulator`` fixture).
    """

    history_size: int = 1000  # watch events kept per resource for ?watch=true&resourceVersion=N
    implicit_namespaces: bool = True  # create namespaces on the fly when objects are created in them
    kopf_peering: bool = True  # install kopf's peering CRDs (kopf.dev/v1)
    max_recorded_requests: int | None = None  # trim kmock's request log (for long-running processes)

    registry: Registry = attrs.field(init=False)
    store: Store = attrs.field(init=False)
    write_counts: collections.Counter[str] = attrs.field(init=False, factory=collections.Counter)
    writes_log: list[tuple[str, str, int]] = attrs.field(init=False, factory=list)  # (method, path, status)
    _closing: bool = attrs.field(init=False, default=False)
    _watch_tasks: set[asyncio.Task[Any]] = attrs.field(init=False, factory=set)

    def __attrs_post_init__(self) -> None:
        # Deliberately NOT calling super().__attrs_post_init__(): kmock's fallback reactions
        # (its simplistic Kubernetes behaviour) are replaced by our router below.
        self.registry = Registry()
        self.registry.add_many(builtin.BUILTIN_TYPES)
        self.store = Store(
            self.registry, history_size=self.history_size, implicit_namespaces=self.implicit_namespaces
        )
        for ns in builtin.DEFAULT_NAMESPACES:
            self.store.ensure_namespace(ns)
        if self.kopf_peering:
            self.install_crds(builtin.KOPF_PEERING_CRDS)

    def __repr__(self) -> str:
        url = self.url if self.servers else "not listening"
        return (
            f"<Emulator {url} resourceVersion={self.store.resource_version} requests={len(self._requests)}>"
        )

    # ---------------------------------------------------------------------------------------------------
    # Public API for tests
    # ---------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:  # type: ignore[override]  # a str, not kmock's yarl.URL
        return str(super().url).rstrip("/")

    def install_crds(
        self, *sources: str | pathlib.Path | Mapping[str, Any] | Iterable[Any]
    ) -> list[ResourceType]:
        """
        Install CRDs (apiextensions.k8s.io/v1 dicts, YAML files, or directories of YAML files).

        Non-CRD documents in the sources are ignored. Installing an existing CRD replaces it.
        Returns the served resource types (one per served version).
        """
        crd_rt = builtin.CRD_TYPE
        installed: list[ResourceType] = []
        for doc in load_manifests(*sources):
            if doc.get("kind") != "CustomResourceDefinition":
                continue
            name = doc["metadata"]["name"]
            existing = self.store.find(crd_rt, None, name)
            if existing is None:
                self.store.create(crd_rt, None, doc)
            else:
                body = dict(doc)
                body["metadata"] = {
                    **doc.get("metadata", {}),
                    "resourceVersion": existing["metadata"]["resourceVersion"],
                }
                self.store.replace(crd_rt, None, name, body)
            spec = doc["spec"]
            installed.extend(self.registry.versions_of(spec["group"], spec["names"]["plural"]))
        return installed

    def resource_type(self, spec: str | ResourceType) -> ResourceType:
        """Resolve e.g. "tandem.dev/v1/knowledgebases", "v1/configmaps", "knowledgebases.tandem.dev", "kb"."""
        return spec if isinstance(spec, ResourceType) else self.registry.find(spec)

    @overload  # type: ignore[override]
    def get(
        self, resource: str | ResourceType, namespace: str | None, name: str, /
    ) -> dict[str, Any] | None: ...

    @overload
    def get(self, url: str, /, **kwargs: Any) -> Any: ...

    def get(
        self,
        resource: str | ResourceType,
        namespace: str | None = None,
        name: str | None = None,
        /,
        **kwargs: Any,
    ) -> Any:
        """
        ``get(resource, namespace, name)``: the stored object (a deep copy), or None if absent.

        ``get("/some/url", **kwargs)`` (one argument) remains kmock's HTTP client shortcut.
        """
        if name is None and isinstance(resource, str) and (resource.startswith("/") or "://" in resource):
            return super().get(resource, **kwargs)
        if name is None:
            raise TypeError("get() needs (resource, namespace, name) — or a single URL for an HTTP request")
        return self.store.find(self.resource_type(resource), namespace, name)

    def list_objects(
        self,
        resource: str | ResourceType,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """Stored objects of a resource (deep copies), optionally by namespace and selectors."""
        rt = self.resource_type(resource)
        return self.store.list_objects(rt, namespace, Selector.parse(label_selector, field_selector))

    def create(self, obj: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """Create an object directly in the storage (with all the apiserver semantics), by apiVersion/kind."""
        rt = self.registry.by_kind(obj["apiVersion"], obj["kind"])
        if rt is None:
            raise KeyError(f"{obj['apiVersion']}/{obj['kind']} is not served")
        ns = namespace or (obj.get("metadata") or {}).get("namespace")
        return self.store.create(rt, ns, dict(obj)).object

    def writes(self, resource: str | ResourceType | None = None) -> int:
        """The number of write requests (POST/PUT/PATCH/DELETE) — in total or for one resource."""
        if resource is None:
            return sum(self.write_counts.values())
        return self.write_counts[self.resource_type(resource).qualified_name]

    def reset_write_counts(self) -> None:
        self.write_counts.clear()
        self.writes_log.clear()

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": "emulator-token"}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
                }
            ],
            "current-context": "emulator",
            "preferences": {},
        }

    def write_kubeconfig(self, path: str | pathlib.Path, namespace: str = "default") -> pathlib.Path:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.kubeconfig(namespace), sort_keys=False))
        return path

    def close_watches(self) -> None:
        """End all open watch streams (the clients see a normal end of stream)."""
        self._closing = True
        self.store.close_watchers()

    async def __aexit__(self, exc_type: Any, exc_value: Any, tb: Any) -> None:
        self.close_watches()
        await super().__aexit__(exc_type, exc_value, tb)

    # ---------------------------------------------------------------------------------------------------
    # Request handling
    # ---------------------------------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # The API server reads request bodies of up to 3 MiB (aiohttp's default is 1 MiB: bodies a cluster
        # takes were refused here, without a Status).
        raw_request = raw_request.clone(client_max_size=MAX_REQUEST_BODY_BYTES)
        try:
            body = await raw_request.read()
        except aiohttp.web.HTTPRequestEntityTooLarge:
            return self._error_response(errors.request_entity_too_large(MAX_REQUEST_BODY_BYTES))
        try:
            request = self._parse_request(raw_request, body)
        except errors.ApiError as e:
            return self._error_response(e)
        self._requests.append(request)
        if self.max_recorded_requests is not None and len(self._requests) > self.max_recorded_requests:
            del self._requests[: len(self._requests) - self.max_recorded_requests]

        response: aiohttp.web.StreamResponse
        try:
            try:
                response = await apps.RawHandler._handle(self, request)  # user-defined kmock reactions
            except NotImplementedError:
                response = await self._serve(request, raw_request)
        except errors.ApiError as e:
            response = self._error_response(e)
        except rendering.StreamingError as e:
            raw_response = e.args[0]
            logger.exception("Streaming failed: %s", e.__cause__)
            return cast(aiohttp.web.StreamResponse, raw_response)
        except Exception as e:
            logger.exception("Emulator failure on %s %s", raw_request.method, raw_request.path)
            if self._errors:
                self._errors[-1].append(e)
            response = self._error_response(
                errors.ApiError(
                    500,
                    "InternalError",
                    f"Internal error occurred: {e!r}",
                    {"causes": [{"reason": "UnexpectedServerResponse", "message": traceback.format_exc()}]},
                )
            )

        if raw_request.method in WRITE_METHODS and request.resource is not None and request.resource.plural:
            group = request.resource.group or ""
            plural = request.resource.plural
            self.write_counts[f"{plural}.{group}" if group else plural] += 1
            self.writes_log.append((raw_request.method, raw_request.path_qs, response.status))
        return response

    def _parse_request(self, raw_request: aiohttp.web.BaseRequest, body: bytes) -> rendering.Request:
        text = body.decode("utf-8", errors="replace")
        content_type = raw_request.headers.get("Content-Type", "")
        data: Any = None
        if body and "protobuf" in content_type:
            try:
                data = protobuf.decode(body)
            except protobuf.ProtobufError as e:
                raise errors.unsupported_media_type(
                    content_type,
                    [
                        "application/json",
                        "application/yaml",
                        "application/merge-patch+json",
                        "application/json-patch+json",
                        "application/strategic-merge-patch+json",
                        "application/apply-patch+yaml",
                    ],
                ) from e
        elif body:
            try:
                data = yaml.load(text, Loader=_YAML_LOADER) if "yaml" in content_type else json.loads(text)
            except (ValueError, yaml.YAMLError) as e:
                raise errors.bad_request(f"error decoding the request body: {e}") from e
        route = _parse_path(raw_request.path)
        resource = None
        action = None
        if route is not None:
            resource = references.resource(group=route.group, version=route.version, plural=route.plural)
            action = parsing.guess_k8s(route, enums.method(raw_request.method), dict(raw_request.query))
        return rendering.Request(
            raw_request=raw_request,
            id=len(self._requests),
            url=raw_request.url,
            method=raw_request.method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            body=body,
            text=text,
            data=data,
            action=action,
            resource=resource,
            namespace=route.namespace if route else None,
            name=route.name if route else None,
            subresource=route.subresource if route else None,
        )

    @staticmethod
    def _error_response(e: errors.ApiError) -> aiohttp.web.Response:
        return aiohttp.web.json_response(e.status(), status=e.code)

    async def _serve(
        self, request: rendering.Request, raw: aiohttp.web.BaseRequest
    ) -> aiohttp.web.StreamResponse:
        segs = [s for s in raw.path.split("/") if s]
        method = raw.method.upper()
        if method not in ("GET", "HEAD") and (not segs or segs[0] not in ("api", "apis")):
            raise errors.method_not_allowed()

        if not segs:
            return _json(discovery.root_paths(self.registry))
        if segs == ["version"] or segs == ["version", ""]:
            return _json(discovery.KUBERNETES_VERSION)
        if segs[0] in ("healthz", "livez", "readyz"):
            return aiohttp.web.Response(text="ok")
        if segs[0] == "openapi":
            return self._serve_openapi(segs)
        if segs[0] == "api":
            if len(segs) == 1:
                return _json(discovery.api_versions(f"{raw.host}"))
            group, version, rest = "", segs[1], segs[2:]
        elif segs[0] == "apis":
            if len(segs) == 1:
                return _json(discovery.api_group_list(self.registry))
            if len(segs) == 2:
                doc = discovery.api_group(self.registry, segs[1])
                if doc is None:
                    raise errors.endpoint_not_found()
                return _json(doc)
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise errors.endpoint_not_found()

        if not rest:
            if method != "GET":
                raise errors.method_not_allowed()
            rl = discovery.api_resource_list(self.registry, group, version)
            if rl is None:
                raise errors.endpoint_not_found()
            return _json(rl)

        route = _parse_path(raw.path)
        if route is None or route.plural is None:
            raise errors.endpoint_not_found()
        rt = self.registry.get(group, version, route.plural)
        if rt is None:
            raise errors.endpoint_not_found()
        if route.namespace is not None and not rt.namespaced:
            raise errors.endpoint_not_found()
        if route.subresource and route.subresource not in rt.subresources:
            raise errors.endpoint_not_found()
        return await self._serve_resource(rt, route.namespace, route.name, route.subresource, request, raw)

    def _serve_openapi(self, segs: list[str]) -> aiohttp.web.StreamResponse:
        if segs[:2] != ["openapi", "v3"]:
            raise errors.endpoint_not_found()
        if len(segs) == 2:
            return _json(discovery.openapi_v3_index(self.registry))
        rest = segs[2:]
        if rest[0] == "api" and len(rest) == 2:
            group, version = "", rest[1]
        elif rest[0] == "apis" and len(rest) == 3:
            group, version = rest[1], rest[2]
        else:
            raise errors.endpoint_not_found()
        if not any(rt.group == group and rt.version == version for rt in self.registry):
            raise errors.endpoint_not_found()
        return _json(discovery.openapi_v3_document(self.registry, group, version))

    async def _serve_resource(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str | None,
        subresource: str | None,
        request: rendering.Request,
        raw: aiohttp.web.BaseRequest,
    ) -> aiohttp.web.StreamResponse:
        method = raw.method.upper()
        query = raw.query
        dry_run = "All" in query.getall("dryRun", [])
        field_validation = query.get("fieldValidation")
        try:
            selector = Selector.parse(query.get("labelSelector"), query.get("fieldSelector"))
        except SelectorError as e:
            raise errors.bad_request(f"unable to parse requirement: {e}") from e
        if rt.namespaced and namespace is not None:
            selector = Selector(selector.labels, selector.fields)
        data = request.data

        if name is None:
            if method == "GET":
                if query.get("watch") in ("true", "1"):
                    return await self._stream_watch(rt, namespace, None, selector, raw)
                items = self.store.list_objects(rt, namespace, selector)
                return self._render_list(rt, items, raw)
            if method == "POST":
                if rt.namespaced and namespace is None:
                    raise errors.method_not_allowed()
                result = self.store.create(
                    rt, namespace, data, dry_run=dry_run, field_validation=field_validation
                )
                return _json(result.object, status=201, warnings=result.warnings)
            if method == "DELETE":
                options = _delete_options(data, query)
                deleted = self.store.delete_collection(rt, namespace, selector, options)
                return _json(
                    {
                        "apiVersion": rt.api_version,
                        "kind": rt.list_kind,
                        "metadata": {"resourceVersion": str(self.store.resource_version)},
                        "items": deleted,
                    }
                )
            raise errors.method_not_allowed()

        if rt.namespaced and namespace is None:
            raise errors.endpoint_not_found()

        if subresource == "scale":
            return self._serve_scale(rt, namespace, name, method, raw, data, dry_run)

        if method == "GET":
            if query.get("watch") in ("true", "1"):
                from tests.emulator.selectors import FieldRequirement

                by_name = Selector(
                    selector.labels, (*selector.fields, FieldRequirement("metadata.name", "=", name))
                )
                return await self._stream_watch(rt, namespace, name, by_name, raw)
            obj = self.store.get(rt, namespace, name)
            if _wants_table(raw):
                return _json(
                    tables.to_table(
                        rt,
                        [obj],
                        obj["metadata"].get("resourceVersion", ""),
                        query.get("includeObject", "Metadata"),
                    ),
                    content_type_table=True,
                )
            return _json(obj)
        if method == "PUT":
            result = self.store.replace(
                rt,
                namespace,
                name,
                data,
                subresource=subresource,
                dry_run=dry_run,
                field_validation=field_validation,
            )
            return _json(result.object, warnings=result.warnings)
        if method == "PATCH":
            content_type = raw.headers.get("Content-Type", "")
            if (
                subresource is None
                and content_type.startswith("application/apply-patch")
                and not query.get("fieldManager")
            ):
                raise errors.invalid(
                    rt.kind,
                    rt.group,
                    name,
                    [
                        Cause(
                            "fieldManager",
                            "Required value: is required for apply patch",
                            "FieldValueRequired",
                        )
                    ],
                )
            result = self.store.patch(
                rt,
                namespace,
                name,
                content_type,
                data,
                subresource=subresource,
                dry_run=dry_run,
                field_validation=field_validation,
                field_manager=query.get("fieldManager"),
                force=query.get("force") == "true",
            )
            return _json(result.object, status=201 if result.created else 200, warnings=result.warnings)
        if method == "DELETE" and subresource is None:
            options = _delete_options(data, query)
            result = self.store.delete(rt, namespace, name, options, dry_run=dry_run)
            return _json(result.object)
        raise errors.method_not_allowed()

    def _render_list(
        self, rt: ResourceType, items: list[dict[str, Any]], raw: aiohttp.web.BaseRequest
    ) -> aiohttp.web.StreamResponse:
        rv = str(self.store.resource_version)
        if _wants_table(raw):
            return _json(
                tables.to_table(rt, items, rv, raw.query.get("includeObject", "Metadata")),
                content_type_table=True,
            )
        if "as=PartialObjectMetadataList" in raw.headers.get("Accept", ""):
            return _json(
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": {"resourceVersion": rv},
                    "items": [tables.partial_metadata(item) for item in items],
                }
            )
        return _json(
            {
                "apiVersion": rt.api_version,
                "kind": rt.list_kind,
                "metadata": {"resourceVersion": rv},
                "items": items,
            }
        )

    def _serve_scale(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        method: str,
        raw: aiohttp.web.BaseRequest,
        data: Any,
        dry_run: bool,
    ) -> aiohttp.web.StreamResponse:
        spec_path = (rt.scale_subresource or {}).get("specReplicasPath", ".spec.replicas")
        status_path = (rt.scale_subresource or {}).get("statusReplicasPath", ".status.replicas")
        obj = self.store.get(rt, namespace, name)
        if method in ("PUT", "PATCH"):
            scale = self._scale_of(obj, spec_path, status_path, rt)
            if method == "PUT":
                new_scale = data if isinstance(data, dict) else {}
            else:
                from tests.emulator import patches

                new_scale = patches.patch_object(
                    raw.headers.get("Content-Type", patches.MERGE_PATCH), scale, data
                )
            replicas = (new_scale.get("spec") or {}).get("replicas")
            rv = (new_scale.get("metadata") or {}).get("resourceVersion")
            updated = _set_path(obj, spec_path, replicas)
            if rv:
                updated["metadata"]["resourceVersion"] = rv
            obj = self.store.replace(rt, namespace, name, updated, dry_run=dry_run, from_patch=True).object
        elif method != "GET":
            raise errors.method_not_allowed()
        return _json(self._scale_of(obj, spec_path, status_path, rt))

    @staticmethod
    def _scale_of(
        obj: Mapping[str, Any], spec_path: str, status_path: str, rt: ResourceType | None = None
    ) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        spec_values = tables.jsonpath(obj, spec_path)
        status_values = tables.jsonpath(obj, status_path)
        if rt is not None and rt.is_custom:
            # A custom resource's Scale carries the string its labelSelectorPath points at, "" without one
            # (as the apiextensions server's scaleFromCustomResource); a built-in's, its spec.selector.
            selector_path = (rt.scale_subresource or {}).get("labelSelectorPath")
            found = tables.jsonpath(obj, selector_path) if selector_path else []
            label_selector = found[0] if found and isinstance(found[0], str) else ""
        else:
            matched = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            label_selector = ",".join(f"{k}={v}" for k, v in matched.items())
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": spec_values[0] if spec_values else 0},
            "status": {
                "replicas": status_values[0] if status_values else 0,
                "selector": label_selector,
            },
        }

    # ---------------------------------------------------------------------------------------------------
    # Watching
    # ---------------------------------------------------------------------------------------------------

    async def _stream_watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str | None,
        selector: Selector,
        raw: aiohttp.web.BaseRequest,
    ) -> aiohttp.web.StreamResponse:
        query = raw.query
        rv_param = query.get("resourceVersion") or ""
        send_initial = query.get("sendInitialEvents") == "true"
        bookmarks = query.get("allowWatchBookmarks") == "true"
        as_table = _wants_table(raw)
        timeout: float | None = None
        if query.get("timeoutSeconds"):
            try:
                timeout = float(query["timeoutSeconds"])
            except ValueError as e:
                raise errors.bad_request(f"invalid timeoutSeconds: {query['timeoutSeconds']}") from e

        def matches(obj: Mapping[str, Any] | None) -> bool:
            if obj is None:
                return False
            obj_ns = (obj.get("metadata") or {}).get("namespace")
            if rt.namespaced and namespace and obj_ns != namespace:
                return False
            return selector.matches(obj)

        # Synchronous snapshot & subscription: no events can slip in between (no awaits here).
        queue = self.store.subscribe(rt)
        initial: list[dict[str, Any]] = []
        backlog: list[WatchEvent] = []
        error: errors.ApiError | None = None
        last_rv = self.store.resource_version
        if rv_param in ("", "0") or send_initial:
            initial = self.store.list_objects(rt, namespace, selector)
        else:
            try:
                since = int(rv_param)
            except ValueError:
                self.store.unsubscribe(rt, queue)
                raise errors.bad_request(f"invalid resource version: {rv_param}") from None
            try:
                backlog = self.store.history_since(rt, since)
            except errors.ApiError as e:
                error = e

        response = aiohttp.web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"}
        )
        response.enable_chunked_encoding()
        try:
            await response.prepare(raw)

            async def send(event_type: str, obj: dict[str, Any]) -> None:
                if as_table and event_type in ("ADDED", "MODIFIED", "DELETED"):
                    rv = (obj.get("metadata") or {}).get("resourceVersion", "")
                    obj = tables.to_table(rt, [obj], rv, query.get("includeObject", "Metadata"))
                await response.write(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")

            if error is not None:
                await send("ERROR", error.status())
                await response.write_eof()
                return response
            for obj in initial:
                await send("ADDED", obj)
            if send_initial and bookmarks:
                await send(
                    "BOOKMARK",
                    {
                        "kind": rt.kind,
                        "apiVersion": rt.api_version,
                        "metadata": {
                            "resourceVersion": str(last_rv),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    },
                )
            for event in backlog:
                await self._send_event(rt, event, matches, send)
                last_rv = max(last_rv, event.rv)

            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            while not self._closing:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                wait = 1.0 if remaining is None else min(1.0, remaining)
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=wait)
                except TimeoutError:
                    transport = raw.transport
                    if transport is None or transport.is_closing():
                        break
                    continue
                if item is None:
                    break
                if item.rv <= last_rv:
                    continue
                await self._send_event(rt, item, matches, send)
            await response.write_eof()
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.store.unsubscribe(rt, queue)
        return response

    async def _send_event(self, rt: ResourceType, event: WatchEvent, matches: Any, send: Any) -> None:
        new_match = matches(event.object)
        old_match = matches(event.old)
        event_type: str | None = None
        if event.type == "ADDED":
            event_type = "ADDED" if new_match else None
        elif event.type == "MODIFIED":
            if new_match and old_match:
                event_type = "MODIFIED"
            elif new_match:
                event_type = "ADDED"
            elif old_match:
                event_type = "DELETED"
        elif event.type == "DELETED":
            event_type = "DELETED" if (new_match or old_match) else None
        if event_type is not None:
            obj = dict(event.object)
            obj["apiVersion"] = rt.api_version
            await send(event_type, obj)

    # Defined last so that `list[...]` in the annotations above still means the builtin.
    list = list_objects


# -------------------------------------------------------------------------------------------------------
# Helpers
# -------------------------------------------------------------------------------------------------------


def _parse_path(path: str) -> parsing.ParsedPath | None:
    """Like kmock's parser, but aware of /api/v1/namespaces[/NAME[/status|finalize]]."""
    segs = [s for s in path.split("/") if s]
    if len(segs) >= 2 and segs[0] == "api":
        group, version, rest = "", segs[1], segs[2:]
    elif len(segs) >= 3 and segs[0] == "apis":
        group, version, rest = segs[1], segs[2], segs[3:]
    else:
        return None
    if not rest:
        return parsing.ParsedPath(group=group, version=version)
    namespace: str | None = None
    if (
        rest[0] == "namespaces"
        and len(rest) >= 3
        and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    subresource = "/".join(rest[2:]) or None
    return parsing.ParsedPath(
        group=group, version=version, plural=plural, namespace=namespace, name=name, subresource=subresource
    )


def _wants_table(raw: aiohttp.web.BaseRequest) -> bool:
    accept = raw.headers.get("Accept", "")
    return any("as=Table" in part for part in accept.split(","))


def _json(
    payload: Any, *, status: int = 200, warnings: Iterable[str] = (), content_type_table: bool = False
) -> aiohttp.web.Response:
    response = aiohttp.web.Response(text=json.dumps(payload), status=status, content_type="application/json")
    if content_type_table:
        response.headers["Content-Type"] = "application/json;as=Table;v=v1;g=meta.k8s.io"
    headers: MutableMapping[str, str] = response.headers
    for warning in warnings:
        response.headers.add("Warning", f"299 - {json.dumps(warning)}")
    del headers
    return response


def _delete_options(data: Any, query: Mapping[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = dict(data) if isinstance(data, dict) else {}
    if "propagationPolicy" in query:
        options["propagationPolicy"] = query["propagationPolicy"]
    if "orphanDependents" in query:
        options["orphanDependents"] = query["orphanDependents"] == "true"
    if "gracePeriodSeconds" in query:
        options["gracePeriodSeconds"] = query["gracePeriodSeconds"]
    return options


def _set_path(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    import copy

    result = copy.deepcopy(obj)
    parts = [p for p in path.strip(".").split(".") if p]
    node = result
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    if parts:
        node[parts[-1]] = value
    return result
