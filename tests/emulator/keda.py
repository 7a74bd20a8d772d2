"""KEDA's ScaledObject CRD for the emulator: KEDA's own (upstream/optional/keda.sh_scaledobjects.yaml,
unchanged; where it comes from is in upstream/README.md).

It is not among the CRDs the emulator loads by default, because a cluster without KEDA answers 404 for
ScaledObjects and a test holds the operator to saying so; a test that installs KEDA passes
``run_emulator(crds=[..., keda_crd()])``. What the emulator does with it is what it does with any CRD:
structural schema, pruning, ``format``, enums and the CRD's CEL rule (minReplicaCount at most
maxReplicaCount). KEDA's admission webhook (e.g. refusing a second ScaledObject on one target) is not
emulated.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

GROUP = "keda.sh"
VERSION = "v1alpha1"
KIND = "ScaledObject"
PLURAL = "scaledobjects"
CRD_FILE = Path(__file__).parent / "upstream" / "optional" / "keda.sh_scaledobjects.yaml"


@functools.cache
def _loaded() -> dict[str, Any]:
    [crd] = [d for d in yaml.safe_load_all(CRD_FILE.read_text()) if d]
    return dict(crd)


def keda_crd() -> dict[str, Any]:
    """The ScaledObject CRD, a new copy on each call (the emulator may keep and change what it is given)."""
    return copy.deepcopy(_loaded())


def scaled_object_schema() -> dict[str, Any]:
    """The v1alpha1 openAPIV3Schema of the CRD."""
    [version] = [v for v in keda_crd()["spec"]["versions"] if v["name"] == VERSION]
    return dict(version["schema"]["openAPIV3Schema"])
