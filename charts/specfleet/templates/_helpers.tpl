{{/* Names: <release>-specfleet unless overridden, cut to the 63 characters a label allows. */}}
{{- define "specfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "specfleet.fullname" -}}
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

{{- define "specfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The operator pods' selector: immutable in a Deployment, so never add to it. */}}
{{- define "specfleet.selectorLabels" -}}
app.kubernetes.io/name: specfleet-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The selector labels as key=value,...: how the operator names its own pods to the runtime
NetworkPolicy (only they may reach a replica's admin port). */}}
{{- define "specfleet.selectorLabelString" -}}
{{- $pairs := list }}
{{- range $key, $value := include "specfleet.selectorLabels" . | fromYaml }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{- define "specfleet.labels" -}}
{{ include "specfleet.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: specfleet
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "specfleet.chart" . }}
{{- end }}

{{- define "specfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "specfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "specfleet.peeringName" -}}
{{- default (include "specfleet.fullname" .) .Values.peering.name }}
{{- end }}

{{- define "specfleet.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* true when the operator watches every namespace (ClusterRole, ClusterKopfPeering). */}}
{{- define "specfleet.clusterwide" -}}
{{- if not .Values.watchNamespaces }}true{{ end }}
{{- end }}
