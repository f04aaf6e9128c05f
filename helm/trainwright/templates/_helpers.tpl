{{/* The chart's name, shortened to a DNS label. */}}
{{- define "trainwright.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's object names: <release>-trainwright, or the release name when it says trainwright. */}}
{{- define "trainwright.fullname" -}}
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

{{/* Labels on every object. */}}
{{- define "trainwright.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "trainwright.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trainwright
{{- end }}

{{/* The operator pods' selector. */}}
{{- define "trainwright.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trainwright.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "trainwright.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "trainwright.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from {repository, tag, digest}; the tag defaults to the chart's appVersion. */}}
{{- define "trainwright.image" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* Cluster-wide unless operator.watchNamespaces lists namespaces. */}}
{{- define "trainwright.clusterwide" -}}
{{- if .Values.operator.watchNamespaces }}false{{ else }}true{{ end }}
{{- end }}

{{/* The operator's command-line flags. */}}
{{- define "trainwright.args" -}}
{{- if eq (include "trainwright.clusterwide" .) "true" }}
- --all-namespaces
{{- else }}
{{- range .Values.operator.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- end }}
- --metrics-port={{ .Values.operator.metricsPort }}
- --workers={{ .Values.operator.workers }}
- --trainer-image={{ include "trainwright.image" (list .Values.trainer.image .) }}
{{- if .Values.operator.standby.enabled }}
- --peering={{ .Values.operator.standby.peeringName }}
{{- end }}
{{- if .Values.operator.verbose }}
- --verbose
{{- end }}
{{- if .Values.operator.datasetCheck.enabled }}
- --dataset-check-start={{ .Values.operator.datasetCheck.startSeconds }}
{{- else }}
- --no-dataset-check
{{- end }}
{{- range .Values.operator.extraArgs }}
- {{ . }}
{{- end }}
{{- end }}

{{/* The rules on namespaced objects: in the ClusterRole cluster-wide, in a Role per watched namespace otherwise. */}}
{{- define "trainwright.namespacedRules" -}}
# The three kinds: watched and annotated by kopf, read by the controllers.
- apiGroups: [trainwright.io]
  resources: [trainingjobs, capacityplans, modelexports]
  verbs: [get, list, watch, patch]
# A TrainingJob's spec.export creates its ModelExport when it succeeds.
- apiGroups: [trainwright.io]
  resources: [modelexports]
  verbs: [create]
- apiGroups: [trainwright.io]
  resources: [trainingjobs/status, capacityplans/status, modelexports/status]
  verbs: [patch]
# Children: trainer and export ConfigMaps, the trainers' headless Service, their Jobs; and
# the calibration store (ConfigMap trainwright-calibration, patched as runs are observed).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, delete, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete, patch]
# Trainer and export pods: rank 0's address for /progress, exit codes, export summaries;
# watched: a trainer pod that cannot start is explained on its TrainingJob.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# kopf's and the controllers' Events on the three kinds; listed: a pending trainer
# pod's Warning Events (FailedScheduling, FailedMount) say why it does not start.
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]
# The claims a TrainingJob's spec names must exist (read only, never their data).
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get]
# Kueue (spec.queue): the LocalQueue is checked at planning; a trainer Job's Workload says
# why it waits (read) and is deactivated while spec.suspend is true (patch).
- apiGroups: [kueue.x-k8s.io]
  resources: [localqueues]
  verbs: [get]
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [list, patch]
# Kueue's visibility API: a queued job's position in its LocalQueue (read only).
- apiGroups: [visibility.kueue.x-k8s.io]
  resources: [localqueues/pendingworkloads]
  verbs: [get]
{{- end }}
{{- define "trainwright.peeringRules" -}}
# kopf peering: the replicas of a standby see each other here.
- apiGroups: [kopf.dev]
  resources: [{{ .resource }}]
  verbs: [get, list, watch, patch]
{{- end }}
