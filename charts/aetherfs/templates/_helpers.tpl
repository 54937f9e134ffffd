{{/* Names, labels, the image, and the hub's address. */}}

{{- define "aetherfs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aetherfs.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "aetherfs.hubName" -}}
{{- printf "%s-hub" (include "aetherfs.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aetherfs.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "aetherfs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "aetherfs.hubSelectorLabels" -}}
app.kubernetes.io/name: {{ include "aetherfs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: hub
{{- end -}}

{{- define "aetherfs.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "aetherfs.hubServiceAccountName" -}}
{{- if .Values.hub.serviceAccount.create -}}
{{- default (include "aetherfs.hubName" .) .Values.hub.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.hub.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The in-chart hub's URL, as pods of the cluster reach it. */}}
{{- define "aetherfs.hubURL" -}}
{{- $scheme := ternary "https" "http" (ne .Values.hub.tls.existingSecret "") -}}
{{- printf "%s://%s.%s.svc:%d" $scheme (include "aetherfs.hubName" .) .Release.Namespace (int .Values.hub.port) -}}
{{- end -}}

{{/* The restricted container securityContext (Pod Security "restricted"). */}}
{{- define "aetherfs.restrictedSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "aetherfs.validate" -}}
{{- if and .Values.hub.enabled (gt (int .Values.hub.replicas) 1) (ne .Values.hub.storage.type "s3") -}}
{{- fail "hub.replicas > 1 needs hub.storage.type=s3: replicas cannot share a file:// volume" -}}
{{- end -}}
{{- if and .Values.hub.enabled (eq .Values.hub.storage.type "s3") (not .Values.hub.storage.s3.bucket) -}}
{{- fail "hub.storage.type=s3 needs hub.storage.s3.bucket" -}}
{{- end -}}
{{- end -}}
