"""
The in-memory object storage with the apiserver's write semantics.

All methods are synchronous (no awaits), so every operation is atomic within the event loop.
Watchers receive events through asyncio queues filled with ``put_nowait``.

Semantics emulated here (see README.md for the list of what is not):

* cluster-wide monotonic ``resourceVersion`` (a string of an integer), bumped on every write;
  no-op updates do not bump it and produce no watch events;
* ``uid``, ``creationTimestamp``, ``generation`` (bumped when anything but metadata/status changes),
  ``generateName``;
* optimistic concurrency: a stale ``metadata.resourceVersion`` in PUT/PATCH bodies or in DELETE
  preconditions → 409 Conflict;
* status subresource: main-resource writes keep the old status, ``/status`` writes change only status;
* finalizers and ``deletionTimestamp``; removing the last finalizer of a deleted object purges it;
* garbage collection by ``ownerReferences`` (background; recursive; orphaning on request);
* namespaces as objects; implicit creation of namespaces; namespace deletion deletes its content;
* CRDs: pruning, defaulting, OpenAPI + CEL validation; CRDs created via the API are served at once;
  CRDs whose CEL rules are estimated over the apiserver's cost limits are refused (``cel_cost``).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import datetime
import random
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tandem.api import admission
from tandem.api.admission import schema
from tandem.api.admission.causes import Cause
from tests.emulator import builtin, builtin_validation, cel_cost, errors, patches
from tests.emulator.resources import Registry, ResourceType
from tests.emulator.selectors import Selector

StorageKey = tuple[str, str]  # (group, plural)
ObjectKey = tuple[str, str]  # (namespace or '', name)

_GENERATE_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def now_rfc3339() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    object: dict[str, Any]
    old: dict[str, Any] | None = None


@dataclass
class WriteResult:
    object: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    created: bool = False


def _fold_string_data(secret: dict[str, Any]) -> None:
    """A Secret's stringData is write-only: the API server's conversion writes each value into `data`
    (base64, winning over a `data` key of the same name) and never stores or returns stringData."""
    string_data = secret.pop("stringData", None) or {}
    if string_data:
        data = secret.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


class Store:
    """Objects of all resources, the resourceVersion counter, event histories, watchers."""

    def __init__(
        self, registry: Registry, *, history_size: int = 1000, implicit_namespaces: bool = True
    ) -> None:
        self.registry = registry
        self.history_size = history_size
        self.implicit_namespaces = implicit_namespaces
        self.resource_version = 0
        self._objects: dict[StorageKey, dict[ObjectKey, dict[str, Any]]] = collections.defaultdict(dict)
        self._history: dict[StorageKey, collections.deque[WatchEvent]] = {}
        self._floors: dict[StorageKey, int] = collections.defaultdict(int)
        self._watchers: dict[StorageKey, set[asyncio.Queue[WatchEvent | None]]] = collections.defaultdict(set)
        self._orphaning: set[str] = set()  # uids deleted with propagationPolicy=Orphan
        self.on_crd_change: list[Callable[[], None]] = []

    # -------------------------------------------------------------------------------------------------
    # Reading
    # -------------------------------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self._objects[rt.storage_key].get(self._key(rt, namespace, name))
        if obj is None:
            raise errors.not_found(rt.group, rt.plural, name)
        return self._present(rt, obj)

    def find(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self._objects[rt.storage_key].get(self._key(rt, namespace, name))
        return None if obj is None else self._present(rt, obj)

    def list_objects(
        self, rt: ResourceType, namespace: str | None = None, selector: Selector | None = None
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = []
        for (ns, _), obj in sorted(self._objects[rt.storage_key].items()):
            if rt.namespaced and namespace and ns != namespace:
                continue
            if selector and not selector.matches(obj):
                continue
            result.append(self._present(rt, obj))
        return result

    def all_objects(self) -> Iterable[tuple[StorageKey, ObjectKey, dict[str, Any]]]:
        for skey, objs in list(self._objects.items()):
            for okey, obj in list(objs.items()):
                yield skey, okey, obj

    def _present(self, rt: ResourceType, obj: Mapping[str, Any]) -> dict[str, Any]:
        result = copy.deepcopy(dict(obj))
        result["apiVersion"] = rt.api_version
        if rt.schema:
            # Defaults are also applied on reads (as the apiserver does for data from etcd).
            schema.apply_defaults(rt.schema, result)
        return result

    def _key(self, rt: ResourceType, namespace: str | None, name: str) -> ObjectKey:
        return ((namespace or "") if rt.namespaced else "", name)

    # -------------------------------------------------------------------------------------------------
    # Watching
    # -------------------------------------------------------------------------------------------------

    def subscribe(self, rt: ResourceType) -> asyncio.Queue[WatchEvent | None]:
        queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        self._watchers[rt.storage_key].add(queue)
        return queue

    def unsubscribe(self, rt: ResourceType, queue: asyncio.Queue[WatchEvent | None]) -> None:
        self._watchers[rt.storage_key].discard(queue)

    def close_watchers(self) -> None:
        for queues in self._watchers.values():
            for queue in queues:
                queue.put_nowait(None)

    def history_since(self, rt: ResourceType, rv: int) -> list[WatchEvent]:
        """Events after the resource version; raises 410 Expired if the history is too short."""
        floor = self._floors[rt.storage_key]
        if rv < floor:
            raise errors.expired(rv, floor + 1)
        return [event for event in self._history.get(rt.storage_key, ()) if event.rv > rv]

    def _emit(self, rt: ResourceType, event: WatchEvent) -> None:
        history = self._history.setdefault(rt.storage_key, collections.deque())
        history.append(event)
        while len(history) > self.history_size:
            dropped = history.popleft()
            self._floors[rt.storage_key] = dropped.rv
        for queue in list(self._watchers[rt.storage_key]):
            queue.put_nowait(event)

    def _next_rv(self) -> int:
        self.resource_version += 1
        return self.resource_version

    def _commit(
        self,
        rt: ResourceType,
        key: ObjectKey,
        obj: dict[str, Any],
        event_type: str,
        old: dict[str, Any] | None,
    ) -> dict[str, Any]:
        rv = self._next_rv()
        obj.setdefault("metadata", {})["resourceVersion"] = str(rv)
        if event_type == "DELETED":
            self._objects[rt.storage_key].pop(key, None)
        else:
            self._objects[rt.storage_key][key] = copy.deepcopy(obj)
        self._emit(rt, WatchEvent(rv, event_type, copy.deepcopy(obj), copy.deepcopy(old) if old else None))
        return self._present(rt, obj)

    # -------------------------------------------------------------------------------------------------
    # Creating
    # -------------------------------------------------------------------------------------------------

    def create(
        self,
        rt: ResourceType,
        namespace: str | None,
        body: Any,
        *,
        dry_run: bool = False,
        field_validation: str | None = None,
    ) -> WriteResult:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        obj = copy.deepcopy(body)
        with errors.rejections():
            admission.check_type_meta(rt, obj)
            warnings = admission.check_unknown_fields(rt, obj, field_validation)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        namespace = self._resolve_namespace(rt, namespace, meta)
        if not meta.get("name") and isinstance(meta.get("generateName"), str):
            if admission.meta.generate_name_causes(rt.group, rt.plural, meta["generateName"]):
                with errors.rejections():
                    admission.validate_object(rt, obj)
            meta["name"] = self._generate_name(rt, namespace, meta["generateName"])

        for transient in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ):
            meta.pop(transient, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        if rt.status_subresource:
            obj.pop("status", None)

        # Validation before storage: an invalid object is a 422 even when its name is taken.
        with errors.rejections():
            admission.validate_object(rt, obj)
            warnings += builtin_validation.admit(rt, obj, None, field_validation)
        name = meta["name"]
        key = self._key(rt, namespace, name)
        if key in self._objects[rt.storage_key]:
            raise errors.already_exists(rt.group, rt.plural, name)
        if namespace:
            self._ensure_namespace(namespace, creating_in=True, dry_run=dry_run)

        self._type_specific_create(rt, obj)

        if dry_run:
            return WriteResult(self._present(rt, obj), warnings, created=True)
        result = self._commit(rt, key, obj, "ADDED", None)
        if rt == builtin.CRD_TYPE or (rt.group, rt.plural) == builtin.CRD_TYPE.storage_key:
            self._install_crd_from_object(result)
            result = self.get(rt, None, name)
        return WriteResult(result, warnings, created=True)

    def _resolve_namespace(
        self, rt: ResourceType, url_namespace: str | None, meta: dict[str, Any]
    ) -> str | None:
        if not rt.namespaced:
            meta.pop("namespace", None)
            return None
        body_namespace = meta.get("namespace")
        if url_namespace and body_namespace and url_namespace != body_namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        namespace = url_namespace or body_namespace
        if not namespace:
            raise errors.bad_request("the namespace of the object is required for a namespaced resource")
        meta["namespace"] = namespace
        return str(namespace)

    def _generate_name(self, rt: ResourceType, namespace: str | None, prefix: str) -> str:
        for _ in range(100):
            name = prefix + "".join(random.choices(_GENERATE_CHARS, k=5))
            if self._key(rt, namespace, name) not in self._objects[rt.storage_key]:
                return name
        raise errors.ApiError(500, "AlreadyExists", "cannot generate a unique name")  # pragma: no cover

    def _type_specific_create(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        if rt.storage_key == ("", "namespaces"):
            spec = obj.setdefault("spec", {})
            if not spec.get("finalizers"):
                spec["finalizers"] = ["kubernetes"]
            obj["status"] = {"phase": "Active"}
            labels = obj["metadata"].setdefault("labels", {})
            labels.setdefault("kubernetes.io/metadata.name", obj["metadata"]["name"])
        elif rt.storage_key == ("", "secrets"):
            obj.setdefault("type", "Opaque")
            _fold_string_data(obj)
        elif rt.storage_key == ("", "pods"):
            obj["status"] = {"phase": "Pending"}
        elif rt.storage_key == builtin.CRD_TYPE.storage_key:
            self._validate_crd(obj)
            names = (obj.get("spec") or {}).get("names") or {}
            obj["status"] = {
                "acceptedNames": copy.deepcopy(names),
                "conditions": [
                    {
                        "type": "NamesAccepted",
                        "status": "True",
                        "reason": "NoConflicts",
                        "message": "no conflicts found",
                        "lastTransitionTime": now_rfc3339(),
                    },
                    {
                        "type": "Established",
                        "status": "True",
                        "reason": "InitialNamesAccepted",
                        "message": "the initial names have been accepted",
                        "lastTransitionTime": now_rfc3339(),
                    },
                ],
                "storedVersions": [
                    v["name"] for v in (obj.get("spec") or {}).get("versions") or [] if v.get("storage")
                ],
            }

    def _validate_crd(self, crd: dict[str, Any], old: dict[str, Any] | None = None) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        name = crd["metadata"]["name"]
        causes: list[Cause] = []
        if not spec.get("group"):
            causes.append(Cause("spec.group", "Required value", "FieldValueRequired"))
        if not names.get("plural"):
            causes.append(Cause("spec.names.plural", "Required value", "FieldValueRequired"))
        if not names.get("kind"):
            causes.append(Cause("spec.names.kind", "Required value", "FieldValueRequired"))
        if not spec.get("versions"):
            causes.append(
                Cause(
                    "spec.versions",
                    'Invalid value: "null": must have exactly one version marked as storage version',
                )
            )
        if not causes and name != f"{names['plural']}.{spec['group']}":
            causes.append(
                Cause(
                    "metadata.name",
                    f'Invalid value: {schema.render_value(name)}: must be spec.names.plural+"."+spec.group',
                )
            )
        if not causes:
            # the static cost of the CEL rules, within the per-rule and per-schema limits
            causes.extend(cel_cost.crd_cost_causes(crd, old))
        if causes:
            raise errors.invalid("CustomResourceDefinition", "apiextensions.k8s.io", name, causes)

    def _install_crd_from_object(self, crd: Mapping[str, Any]) -> None:
        self.registry.add_crd(crd)
        for callback in self.on_crd_change:
            callback()

    # -------------------------------------------------------------------------------------------------
    # Namespaces
    # -------------------------------------------------------------------------------------------------

    def _ensure_namespace(self, namespace: str, *, creating_in: bool = False, dry_run: bool = False) -> None:
        ns_rt = builtin.NAMESPACE_TYPE
        existing = self._objects[ns_rt.storage_key].get(("", namespace))
        if existing is not None:
            if creating_in and (existing.get("metadata") or {}).get("deletionTimestamp"):
                raise errors.forbidden(
                    f"unable to create new content in namespace {namespace} because it is being terminated",
                    namespace,
                    "",
                    "namespaces",
                )
            return
        if not self.implicit_namespaces:
            raise errors.not_found("", "namespaces", namespace)
        if not dry_run:
            self.create(
                ns_rt, None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
            )

    def ensure_namespace(self, namespace: str) -> None:
        self._ensure_namespace(namespace)

    # -------------------------------------------------------------------------------------------------
    # Updating
    # -------------------------------------------------------------------------------------------------

    def replace(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: str | None = None,
        from_patch: bool = False,
    ) -> WriteResult:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        key = self._key(rt, namespace, name)
        stored = self._objects[rt.storage_key].get(key)
        if stored is None:
            raise errors.not_found(rt.group, rt.plural, name)
        old = copy.deepcopy(stored)
        obj = copy.deepcopy(body)
        with errors.rejections():
            admission.check_type_meta(rt, obj)
            warnings = (
                admission.check_unknown_fields(rt, obj, field_validation) if subresource != "status" else []
            )
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if meta.get("name") is not None and meta.get("name") != name:
            raise errors.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )

        # Optimistic concurrency.
        old_meta = old["metadata"]
        given_rv = meta.get("resourceVersion")
        if given_rv:
            if str(given_rv) != old_meta["resourceVersion"]:
                raise errors.conflict(rt.group, rt.plural, name)
        elif not from_patch and rt.is_custom:
            raise errors.invalid(
                rt.kind,
                rt.group,
                name,
                [Cause("metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")],
            )

        if subresource == "status":
            new = copy.deepcopy(old)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
        else:
            new = obj
            if rt.status_subresource:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            new_meta = new["metadata"]
            for immutable in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "name",
                "namespace",
            ):
                if immutable in old_meta:
                    new_meta[immutable] = old_meta[immutable]
                else:
                    new_meta.pop(immutable, None)
            new_meta.pop("managedFields", None)
            if old_meta.get("deletionTimestamp"):
                added = set(new_meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
                if added:
                    raise errors.invalid(
                        rt.kind,
                        rt.group,
                        name,
                        [
                            Cause(
                                "metadata.finalizers",
                                f"Forbidden: no new finalizers can be added if the object is being "
                                f"deleted, found new finalizers {sorted(added)!r}",
                                "FieldValueForbidden",
                            )
                        ],
                    )
        new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
        if rt.storage_key == builtin.CRD_TYPE.storage_key and subresource != "status":
            self._validate_crd(new, old)
        if rt.storage_key == ("", "secrets"):
            _fold_string_data(new)

        with errors.rejections():
            admission.validate_object(rt, new, old, check_metadata=subresource != "status")
            if subresource != "status":
                warnings += builtin_validation.admit(rt, new, old, field_validation)

        # Generation: bumped when anything other than metadata/status changes.
        if self._spec_changed(rt, old, new):
            new["metadata"]["generation"] = int(old_meta.get("generation") or 0) + 1

        if self._same(old, new):
            return WriteResult(self._present(rt, old), warnings)
        if dry_run:
            return WriteResult(self._present(rt, new), warnings)

        result = self._commit(rt, key, new, "MODIFIED", old)
        if rt.storage_key == builtin.CRD_TYPE.storage_key:
            self._install_crd_from_object(result)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            result = self._purge(rt, key)
        return WriteResult(result, warnings)

    @staticmethod
    def _spec_changed(rt: ResourceType, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
        # For custom resources without the status subresource, the status is just another field.
        ignored = builtin.NON_SPEC_FIELDS
        if rt.is_custom and not rt.status_subresource:
            ignored = ignored - {"status"}
        keys = (set(old) | set(new)) - ignored
        return any(old.get(k) != new.get(k) for k in keys)

    @staticmethod
    def _same(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
        return bool(old == new)

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        content_type: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: str | None = None,
        field_manager: str | None = None,
        force: bool = False,
    ) -> WriteResult:
        media = content_type.split(";", 1)[0].strip().lower()
        if media not in patches.PATCH_TYPES or (rt.is_custom and media == patches.STRATEGIC_MERGE_PATCH):
            accepted = [patches.JSON_PATCH, patches.MERGE_PATCH, patches.APPLY_PATCH]
            if not rt.is_custom:
                accepted.insert(2, patches.STRATEGIC_MERGE_PATCH)
            raise errors.unsupported_media_type(content_type, accepted)
        key = self._key(rt, namespace, name)
        stored = self._objects[rt.storage_key].get(key)
        if stored is None:
            if media == patches.APPLY_PATCH and subresource is None:
                if not isinstance(body, dict):
                    raise errors.bad_request("the apply patch must be an object")
                body = copy.deepcopy(body)
                body.setdefault("metadata", {})["name"] = name
                if rt.namespaced:
                    body["metadata"].setdefault("namespace", namespace)
                return self.create(rt, namespace, body, dry_run=dry_run, field_validation=field_validation)
            raise errors.not_found(rt.group, rt.plural, name)
        if media == patches.APPLY_PATCH and isinstance(body, dict):
            with errors.rejections():
                admission.check_type_meta(rt, copy.deepcopy(body))
        current = self._present(rt, stored)
        try:
            patched = patches.patch_object(content_type, current, body)
        except patches.PatchError as e:
            raise errors.ApiError(
                422 if media == patches.JSON_PATCH else 400,
                "Invalid" if media == patches.JSON_PATCH else "BadRequest",
                str(e),
            ) from e
        if not isinstance(patched, dict):
            raise errors.bad_request("the patched object must be a JSON object")
        patched_rv = (patched.get("metadata") or {}).get("resourceVersion")
        if patched_rv and str(patched_rv) != stored["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.group, rt.plural, name)
        patched.setdefault("metadata", {})["resourceVersion"] = stored["metadata"]["resourceVersion"]
        return self.replace(
            rt,
            namespace,
            name,
            patched,
            subresource=subresource,
            dry_run=dry_run,
            field_validation=field_validation,
            from_patch=True,
        )

    # -------------------------------------------------------------------------------------------------
    # Deleting
    # -------------------------------------------------------------------------------------------------

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        dry_run: bool = False,
    ) -> WriteResult:
        options = options or {}
        key = self._key(rt, namespace, name)
        stored = self._objects[rt.storage_key].get(key)
        if stored is None:
            raise errors.not_found(rt.group, rt.plural, name)
        meta = stored["metadata"]
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != meta.get("uid"):
            raise errors.conflict(
                rt.group,
                rt.plural,
                name,
                f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                f"UID in object meta: {meta.get('uid')}",
            )
        precondition_rv = preconditions.get("resourceVersion") or (options.get("metadata") or {}).get(
            "resourceVersion"
        )
        if precondition_rv and str(precondition_rv) != meta.get("resourceVersion"):
            raise errors.conflict(
                rt.group,
                rt.plural,
                name,
                f"Precondition failed: ResourceVersion in precondition: {precondition_rv}, "
                f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
            )
        policy = options.get("propagationPolicy")
        if options.get("orphanDependents") is True:
            policy = "Orphan"
        if dry_run:
            return WriteResult(self._present(rt, stored))
        if policy == "Orphan":
            self._orphaning.add(meta["uid"])
        if meta.get("deletionTimestamp"):
            return WriteResult(self._present(rt, stored))  # already being deleted
        if rt.storage_key == ("", "namespaces"):
            return WriteResult(self._delete_namespace(rt, key))
        if meta.get("finalizers"):
            old = copy.deepcopy(stored)
            new = copy.deepcopy(stored)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["metadata"]["generation"] = int(meta.get("generation") or 0) + 1
            return WriteResult(self._commit(rt, key, new, "MODIFIED", old))
        return WriteResult(self._purge(rt, key))

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        selector: Selector | None,
        options: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        deleted = []
        for obj in self.list_objects(rt, namespace, selector):
            meta = obj["metadata"]
            if self._key(rt, meta.get("namespace"), meta["name"]) in self._objects[rt.storage_key]:
                deleted.append(self.delete(rt, meta.get("namespace"), meta["name"], options).object)
        return deleted

    def _purge(self, rt: ResourceType, key: ObjectKey) -> dict[str, Any]:
        """Finally remove the object (no finalizers left), then garbage-collect its dependents."""
        stored = self._objects[rt.storage_key][key]
        final = copy.deepcopy(stored)
        result = self._commit(rt, key, final, "DELETED", stored)
        uid = final["metadata"].get("uid")
        if rt.storage_key == builtin.CRD_TYPE.storage_key:
            self._uninstall_crd(final)
        if uid:
            self._collect_garbage(uid, orphan=uid in self._orphaning)
            self._orphaning.discard(uid)
        namespace = key[0]
        if namespace:
            self._maybe_finish_namespace(namespace)
        return result

    def _uninstall_crd(self, crd: Mapping[str, Any]) -> None:
        spec = crd.get("spec") or {}
        group, plural = spec.get("group", ""), (spec.get("names") or {}).get("plural", "")
        rtypes = self.registry.versions_of(group, plural)
        for okey in list(self._objects[(group, plural)]):
            if rtypes:
                self._purge_force(rtypes[0], okey)
        self.registry.remove_crd(crd["metadata"]["name"])
        for callback in self.on_crd_change:
            callback()

    def _purge_force(self, rt: ResourceType, key: ObjectKey) -> None:
        if key in self._objects[rt.storage_key]:
            self._purge(rt, key)

    def _collect_garbage(self, owner_uid: str, *, orphan: bool) -> None:
        live_uids = {obj["metadata"].get("uid") for _, _, obj in self.all_objects()}
        for skey, okey, obj in self.all_objects():
            refs = (obj.get("metadata") or {}).get("ownerReferences") or []
            if not any(ref.get("uid") == owner_uid for ref in refs):
                continue
            rt = self._any_type(skey)
            if rt is None or okey not in self._objects[skey]:
                continue
            remaining = [ref for ref in refs if ref.get("uid") != owner_uid]
            if orphan or any(ref.get("uid") in live_uids for ref in remaining):
                # Orphaned or still owned by others: only the dangling reference is removed.
                new = copy.deepcopy(obj)
                if remaining:
                    new["metadata"]["ownerReferences"] = remaining
                else:
                    new["metadata"].pop("ownerReferences", None)
                self._commit(rt, okey, new, "MODIFIED", obj)
            else:
                self.delete(rt, okey[0] or None, okey[1], {"propagationPolicy": "Background"})

    def _any_type(self, skey: StorageKey) -> ResourceType | None:
        for rt in self.registry:
            if rt.storage_key == skey:
                return rt
        return None

    def _delete_namespace(self, rt: ResourceType, key: ObjectKey) -> dict[str, Any]:
        namespace = key[1]
        stored = self._objects[rt.storage_key][key]
        old = copy.deepcopy(stored)
        new = copy.deepcopy(stored)
        new["metadata"]["deletionTimestamp"] = now_rfc3339()
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        new.setdefault("status", {})["phase"] = "Terminating"
        result = self._commit(rt, key, new, "MODIFIED", old)
        for skey, okey, _obj in self.all_objects():
            other = self._any_type(skey)
            if (
                other is not None
                and other.namespaced
                and okey[0] == namespace
                and okey in self._objects[skey]
            ):
                self.delete(other, namespace, okey[1], {"propagationPolicy": "Background"})
        if self._maybe_finish_namespace(namespace):
            return self._present(rt, new)
        return result

    def _maybe_finish_namespace(self, namespace: str) -> bool:
        ns_rt = builtin.NAMESPACE_TYPE
        ns = self._objects[ns_rt.storage_key].get(("", namespace))
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return False
        for skey, okey, _obj in self.all_objects():
            other = self._any_type(skey)
            if other is not None and other.namespaced and okey[0] == namespace:
                return False
        self._purge(ns_rt, ("", namespace))
        return True
