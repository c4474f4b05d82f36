{{/* Object names: fixed (like manifests/), so the chart and the kustomize base name the same things. */}}
{{- define "iva.name" -}}istiod-vault-agent{{- end }}

{{- define "iva.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "iva.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: istiod-vault-agent
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select one component's pods; never change them after install (Deployment selectors are immutable). */}}
{{- define "iva.selectorLabels" -}}
app.kubernetes.io/name: {{ include "iva.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The istiod Deployment, service account and RootTrustPolicy name of a revision ("" and "default": istiod). */}}
{{- define "iva.istiodName" -}}
{{- if or (eq . "") (eq . "default") -}}istiod{{- else -}}istiod-{{ . }}{{- end -}}
{{- end }}

{{/* The revisions without duplicates ("" and "default" are the same revision), as a JSON list of istiod names. */}}
{{- define "iva.istiodNames" -}}
{{- $names := list -}}
{{- range .Values.revisions }}{{ $names = append $names (include "iva.istiodName" .) }}{{ end -}}
{{- $names | uniq | toJson -}}
{{- end }}

{{- define "iva.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}
{{- end }}

{{/* One UID everywhere: user 65532, group 1337 (istiod's group, which reads the cacerts files). */}}
{{- define "iva.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 1337
seccompProfile: { type: RuntimeDefault }
{{- end }}

{{- define "iva.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 1337
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities: { drop: [ALL] }
seccompProfile: { type: RuntimeDefault }
{{- end }}

{{/* The relay's Secret names: the relay's defaults (src/relay/config.ts). */}}
{{- define "iva.relaySecrets" -}}
{{- $names := list "relay-root-tls-secret" -}}
{{- if .server -}}
{{- $names = append $names "relay-server-tls-secret" -}}
{{- if .root.Values.relay.server.signingIntermediate }}{{ $names = append $names "relay-tls-signing-secret" }}{{ end -}}
{{- range .root.Values.relay.server.clusters }}{{ $names = append $names (printf "relay-identity-token-secret-%s" .) }}{{ end -}}
{{- else -}}
{{- $names = append $names "relay-client-tls-secret" -}}
{{- if .root.Values.relay.agent.bootstrap.address }}{{ $names = append $names "relay-identity-token-secret" }}{{ end -}}
{{- end -}}
{{- $names | toJson -}}
{{- end }}
