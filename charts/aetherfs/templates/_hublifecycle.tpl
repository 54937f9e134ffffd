{{/* The hub's lifecycle configuration in its own TOML format
(docs/operations.md): only keys the hub accepts. */}}
{{- define "aetherfs.hubLifecycleConfig" -}}
{{- $l := .Values.hub.lifecycle -}}
# Rendered by the aetherfs chart from hub.lifecycle; see docs/operations.md.
[gc]
{{- with $l.gc.interval }}
interval = {{ . | toJson }}
{{- end }}
grace = {{ $l.gc.grace | toJson }}
max_unused = {{ $l.gc.maxUnused }}
lease = {{ $l.gc.lease | toJson }}
lock_ttl = {{ $l.gc.lockTtl | toJson }}
{{- range $l.retention }}

[[retention]]
datasets = {{ .datasets | toJson }}
{{- with .keepLast }}
keep_last = {{ int . }}
{{- end }}
{{- with .keepYoungerThan }}
keep_younger_than = {{ . | toJson }}
{{- end }}
{{- end }}
{{- end }}
