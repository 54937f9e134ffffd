{{/*
The sidecar agent, as pieces of a pod spec you include in your own pod
templates. Every template takes this chart's context: `$` inside this chart,
`.Subcharts.aetherfs` in a chart that depends on it (docs/kubernetes.md has
the whole example). With agent.enabled, this chart renders the agent's
ConfigMap itself.

  spec:
    initContainers:
      {{- include "aetherfs.sidecar" .Subcharts.aetherfs | nindent 6 }}
    containers:
      - name: app
        volumeMounts:
          {{- include "aetherfs.dataVolumeMount" .Subcharts.aetherfs | nindent 10 }}
    volumes:
      {{- include "aetherfs.sidecarVolumes" .Subcharts.aetherfs | nindent 6 }}
*/}}

{{/* Derived settings of the sidecar, as YAML: the hub URL, the CA Secret, names. */}}
{{- define "aetherfs.agentResolved" -}}
{{- $root := . -}}
{{- $a := .Values.agent -}}
{{- $inChartHub := $root.Values.hub.enabled -}}
{{- $hubTLS := $root.Values.hub.tls.existingSecret -}}
{{- if not (has $a.mode (list "fuse" "webdav" "materialize")) -}}
{{- fail (printf "agent.mode must be fuse, webdav or materialize, not %q" $a.mode) -}}
{{- end -}}
{{- if not $a.mounts -}}
{{- fail "agent.mounts is empty: the sidecar needs at least one mount" -}}
{{- end -}}
{{- $names := list -}}
{{- $ports := list (int $a.adminPort) -}}
{{- range $i, $m := $a.mounts -}}
{{- if has $m.name $names -}}
{{- fail (printf "agent.mounts: the name %q is used twice" $m.name) -}}
{{- end -}}
{{- $names = append $names $m.name -}}
{{- if eq $a.mode "webdav" -}}
{{- $port := int ($m.webdavPort | default (add (int $a.webdavPort) $i)) -}}
{{- if has $port $ports -}}
{{- fail (printf "agent.mounts[%d]: port %d is taken (adminPort or another mount)" $i $port) -}}
{{- end -}}
{{- $ports = append $ports $port -}}
{{- end -}}
{{- end -}}
hub: {{ if $a.hub }}{{ $a.hub | quote }}{{ else if $inChartHub }}{{ include "aetherfs.hubURL" $root | quote }}{{ else }}{{ fail "agent.hub is required when this chart's hub is not enabled" }}{{ end }}
{{- if $a.auth.caSecret }}
caSecret: {{ $a.auth.caSecret | quote }}
caKey: {{ $a.auth.caSecretKey | quote }}
{{- else if and $inChartHub $hubTLS $root.Values.hub.tls.caKey }}
caSecret: {{ $hubTLS | quote }}
caKey: {{ $root.Values.hub.tls.caKey | quote }}
{{- end }}
configMap: {{ printf "%s-agent" (include "aetherfs.fullname" $root) | trunc 63 | trimSuffix "-" | quote }}
{{- end -}}

{{/* The agent's TOML configuration (docs/agent.md). */}}
{{- define "aetherfs.agentConfig" -}}
{{- $root := . -}}
{{- $a := .Values.agent -}}
{{- $r := include "aetherfs.agentResolved" . | fromYaml -}}
# Rendered by the aetherfs chart from its agent values; see docs/agent.md.
hub = {{ $r.hub | toJson }}

[admin]
listen = "0.0.0.0:{{ int $a.adminPort }}"

[cache]
dir = "/var/cache/aetherfs"
max_size = {{ $a.cache.maxSize | toJson }}
memory_size = {{ $a.cache.memorySize | toJson }}
{{- if $a.cache.keySecret }}
key_file = "/etc/aetherfs/cache-key/{{ $a.cache.keySecretKey }}"
{{- end }}

[fetch]
timeout_secs = {{ int $a.fetch.timeoutSecs }}
concurrency = {{ int $a.fetch.concurrency }}
readahead = {{ $a.fetch.readahead | toJson }}
poll_secs = {{ int $a.fetch.pollSecs }}
{{- if or $a.auth.serviceAccountToken $r.caSecret }}

[auth]
{{- if $a.auth.serviceAccountToken }}
token_file = "/var/run/secrets/aetherfs/token"
{{- end }}
{{- if $r.caSecret }}
ca_file = "/etc/aetherfs/ca/{{ $r.caKey }}"
{{- end }}
{{- end }}
{{- range $i, $m := $a.mounts }}

[[mount]]
ref = {{ $m.ref | toJson }}
prefetch = {{ $m.prefetch | default "metadata" | toJson }}
{{- if eq $a.mode "fuse" }}
fuse = "/aetherfs/data/{{ $m.name }}"
allow_other = true
{{- else if eq $a.mode "webdav" }}
webdav = "127.0.0.1:{{ int ($m.webdavPort | default (add (int $a.webdavPort) $i)) }}"
{{- else }}
materialize = "/aetherfs/data/{{ $m.name }}"
keep_versions = {{ int ($m.keepVersions | default 2) }}
{{- end }}
{{- with $m.onSwitch }}
{{- if and .command .url }}
{{- fail (printf "agent.mounts[%d].onSwitch: command or url, not both" $i) }}
{{- end }}

[mount.on_switch]
{{- if .command }}
command = {{ .command | toJson }}
{{- else if .url }}
url = {{ .url | toJson }}
{{- else }}
{{- fail (printf "agent.mounts[%d].onSwitch needs command or url" $i) }}
{{- end }}
timeout_secs = {{ int (.timeoutSecs | default 30) }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The agent's ConfigMap, as a whole manifest. */}}
{{- define "aetherfs.agentConfigMap" -}}
{{- $r := include "aetherfs.agentResolved" . | fromYaml -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $r.configMap }}
  labels:
    {{- include "aetherfs.labels" . | nindent 4 }}
    app.kubernetes.io/component: agent
data:
  agent.toml: |
    {{- include "aetherfs.agentConfig" . | nindent 4 }}
{{- end -}}

{{/* A checksum of the agent configuration: put it in the pod template's
annotations so pods restart when it changes. */}}
{{- define "aetherfs.agentConfigChecksum" -}}
{{- include "aetherfs.agentConfig" . | sha256sum -}}
{{- end -}}

{{/* The native sidecar: one initContainers entry with restartPolicy Always. */}}
{{- define "aetherfs.sidecar" -}}
{{- $root := . -}}
{{- $a := .Values.agent -}}
{{- $r := include "aetherfs.agentResolved" . | fromYaml -}}
- name: aetherfs-agent
  image: {{ include "aetherfs.image" $root | quote }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  restartPolicy: Always
  args: [agent, --config, /etc/aetherfs/agent/agent.toml]
  ports:
    - name: aetherfs-admin
      containerPort: {{ int $a.adminPort }}
      protocol: TCP
  startupProbe:
    httpGet: {path: /readyz, port: aetherfs-admin}
    periodSeconds: {{ int $a.startupProbe.periodSeconds }}
    failureThreshold: {{ int $a.startupProbe.failureThreshold }}
  readinessProbe:
    httpGet: {path: /readyz, port: aetherfs-admin}
    periodSeconds: 10
  livenessProbe:
    httpGet: {path: /healthz, port: aetherfs-admin}
    periodSeconds: 10
    failureThreshold: 6
  {{- with $a.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
  {{- if eq $a.mode "fuse" }}
    # FUSE mounts, and mountPropagation Bidirectional, need a privileged container.
    privileged: true
    runAsUser: 0
    runAsGroup: 0
    runAsNonRoot: false
    readOnlyRootFilesystem: true
  {{- else }}
    {{- include "aetherfs.restrictedSecurityContext" $root | nindent 4 }}
  {{- end }}
  {{- if eq $a.mode "fuse" }}
  lifecycle:
    preStop:
      exec:
        # Lazy unmounts, so a reader that still holds a file cannot keep the
        # pod Terminating; the agent unmounts what is left on SIGTERM.
        command: [/bin/sh, -c, 'for m in /aetherfs/data/*/; do fusermount3 -uz "$m" 2>/dev/null || true; done']
  {{- end }}
  volumeMounts:
    - {name: aetherfs-config, mountPath: /etc/aetherfs/agent, readOnly: true}
    - {name: aetherfs-cache, mountPath: /var/cache/aetherfs}
    - {name: aetherfs-tmp, mountPath: /tmp}
    {{- if $a.auth.serviceAccountToken }}
    - {name: aetherfs-token, mountPath: /var/run/secrets/aetherfs, readOnly: true}
    {{- end }}
    {{- if $a.cache.keySecret }}
    - {name: aetherfs-cache-key, mountPath: /etc/aetherfs/cache-key, readOnly: true}
    {{- end }}
    {{- if $r.caSecret }}
    - {name: aetherfs-ca, mountPath: /etc/aetherfs/ca, readOnly: true}
    {{- end }}
    {{- if eq $a.mode "fuse" }}
    - {name: aetherfs-data, mountPath: /aetherfs/data, mountPropagation: Bidirectional}
    {{- else if eq $a.mode "materialize" }}
    - {name: aetherfs-data, mountPath: /aetherfs/data}
    {{- end }}
{{- end -}}

{{/* The consumer container's volumeMount of the data (fuse, materialize);
nothing in webdav mode, where the consumer reads http://127.0.0.1:PORT/. */}}
{{- define "aetherfs.dataVolumeMount" -}}
{{- $root := . -}}
{{- $a := .Values.agent -}}
{{- if eq $a.mode "fuse" -}}
- name: aetherfs-data
  mountPath: {{ $a.mountPath }}
  mountPropagation: HostToContainer
  readOnly: true
{{- else if eq $a.mode "materialize" -}}
- name: aetherfs-data
  mountPath: {{ $a.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* The sidecar's volumes. */}}
{{- define "aetherfs.sidecarVolumes" -}}
{{- $root := . -}}
{{- $a := .Values.agent -}}
{{- $r := include "aetherfs.agentResolved" . | fromYaml -}}
- name: aetherfs-config
  configMap:
    name: {{ $r.configMap }}
- name: aetherfs-cache
  emptyDir:
    sizeLimit: {{ $a.cache.sizeLimit }}
- name: aetherfs-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if $a.auth.serviceAccountToken }}
- name: aetherfs-token
  projected:
    defaultMode: 0444
    sources:
      - serviceAccountToken:
          path: token
          audience: {{ $a.auth.audience | quote }}
          expirationSeconds: {{ int $a.auth.expirationSeconds }}
{{- end }}
{{- if $a.cache.keySecret }}
- name: aetherfs-cache-key
  secret:
    secretName: {{ $a.cache.keySecret }}
    # Readable by the agent's uid; the volume is mounted in the sidecar only.
    defaultMode: 0444
    items:
      - {key: {{ $a.cache.keySecretKey }}, path: {{ $a.cache.keySecretKey }}}
{{- end }}
{{- if $r.caSecret }}
- name: aetherfs-ca
  secret:
    secretName: {{ $r.caSecret }}
    items:
      - {key: {{ $r.caKey }}, path: {{ $r.caKey }}}
{{- end }}
{{- if ne $a.mode "webdav" }}
- name: aetherfs-data
  emptyDir: {}
{{- end }}
{{- end -}}
