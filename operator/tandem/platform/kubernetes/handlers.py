"""kopf handlers: thin adapters from kopf's triggers to the Reconciler.

Every trigger (create, update, resume, resync timer, a child's event) funnels into the same
level-triggered `Reconciler.reconcile`. Deletion of a resource with external state waits on a cleanup
Job through kopf's finalizer; children are removed by Kubernetes' garbage collector (owner references).
"""

from __future__ import annotations

import logging
import os
import random
import socket
from typing import Any, cast

import kopf

from tandem.api.kinds import ADAPTER_TRAINING, KNOWLEDGE_BASE, RECONCILED_KINDS
from tandem.api.v1alpha1 import GROUP, VERSION

from .api import KubeApi, resource_of
from .children import CHILD_KINDS
from .conditions import Outcome
from .ownership import FIELD_MANAGER, MANAGED_BY, MANAGER
from .reconciler import Reconciler
from .settings import OperatorSettings

SETTINGS = OperatorSettings.from_env()  # for what must be known when handlers register (timer interval)
# Tests and `make demo` point the operator at the API emulator with this; clusters use the
# in-cluster service account or a kubeconfig.
SERVER_ENV = "TANDEM_KUBE_SERVER"
FINALIZER = "tandem.dev/finalizer"
EVENT_COMPONENT = FIELD_MANAGER  # "tandem-operator"


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    server = os.environ.get(SERVER_ENV)
    if server:
        return kopf.ConnectionInfo(server=server, insecure=True, scheme=None, token=None)
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Keep kopf's bookkeeping in annotations: status belongs to the resource's own fields.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="tandem.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="tandem.dev", key="last-handled-configuration"
    )
    settings.persistence.finalizer = FINALIZER
    # kopf waits this long for the echo of its own annotation patch before it would handle an older copy
    # of the object again; a busy API server's watch can lag more than the default 5 s.
    settings.persistence.consistency_timeout = 15
    settings.posting.level = logging.INFO
    # Events say who posted them (kubectl describe's "From" column is source.component): the operator, by
    # the name it also writes with (its field manager), not the framework ("kopf"); the instance is this
    # replica (the pod's name is its hostname), so two replicas' events can be told apart.
    settings.posting.reporting_component = EVENT_COMPONENT
    settings.posting.reporting_instance = os.environ.get("POD_NAME") or socket.gethostname()
    settings.posting.event_name_prefix = f"{MANAGER}-"
    settings.networking.request_timeout = 60
    settings.watching.server_timeout = 300
    # Among replicas, the one with the highest priority acts and the others pause (kopf peering):
    # a random priority per process makes "two replicas never both act" hold without coordination.
    settings.peering.priority = random.randint(1, 2**31)
    api = await KubeApi.connect(os.environ.get(SERVER_ENV))
    # Read again at start-up (not only at import): the environment of this run is what counts.
    memo["reconciler"] = Reconciler(api, OperatorSettings.from_env(), events=_post_event)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    reconciler: Reconciler | None = memo.get("reconciler")
    if reconciler is not None:
        await reconciler.drain(timeout=20)
        await reconciler.api.close()


@kopf.on.probe(id="reconciler")
def probe(memo: kopf.Memo, **_: Any) -> bool:
    return memo.get("reconciler") is not None


def _post_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    kopf.event(cast(kopf.Body, body), type=type_, reason=reason, message=message[:1024])


async def _reconcile(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    reconciler: Reconciler = memo["reconciler"]
    await reconciler.reconcile(dict(body))


async def _finalize(body: kopf.Body, memo: kopf.Memo, retry: int = 0, **_: Any) -> None:
    reconciler: Reconciler = memo["reconciler"]
    outcome: Outcome = await reconciler.finalize(dict(body))
    if outcome.state == "Stalled":
        # A new attempt after 30 s, doubling to 10 minutes: a cleanup that keeps failing is shown in status
        # and events, and does not run a Job a minute forever.
        delay = min(30 * 2**retry, 600)
        raise kopf.TemporaryError(f"cleanup failed: {outcome.message}", delay=delay)
    if outcome.state != "Ready":
        raise kopf.TemporaryError(outcome.message, delay=5)


async def _child_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A child changed or vanished: reconcile its owner, which repairs drift and refreshes status."""
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller") and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/"):
            reconciler: Reconciler = memo["reconciler"]
            await reconciler.trigger(ref["kind"], body["metadata"]["namespace"], ref["name"])


for _kind in RECONCILED_KINDS:
    _resource = (GROUP, VERSION, _kind.plural)
    _id = f"reconcile-{_kind.singular}"
    kopf.on.resume(*_resource, id=_id)(_reconcile)
    kopf.on.create(*_resource, id=_id)(_reconcile)
    kopf.on.update(*_resource, id=_id)(_reconcile)
    kopf.timer(*_resource, id=f"resync-{_kind.singular}", interval=SETTINGS.resync_seconds, idle=None)(
        _reconcile
    )
    # Only kinds with external state hold a finalizer; the rest are left to garbage collection.
    has_external_state = _kind in (KNOWLEDGE_BASE, ADAPTER_TRAINING)
    kopf.on.delete(*_resource, id=f"finalize-{_kind.singular}", optional=not has_external_state)(_finalize)

for _api_version, _child_kind in sorted({c for kinds in CHILD_KINDS.values() for c in kinds}):
    _child = resource_of(_api_version, _child_kind)
    kopf.on.event(
        group=_child.group,
        version=_api_version.rpartition("/")[2],
        plural=_child.plural,
        labels={MANAGED_BY: MANAGER},
        id=f"child-{_child.plural}",
    )(_child_changed)
