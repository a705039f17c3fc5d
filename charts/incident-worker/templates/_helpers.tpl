{{- define "incident-worker.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "incident-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "incident-worker.labels" -}}
{{ include "incident-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "incident-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "incident-worker.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* "true" when the worker uses PostgreSQL (several replicas possible), "" for the embedded SQLite. */}}
{{- define "incident-worker.postgres" -}}
{{- if or .Values.database.url .Values.database.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* The Secret the chart creates: secrets.values plus the database URL given in values. */}}
{{- define "incident-worker.chartSecret" -}}
{{- if or .Values.secrets.values .Values.database.url -}}true{{- end -}}
{{- end -}}

{{- define "incident-worker.publicUrl" -}}
{{- if .Values.publicUrl -}}
{{- .Values.publicUrl -}}
{{- else if .Values.ingress.enabled -}}
{{- printf "%s://%s" (ternary "https" "http" (gt (len .Values.ingress.tls) 0)) .Values.ingress.host -}}
{{- end -}}
{{- end -}}

{{- define "incident-worker.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not (include "incident-worker.postgres" .)) -}}
{{- fail "replicaCount > 1 needs PostgreSQL: set database.url or database.existingSecret (SQLite on a volume admits one writer pod)" -}}
{{- end -}}
{{- range $name, $value := .Values.env -}}
{{- if has $name (list "WORKER_DATABASE_URL" "WORKER_PUBLIC_URL") -}}
{{- fail (printf "env.%s: set it with %s instead" $name (ternary "database.url" "publicUrl" (eq $name "WORKER_DATABASE_URL"))) -}}
{{- end -}}
{{- end -}}
{{- end -}}


{{/* The container's env entries (settings that are not secrets). */}}
{{- define "incident-worker.env" -}}
{{- if .Values.database.existingSecret }}
- name: WORKER_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.existingSecretKey }}
{{- else if not .Values.database.url }}
- name: WORKER_DATABASE_URL
  value: sqlite:////data/incident-worker.db
{{- end }}
{{- with include "incident-worker.publicUrl" . }}
- name: WORKER_PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}
