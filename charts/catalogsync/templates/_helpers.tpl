{{/* The prefix of every object's name: "catalogsync" gives the names of deploy/. */}}
{{- define "catalogsync.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "catalogsync.controllerName" -}}
{{ include "catalogsync.fullname" . }}-controller
{{- end -}}

{{- define "catalogsync.syncJobName" -}}
{{ include "catalogsync.fullname" . }}-sync-job
{{- end -}}

{{- define "catalogsync.syncJobServiceAccount" -}}
{{ default (include "catalogsync.syncJobName" .) .Values.syncJob.serviceAccount.name }}
{{- end -}}

{{- define "catalogsync.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/* Labels of every object; deploy/ has the first, Helm adds the others. */}}
{{- define "catalogsync.labels" -}}
app.kubernetes.io/name: catalogsync
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selects the controller Pods (Deployment, Service, ServiceMonitor, spreading). */}}
{{- define "catalogsync.selectorLabels" -}}
app.kubernetes.io/name: catalogsync
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{/*
The app namespaces where the chart creates the sync Jobs' ServiceAccount and binds it:
the watched one, or else syncJob.namespaces.
*/}}
{{- define "catalogsync.syncJobNamespaces" -}}
{{- if .Values.watchNamespace -}}
{{ list .Values.watchNamespace | toJson }}
{{- else -}}
{{ .Values.syncJob.namespaces | uniq | toJson }}
{{- end -}}
{{- end -}}

{{/* What the controller may do with the resources it reconciles (deploy/rbac.yaml). */}}
{{- define "catalogsync.controllerRules" -}}
- apiGroups: [catalogsync.io]
  resources: [identitydomains, catalogapps, syncpolicies, syncruns]
  verbs: [get, list, watch, patch]
- apiGroups: [catalogsync.io]
  resources: [identitydomains/status, catalogapps/status, syncpolicies/status, syncruns/status]
  verbs: [patch]
- apiGroups: [catalogsync.io]
  resources: [syncruns]
  verbs: [create, delete]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete, patch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
# A Job that has not started its pod: its pods and the Job controller's events say why.
- apiGroups: [""]
  resources: [pods, events]
  verbs: [list]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# Each run's own Role and RoleBinding (its Job's API access, by resource name), created
# with the Job and owned by the run. Kubernetes lets the controller grant only what it
# holds itself: no escalate or bind.
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [create]
# The sync Jobs' ServiceAccount, created with the first Job of a namespace (it holds
# no permission; each run's Role grants its Job's access).
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [create]
{{- end -}}

{{/*
The sync Jobs' shared role grants nothing: each run's Job gets its own Role from the
controller (read its run, app, domain and policy by name; patch its run's status).
*/}}
{{- define "catalogsync.syncJobRules" -}}
[]
{{- end -}}

{{/*
The --job-defaults file: the syncJob pod settings that are set, as YAML (empty when
none is, and then the chart renders nothing of it).
*/}}
{{- define "catalogsync.jobDefaults" -}}
{{- $set := dict -}}
{{- range $field := list "resources" "nodeSelector" "tolerations" "affinity" "priorityClassName" "imagePullSecrets" "env" -}}
{{- with get $.Values.syncJob $field -}}
{{- $_ := set $set $field . -}}
{{- end -}}
{{- end -}}
{{- with $set -}}
{{ toYaml . }}
{{- end -}}
{{- end -}}

{{- define "catalogsync.jobDefaultsName" -}}
{{ include "catalogsync.fullname" . }}-job-defaults
{{- end -}}
