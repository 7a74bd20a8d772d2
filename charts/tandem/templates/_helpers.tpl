{{/* Names, labels and images shared by the templates. */}}

{{- define "tandem.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tandem.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tandem.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tandem.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tandem.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "tandem.labels" -}}
helm.sh/chart: {{ include "tandem.chart" . }}
{{ include "tandem.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tandem
{{- /* Helm owns these objects; "tandem" marks the operator's own children (its kopf event filter). */}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tandem.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tandem.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}: repository@digest when a digest is set, else
repository:tag, the tag defaulting to the chart's appVersion. Call with (dict "image" ... "root" $).
*/}}
{{- define "tandem.image" -}}
{{- $image := .image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/*
RBAC rules on the namespaced objects the operator touches. Each verb is used by the code (see the
README's RBAC section); tests/unit/test_chart.py compares these rules with the operator's calls.
*/}}
{{- define "tandem.namespacedRules" -}}
# Tandem resources: kopf watches them and patches finalizers and annotations; the reconciler reads them.
- apiGroups: ["tandem.dev"]
  resources: ["knowledgebases", "adaptertrainings", "hybridendpoints", "evaluations", "servingpools"]
  verbs: ["get", "list", "watch", "patch"]
# The reconciler writes status through the status subresource.
- apiGroups: ["tandem.dev"]
  resources:
    - "knowledgebases/status"
    - "adaptertrainings/status"
    - "hybridendpoints/status"
    - "evaluations/status"
    - "servingpools/status"
  verbs: ["patch"]
# Children carry ownerReferences with blockOwnerDeletion, which the OwnerReferencesPermissionEnforcement
# admission plugin (e.g. OpenShift) allows only with update on the owner's finalizers.
- apiGroups: ["tandem.dev"]
  resources:
    - "knowledgebases/finalizers"
    - "adaptertrainings/finalizers"
    - "hybridendpoints/finalizers"
    - "evaluations/finalizers"
    - "servingpools/finalizers"
  verbs: ["update"]
# Cross-namespace references are checked against the target namespace's grants.
- apiGroups: ["tandem.dev"]
  resources: ["referencegrants"]
  verbs: ["list"]
# Children: kopf watches them (label filter); the reconciler reads, server-side applies (create + patch)
# and prunes them.
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs", "cronjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["ray.io"]
  resources: ["rayjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# A pool's autoscaler when workloads.keda.prometheusUrl is set (KEDA installed); granted always, like
# rayjobs: without KEDA the kind is absent and nothing is listed.
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Workload results: the reconciler lists a Job's pods (by job-name) for their termination messages.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# kopf posts Events about the resources it handles; the operator lists the pods' FailedMount Events to
# name a missing Secret (it cannot read Secrets).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list"]
# Each HybridEndpoint's vLLM key: created once with a random value and never read back. Create only:
# get, list, watch or patch would let the operator read every Secret of every namespace it serves.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
{{- end }}

{{/* kopf's runtime discovery of CRDs (resources appearing and disappearing). */}}
{{- define "tandem.crdDiscoveryRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}
