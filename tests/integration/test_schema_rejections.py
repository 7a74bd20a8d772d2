"""The invalid-manifest corpus through the API server and `tandem validate`: same verdict, same causes.

Each case of tests/invalid_manifests.py goes to the emulator over HTTP as `kubectl apply` sends it (the
resource found through discovery, `fieldValidation=Strict`) and through `tandem validate`; both must refuse
it with the same message and causes, naming the case's field with one cause (one mistake, one message).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from typer.testing import CliRunner

from tandem.api.admission.manifests import review
from tandem.api.kinds import ALL_KINDS
from tandem.cli import app
from tests.emulator.runner import run_emulator
from tests.emulator.server import Emulator, load_manifests
from tests.invalid_manifests import CORPUS, EV, RG, Case, base
from tests.manifests import CRDS, ROOT, load_all

pytestmark = pytest.mark.integration
in_module_loop = pytest.mark.asyncio(loop_scope="module")  # one emulator for the module


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[Emulator]:
    async with run_emulator(crds=load_manifests(CRDS)) as emu:
        yield emu


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(server: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        yield http


@dataclass
class Answer:
    admitted: bool
    code: int = 0  # 0: refused by the client, no resource serves the kind
    message: str = ""
    causes: list[str] = field(default_factory=list)  # "field: message", as the Status lists them


async def kubectl_create(client: httpx.AsyncClient, body: dict[str, Any]) -> Answer:
    """What `kubectl apply` (its default --validate=strict) gets for a new object."""
    api_version, kind = str(body.get("apiVersion") or ""), str(body.get("kind") or "")
    prefix = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    discovery = await client.get(prefix)
    resources = discovery.json().get("resources", []) if discovery.status_code == 200 else []
    plural = next((r["name"] for r in resources if r["kind"] == kind and "/" not in r["name"]), None)
    if plural is None:
        return Answer(False, 0, f'no matches for kind "{kind}" in version "{api_version}"')
    namespace = body["metadata"].get("namespace") or "default"
    url = f"{prefix}/namespaces/{namespace}/{plural}"
    response = await client.post(url, params={"fieldValidation": "Strict"}, json=body)
    if response.status_code == 201:
        await client.delete(f"{url}/{response.json()['metadata']['name']}")
        return Answer(True, 201)
    status = response.json()
    causes = [f"{c['field']}: {c['message']}" for c in (status.get("details") or {}).get("causes") or []]
    return Answer(False, response.status_code, status["message"], causes)


def validate_command(tmp_path: Path, body: dict[str, Any]) -> tuple[int, str]:
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(body))
    result = CliRunner().invoke(app, ["validate", str(path)])
    return result.exit_code, result.output


@in_module_loop
@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
async def test_the_api_server_and_tandem_validate_refuse_naming_the_field(
    case: Case, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    body = case.build()
    server = await kubectl_create(client, body)
    verdict = review(body)
    assert not server.admitted and not verdict.admitted, (server, verdict)

    # the same answer: code, message and causes
    assert verdict.code == server.code, (server, verdict)
    if server.code:
        assert verdict.message == server.message
        assert [str(c) for c in verdict.causes] == server.causes
    else:
        assert verdict.message.startswith(server.message)

    # naming the field, once (a CEL rule left unchecked after a type error is the API server's <nil> cause)
    if server.code == 422:
        named = [c for c in server.causes if not c.startswith("<nil>: ")]
        assert len(named) == 1 and named[0].startswith(case.field), server.causes
    elif server.code == 400:
        assert f'unknown field "{case.field}"' in server.message, server.message
    else:
        assert case.field == "apiVersion"

    # and the command says so, in plain text (the patterns keep their [a-z0-9])
    code, output = validate_command(tmp_path, body)
    assert code == 1, output
    assert output.startswith(f"invalid  {body['kind']} "), output
    if server.code == 422:
        for cause in server.causes:
            assert f"  {cause}\n" in output
    else:
        assert verdict.message in output


def test_the_corpus_covers_every_kind_with_one_rule_each() -> None:
    assert len(CORPUS) >= 60
    assert len({c.id for c in CORPUS}) == len(CORPUS)
    assert {c.kind for c in CORPUS} == {k.kind for k in ALL_KINDS}


def _valid_manifests() -> list[dict[str, Any]]:
    docs = load_all() + load_all(ROOT / "examples" / "quickstart") + [base(EV), base(RG)]
    return [d for d in docs if str(d["apiVersion"]).startswith("tandem.dev/")]


@in_module_loop
async def test_the_valid_manifests_are_admitted_by_both(client: httpx.AsyncClient, tmp_path: Path) -> None:
    for doc in _valid_manifests():
        server = await kubectl_create(client, doc)
        assert server.admitted, server
        assert review(doc).admitted
        code, output = validate_command(tmp_path, doc)
        assert code == 0 and output.startswith(f"valid    {doc['kind']} "), output


def test_patterns_are_printed_as_they_are(tmp_path: Path) -> None:
    """Rich markup would eat `[a-z0-9]` from a pattern; the output is plain text."""
    body = base("KnowledgeBase")
    body["spec"]["sources"][0]["name"] = "Policies_1"
    code, output = validate_command(tmp_path, body)
    assert code == 1
    assert "should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'" in output, output
