{{/* Names and labels. */}}
{{- define "pushgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pushgate.fullname" -}}
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

{{- define "pushgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pushgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pushgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pushgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pushgate
{{- end -}}

{{- define "pushgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pushgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pushgate.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Whether the nodes form a cluster: on Redis, always (one node is a cluster of one). */}}
{{- define "pushgate.clustered" -}}
{{- if eq .Values.store.backend "redis" }}true{{ end -}}
{{- end -}}

{{/* The Secret the chart creates for values given inline or generated. */}}
{{- define "pushgate.secretName" -}}
{{- include "pushgate.fullname" . -}}
{{- end -}}

{{/*
A secret value given inline, else the one a previous release generated
(read back with lookup, so an upgrade keeps it), else a new random one.
Arguments: (list $ "key" "inline value").
*/}}
{{- define "pushgate.generated" -}}
{{- $root := index . 0 -}}
{{- $key := index . 1 -}}
{{- $inline := index . 2 -}}
{{- if $inline -}}
{{- $inline -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace (include "pushgate.secretName" $root) -}}
{{- if and $existing (hasKey $existing.data $key) -}}
{{- index $existing.data $key | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
A projected secret source for one value, mounted as file "chart key":
(list $ .existingSecret .existingSecretKey "chart key").
*/}}
{{- define "pushgate.secretItem" -}}
{{- $root := index . 0 -}}
{{- $existing := index . 1 -}}
{{- $existingKey := index . 2 -}}
{{- $chartKey := index . 3 -}}
name: {{ default (include "pushgate.secretName" $root) $existing }}
items:
  - key: {{ ternary $existingKey $chartKey (not (empty $existing)) }}
    path: {{ $chartKey }}
{{- end -}}

{{/* Whether a Redis password is configured at all. */}}
{{- define "pushgate.redisPassword" -}}
{{- if or .Values.store.redis.password .Values.store.redis.existingSecret }}true{{ end -}}
{{- end -}}

{{/* A TOML key = value line; values are written as JSON, which TOML reads alike for strings, numbers, booleans and lists of them. */}}
{{- define "pushgate.tomlPairs" -}}
{{- $lines := list -}}
{{- range $k, $v := . -}}
{{- $lines = append $lines (printf "%s = %s" $k (toJson $v)) -}}
{{- end -}}
{{- join "\n" $lines -}}
{{- end -}}
