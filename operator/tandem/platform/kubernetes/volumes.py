"""Turn the storage URIs of a spec into volumes and in-pod paths."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tandem.api.v1alpha1.common import SecretKeyReference
from tandem.core.errors import PlanError

from .ownership import child_name

MILVUS_TOKENS_DIR = "/var/run/tandem/milvus"


@dataclass
class Mounts:
    """Volumes and mounts a pod needs, collected while resolving URIs (one volume per claim)."""

    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)

    def resolve(self, uri: str, *, read_only: bool, where: str) -> str:
        """The path or URI a workload in the pod uses for `uri`."""
        scheme, _, rest = uri.partition("://")
        if scheme == "file":
            raise PlanError(
                "LocalPathInCluster",
                f"{where}: {uri} is a local path, which only `tandem up` can read; "
                "use pvc://CLAIM/PATH or s3://BUCKET/PREFIX in a cluster",
            )
        if scheme != "pvc":
            return uri  # fetched by the workload itself (s3, https, hf, pypi)
        claim, _, sub = rest.partition("/")
        volume = "pvc-" + re.sub(r"[^a-z0-9-]", "-", claim.lower())[:50]
        mount_path = f"/mnt/{volume}"
        existing = next((m for m in self.mounts if m["name"] == volume), None)
        if existing is None:
            self.volumes.append(
                {"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}
            )
            self.mounts.append({"name": volume, "mountPath": mount_path, "readOnly": read_only})
        elif not read_only:
            # A claim written anywhere in the pod is mounted read-write everywhere in it.
            existing["readOnly"] = False
            for vol in self.volumes:
                if vol["name"] == volume:
                    vol["persistentVolumeClaim"]["readOnly"] = False
        return f"{mount_path}/{sub}".rstrip("/")

    def add_secret_key(self, volume: str, secret: str, key: str, mount_path: str, file_name: str) -> str:
        """Mount one key of a Secret as `mount_path/file_name` (read-only); the path of that file."""
        self.volumes.append(
            {"name": volume, "secret": {"secretName": secret, "items": [{"key": key, "path": file_name}]}}
        )
        self.mounts.append({"name": volume, "mountPath": mount_path, "readOnly": True})
        return f"{mount_path}/{file_name}"

    def add_secret(self, volume: str, secret: str, mount_path: str) -> str:
        """Mount every key of a Secret as a file under `mount_path` (read-only, owner-readable only)."""
        self.volumes.append({"name": volume, "secret": {"secretName": secret, "defaultMode": 0o440}})
        self.mounts.append({"name": volume, "mountPath": mount_path, "readOnly": True})
        return mount_path

    def add_config_map(self, name: str, mount_path: str) -> None:
        self.volumes.append({"name": "spec", "configMap": {"name": name}})
        self.mounts.append({"name": "spec", "mountPath": mount_path, "readOnly": True})


def mount_milvus_token(mounts: Mounts, kb_name: str, credentials: SecretKeyReference | None) -> str | None:
    """Mount a KnowledgeBase's Milvus token Secret key, if it has one; the file a workload reads it from.
    The caller checks that the Secret is in the pod's namespace (pods mount no other namespace's)."""
    if credentials is None:
        return None
    volume = f"milvus-{child_name(kb_name, 'token')}"[:63]
    directory = f"{MILVUS_TOKENS_DIR}/{kb_name}"
    if any(v["name"] == volume for v in mounts.volumes):
        return f"{directory}/token"
    return mounts.add_secret_key(volume, credentials.name, credentials.key, directory, "token")
