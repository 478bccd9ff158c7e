{{- define "elemta.fullname" -}}
{{- printf "%s-elemta" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "elemta.operatorName" -}}
{{- printf "%s-operator" (include "elemta.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "elemta.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "elemta.labels" -}}
app.kubernetes.io/name: elemta
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "elemta.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "elemta.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "elemta.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "elemta.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "elemta.natsConf" -}}
{{- $name := printf "%s-nats" (include "elemta.fullname" .) -}}
{{- $headless := printf "%s-nats-headless" (include "elemta.fullname" .) -}}
{{- $replicas := int .Values.nats.replicas -}}
port: 4222
http_port: 8222
pid_file: "/tmp/nats.pid"
server_name: $POD_NAME
lame_duck_duration: 30s
lame_duck_grace_period: 10s
max_payload: 8MB
jetstream {
  store_dir: /data
  # Every write is on disk before the PubAck: Elemta answers 250 after it.
  sync_interval: always
}
{{- if gt $replicas 1 }}
cluster {
  name: {{ $name }}
  port: 6222
  routes: [
    {{- range $i := until $replicas }}
    nats://{{ $name }}-{{ $i }}.{{ $headless }}.{{ $.Release.Namespace }}.svc:6222
    {{- end }}
  ]
}
{{- end }}
{{- end -}}
