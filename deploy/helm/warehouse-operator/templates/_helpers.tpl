{{/* Chart name, truncated to a DNS label. */}}
{{- define "warehouse-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, prefixed with the chart name unless it contains it. */}}
{{- define "warehouse-operator.fullname" -}}
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

{{- define "warehouse-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "warehouse-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "warehouse-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "warehouse-operator.labels" -}}
helm.sh/chart: {{ include "warehouse-operator.chart" . }}
{{ include "warehouse-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: warehouse-operator
{{- end }}

{{- define "warehouse-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "warehouse-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "warehouse-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when leader election is on: forced by the value, or "auto" with replicas > 1. */}}
{{- define "warehouse-operator.leaderElect" -}}
{{- $v := .Values.leaderElection.enabled }}
{{- if kindIs "bool" $v }}
{{- ternary "true" "false" $v }}
{{- else }}
{{- ternary "true" "false" (gt (int .Values.replicas) 1) }}
{{- end }}
{{- end }}

{{/* "true" when a PodDisruptionBudget is made: forced, or "auto" with replicas > 1. */}}
{{- define "warehouse-operator.pdb" -}}
{{- $v := .Values.podDisruptionBudget.enabled }}
{{- if kindIs "bool" $v }}
{{- ternary "true" "false" $v }}
{{- else }}
{{- ternary "true" "false" (gt (int .Values.replicas) 1) }}
{{- end }}
{{- end }}

{{/* "true" when the operator manages the webhook's certificate and CA bundle itself. */}}
{{- define "warehouse-operator.webhookSelfManaged" -}}
{{- ternary "true" "false" (and .Values.webhook.enabled (not .Values.webhook.certManager.enabled)) }}
{{- end }}

{{- define "warehouse-operator.webhookServiceName" -}}
{{- printf "%s-webhook" (include "warehouse-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret holding the webhook's certificate: cert-manager's, or the operator's own. */}}
{{- define "warehouse-operator.webhookCertName" -}}
{{- printf "%s-webhook-tls" (include "warehouse-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The rules the operator needs in a namespace it watches (a ClusterRole's when it watches all):
exactly its API calls, no wildcards, Secrets read-only.
*/}}
{{- define "warehouse-operator.watchRules" -}}
# Watch connections; "patch" adds and removes the in-use finalizer.
- apiGroups: ["warehouse-operator.io"]
  resources: ["warehouseconnections"]
  verbs: ["get", "list", "watch", "patch"]
# Write test results.
- apiGroups: ["warehouse-operator.io"]
  resources: ["warehouseconnections/status"]
  verbs: ["get", "patch", "update"]
# Read credentials; a Secret's change triggers a re-test. Never written.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
# Connected / failure events.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.webhook.enabled }}
# Admission: a deletion while the namespace itself is being deleted is never refused.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
{{- end }}
{{- range .Values.inUseKinds }}
{{- $parts := splitList "/" . }}
{{- if eq (len $parts) 3 }}
# Deletion-in-use check (read-only): {{ . }}
- apiGroups: [{{ index $parts 0 | quote }}]
  resources: [{{ index $parts 2 | quote }}]
  verbs: ["get", "list", "watch"]
{{- else if eq (len $parts) 2 }}
# Deletion-in-use check (read-only): {{ . }}
- apiGroups: [""]
  resources: [{{ index $parts 1 | quote }}]
  verbs: ["get", "list", "watch"]
{{- else }}
{{- fail (printf "inUseKinds: %q is not group/version/plural or version/plural" .) }}
{{- end }}
{{- end }}
{{- end }}
