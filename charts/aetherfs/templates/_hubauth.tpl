{{/* The hub's auth configuration in its own TOML format (docs/security.md):
only keys the hub accepts. */}}
{{- define "aetherfs.hubAuthConfig" -}}
{{- $auth := .Values.hub.auth -}}
# Rendered by the aetherfs chart from hub.auth; see docs/security.md.
metrics = {{ $auth.metrics | toJson }}
{{- if $auth.kubernetes.enabled }}

# This cluster's service accounts.
[[oidc]]
issuer = {{ $auth.kubernetes.issuer | toJson }}
audience = {{ $auth.kubernetes.audience | toJson }}
token_type = "kubernetes"
{{- if $auth.kubernetes.inClusterDiscovery }}
ca_file = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
discovery_token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token"
{{- end }}
{{- end }}
{{- range $auth.oidc }}

[[oidc]]
issuer = {{ .issuer | toJson }}
audience = {{ .audience | toJson }}
{{- with .algorithms }}
algorithms = {{ . | toJson }}
{{- end }}
{{- with .tokenType }}
token_type = {{ . | toJson }}
{{- end }}
{{- with .subjectClaim }}
subject_claim = {{ . | toJson }}
{{- end }}
{{- with .groupsClaim }}
groups_claim = {{ . | toJson }}
{{- end }}
{{- if hasKey . "leewaySecs" }}
leeway_secs = {{ int .leewaySecs }}
{{- end }}
{{- if hasKey . "jwksRefreshMinSecs" }}
jwks_refresh_min_secs = {{ int .jwksRefreshMinSecs }}
{{- end }}
{{- with .caFile }}
ca_file = {{ . | toJson }}
{{- end }}
{{- with .discoveryTokenFile }}
discovery_token_file = {{ . | toJson }}
{{- end }}
{{- end }}
{{- if $auth.basic.existingSecret }}

[basic]
users_file = "/etc/aetherfs/users/{{ $auth.basic.key }}"
{{- end }}
{{- range $auth.rules }}

[[rule]]
datasets = {{ .datasets | toJson }}
{{- with .read }}
read = {{ . | toJson }}
{{- end }}
{{- with .write }}
write = {{ . | toJson }}
{{- end }}
{{- with .admin }}
admin = {{ . | toJson }}
{{- end }}
{{- end }}
{{- if and .Values.tests.enabled $auth.kubernetes.enabled }}

# `helm test`: the test pod's service account owns the test dataset.
[[rule]]
datasets = {{ .Values.tests.dataset | toJson }}
admin = [{{ printf "user:%s#system:serviceaccount:%s:%s" $auth.kubernetes.issuer .Release.Namespace (include "aetherfs.testName" .) | toJson }}]
{{- end }}
{{- end -}}

{{- define "aetherfs.testName" -}}
{{- printf "%s-test" (include "aetherfs.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
