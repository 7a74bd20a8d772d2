"""The `tandem` command on this machine: validate manifests, ingest a KnowledgeBase, search it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandem.cli import app
from tests.corpus import write_handbook

pytestmark = pytest.mark.integration
runner = CliRunner()


def manifest(tmp_path: Path, docs: Path, overlap: int = 8) -> Path:
    path = tmp_path / "kb.yaml"
    path.write_text(
        f"""apiVersion: tandem.dev/v1alpha1
kind: KnowledgeBase
metadata: {{name: handbook}}
spec:
  sources:
    - {{name: handbook, directory: {{path: "{docs}"}}}}
    - name: secret
      inline: {{documents: [{{id: vault, text: "The vault code is 4451."}}]}}
      accessLabels: [security]
  chunking: {{size: 64, overlap: {overlap}}}
"""
    )
    return path


def test_validate_names_the_field(tmp_path: Path) -> None:
    good = runner.invoke(app, ["validate", str(manifest(tmp_path, tmp_path))])
    assert good.exit_code == 0 and "valid" in good.output
    bad = runner.invoke(app, ["validate", str(manifest(tmp_path, tmp_path, overlap=100))])
    assert bad.exit_code == 1 and "overlap (100) must be smaller than size (64)" in bad.output


def test_ingest_then_search_locally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    kb = manifest(tmp_path, write_handbook(tmp_path / "docs"))
    try:
        first = runner.invoke(app, ["ingest", "-f", str(kb)])
        assert first.exit_code == 0, first.output
        assert '"documents": 5' in first.output and '"added": 5' in first.output
        again = runner.invoke(app, ["ingest", "-f", str(kb)])
        assert '"unchanged": 5' in again.output and '"embedded_chunks": 0' in again.output
        found = runner.invoke(app, ["search", "-f", str(kb), "vault code", "-g", "security", "-k", "2"])
        assert found.exit_code == 0 and "secret/vault" in found.output
        hidden = runner.invoke(app, ["search", "-f", str(kb), "vault code", "-k", "2"])
        assert "secret/vault" not in hidden.output
    finally:
        runner.invoke(app, ["down"])  # the milvus-lite server `tandem ingest` shares with `tandem up`


def test_search_finds_what_tandem_up_indexed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: `tandem ingest`/`search` used `.tandem/milvus.db` while `tandem up` indexes into its
    milvus-lite server in `.tandem/milvus`, so a search after `up` found nothing."""
    from tandem.platform.local.manifests import load
    from tandem.platform.local.platform import LocalPlatform

    monkeypatch.chdir(tmp_path)
    kb = manifest(tmp_path, write_handbook(tmp_path / "docs"))
    state = tmp_path / ".tandem"
    platform = LocalPlatform(state)
    try:
        assert platform.reconcile(load(kb, state)), platform.state.resources
        found = runner.invoke(app, ["search", "-f", str(kb), "vault code", "-g", "security", "-k", "2"])
        assert found.exit_code == 0 and "secret/vault" in found.output, found.output
        assert not (state / "milvus.db").exists()
    finally:
        platform.down()
