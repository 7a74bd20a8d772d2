"""What a reference resolves to locally: the referenced manifest's spec and what `tandem up` recorded of
its work (the collection, the adapter folder), in the core's terms, as the operator resolves it from the
referenced object's spec and status."""

from __future__ import annotations

from pathlib import Path

from tandem.api.v1alpha1 import HybridEndpointSpec
from tandem.core.references import ResolvedAdapter, ResolvedKnowledgeBase, resolve_knowledge_base
from tandem.workloads.adapter_sync import Fetcher

from .manifests import Manifests, Resource
from .runner import WorkFailed
from .state import State

# A KnowledgeBase not Ready for one of these reasons is indexed, but its Milvus does not answer now: what
# refers to it is built as usual, and reports the outage (a HybridEndpoint: RetrievalUnavailable).
UNAVAILABLE = ("MilvusUnavailable", "Stopped")


def knowledge_base(state: State, manifests: Manifests, namespace: str, name: str) -> ResolvedKnowledgeBase:
    """An indexed KnowledgeBase (WorkFailed until it is)."""
    kb_state = state.resource("KnowledgeBase", namespace, name)
    kb = manifests.knowledge_base(namespace, name)
    indexed = kb_state.ready or (kb_state.reason in UNAVAILABLE and "milvusUri" in kb_state.local)
    if not indexed or kb is None:
        raise WorkFailed("WaitingForKnowledgeBase", f"KnowledgeBase {name} is not Ready")
    return resolve_knowledge_base(
        namespace,
        name,
        kb.spec,
        default_milvus_uri=kb_state.local["milvusUri"],
        revision=kb_state.figures.get("indexedRevision"),
        collection=kb_state.figures.get("collection"),
    )


def write_private(path: Path, text: str) -> None:
    """A credential file only this user can read, in a folder only this user can enter, created so from
    the start (never readable by others, not even briefly)."""
    path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    path.parent.chmod(0o700)
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)


def secret_token_file(directory: Path, manifests: Manifests, kb: ResolvedKnowledgeBase) -> str | None:
    """The KnowledgeBase's Milvus token as a file, as a pod gets it mounted from its Secret key."""
    ref = kb.credentials
    if ref is None:
        return None
    data = manifests.secrets.get((kb.namespace, ref.name))
    if data is None or ref.key not in data:
        raise WorkFailed(
            "SecretNotFound",
            f"KnowledgeBase {kb.namespace}/{kb.name}: spec.milvus.credentialsSecretRef: no key {ref.key!r} "
            f"in Secret {kb.namespace}/{ref.name} among the manifests",
        )
    path = directory / "secrets" / f"milvus-{kb.namespace}-{kb.name}" / "token"
    write_private(path, data[ref.key])
    return str(path)


def secret_folder(
    directory: Path, manifests: Manifests, namespace: str, name: str, where: str, *, optional: bool = False
) -> Path:
    """A Secret among the manifests as a folder of one private file per key, as a pod gets it mounted
    (a store's credentials: `tandem.workloads.artifacts.Credentials.from_folder` reads it). `optional`:
    a Secret not among them is an empty folder (an optional volume's), not SecretNotFound."""
    data = manifests.secrets.get((namespace, name))
    if data is None and not optional:
        raise WorkFailed("SecretNotFound", f"{where}: no Secret {namespace}/{name} among the manifests")
    folder = directory / "secrets" / f"store-{namespace}-{name}"
    for old in folder.glob("*") if folder.is_dir() else []:
        old.unlink()  # a key removed from the Secret is gone from the folder too
    folder.mkdir(parents=True, mode=0o700, exist_ok=True)
    for key, value in (data or {}).items():
        write_private(folder / key, value)
    return folder


def fetcher_for(
    directory: Path, manifests: Manifests, he: Resource[HybridEndpointSpec], adapters: list[ResolvedAdapter]
) -> Fetcher | None:
    """What fetches the endpoint's oci:// and s3:// adapters into `tandem up`'s adapter cache (as the
    vLLM pod's adapter sync does), with their store's credentials; None when none is fetched. Refused as
    the operator refuses: an adapter without a digest, adapters that name different store settings."""
    remote = [a for a in adapters if a.remote]
    if not remote:
        return None
    if missing := [a.name for a in remote if not a.digest]:
        raise WorkFailed(
            "AdapterDigestMissing",
            f"HybridEndpoint {he.name}: adapters {', '.join(missing)}: a fetched adapter is loaded only once "
            "its files have the digest its training recorded: set the adapter's digest",
        )
    stores = {(a.credentials, a.insecure) for a in remote}
    if len(stores) > 1:
        raise WorkFailed(
            "AdapterStoresConflict",
            f"HybridEndpoint {he.name}: the oci:// and s3:// adapters name different credentialsSecretRef or "
            "insecure settings; an endpoint's adapters are fetched with one",
        )
    [(secret, insecure)] = stores
    credentials = (
        secret_folder(
            directory, manifests, he.namespace, secret, f"HybridEndpoint {he.namespace}/{he.name}: adapters"
        )
        if secret is not None
        else None
    )
    # The endpoint's own cache (as each vLLM pod has its own): the sync prunes what it does not serve.
    return Fetcher(
        directory / "endpoints" / f"{he.namespace}-{he.name}" / "adapter-cache",
        credentials,
        insecure=insecure,
    )
