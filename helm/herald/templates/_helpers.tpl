{{/*
Expand the name of the chart.
*/}}
{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "herald.fullname" -}}
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

{{/*
Name of the topic-provisioning Job and its ConfigMap (leaves room for the suffix).
*/}}
{{- define "herald.topicsJobName" -}}
{{- printf "%s-topics" (include "herald.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "herald.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "herald.labels" -}}
helm.sh/chart: {{ include "herald.chart" . }}
{{ include "herald.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: herald
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the service account to use.
*/}}
{{- define "herald.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "herald.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: registry/repository, then @digest or :tag (default: the chart's appVersion).
*/}}
{{- define "herald.image" -}}
{{- $repository := .Values.image.repository }}
{{- if .Values.image.registry }}
{{- $repository = printf "%s/%s" .Values.image.registry .Values.image.repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/*
Partitions of the events topic (`topics.partitions`, Herald's default 6): the most processor
replicas that can hold a partition. Autoscalers are capped at it.
*/}}
{{- define "herald.partitions" -}}
{{- dig "topics" "partitions" 6 .Values.config | int }}
{{- end }}

{{/*
The events topic and the consumer group, as Herald's configuration names them.
*/}}
{{- define "herald.eventsTopic" -}}
{{- dig "topics" "events" "herald.events" .Values.config }}
{{- end }}
{{- define "herald.groupId" -}}
{{- dig "kafka" "group_id" "herald" .Values.config }}
{{- end }}
{{- define "herald.brokers" -}}
{{- dig "kafka" "brokers" "localhost:9092" .Values.config }}
{{- end }}

{{/*
The container port: the port of `http.listen` (Herald's default 0.0.0.0:8080).
*/}}
{{- define "herald.httpPort" -}}
{{- dig "http" "listen" "0.0.0.0:8080" .Values.config | splitList ":" | last | int }}
{{- end }}

{{/*
Where the ConfigMap is mounted, and the file `--config` names.
*/}}
{{- define "herald.configDir" -}}
/etc/herald/config
{{- end }}

{{/*
One TOML value. Values files carry every number as a float, while most of Herald's numeric
settings are integers: whole numbers are written as integers (`partitions = 6`, not `6.0` or
`1.048576e+06`), others as floats (`jitter = 0.2`). Strings are written as JSON strings, which
are valid TOML basic strings; lists as TOML arrays.
*/}}
{{- define "herald.tomlValue" -}}
{{- if kindIs "string" . }}
{{- toJson . }}
{{- else if kindIs "bool" . }}
{{- . }}
{{- else if or (kindIs "int64" .) (kindIs "int" .) }}
{{- . }}
{{- else if kindIs "float64" . }}
{{- if eq (floor .) . }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if kindIs "slice" . }}
{{- $items := list }}
{{- range . }}{{ $items = append $items (include "herald.tomlValue" .) }}{{ end }}
{{- printf "[%s]" (join ", " $items) }}
{{- else }}
{{- fail (printf "config: cannot write %v (%s) as a TOML value" . (kindOf .)) }}
{{- end }}
{{- end }}

{{/*
herald.toml from `.Values.config`: one table per section; a map inside a section becomes a
sub-table with quoted keys: `kafka.client` (librdkafka properties) with string values, others
(`ingest.schema_registry`) with typed values.
*/}}
{{- define "herald.configToml" -}}
# Rendered by the Helm chart from `.Values.config`. Every key must exist in Herald's
# src/defaults.toml: unknown keys make Herald refuse to start.
{{- range $section, $keys := .Values.config }}
{{- if not (kindIs "map" $keys) }}
{{- fail (printf "config.%s must be a map of settings (a [%s] section)" $section $section) }}
{{- end }}

[{{ $section }}]
{{- range $key, $value := $keys }}
{{- if not (kindIs "map" $value) }}
{{ $key }} = {{ include "herald.tomlValue" $value }}
{{- end }}
{{- end }}
{{- range $key, $value := $keys }}
{{- if kindIs "map" $value }}

[{{ $section }}.{{ $key }}]
{{- $strings := and (eq $section "kafka") (eq $key "client") }}
{{- range $k, $v := $value }}
{{ toJson $k }} = {{ if $strings }}{{ toString $v | toJson }}{{ else }}{{ include "herald.tomlValue" $v }}{{ end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Environment of Herald's containers: the admin token and the credential store's keys (one, or
several for rotation) from existing Secrets (only when set), then `extraEnv`.
*/}}
{{- define "herald.env" -}}
{{- if .Values.adminToken.existingSecret }}
- name: HERALD_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.adminToken.existingSecret }}
      key: {{ .Values.adminToken.existingSecretKey }}
{{- end }}
{{- if .Values.secretsKey.existingSecret }}
- name: HERALD_SECRETS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secretsKey.existingSecret }}
      key: {{ .Values.secretsKey.existingSecretKey }}
{{- end }}
{{- if .Values.secretsKeys.existingSecret }}
- name: HERALD_SECRETS_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secretsKeys.existingSecret }}
      key: {{ .Values.secretsKeys.existingSecretKey }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
envFrom of Herald's containers: every Secret of `existingSecrets`, e.g. the workspace
credentials the `${env:NAME}` references of workspace files resolve to.
*/}}
{{- define "herald.envFrom" -}}
{{- range .Values.existingSecrets }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end }}

{{/*
Compile all warnings into a single message, and call fail.
*/}}
{{- define "herald.validateValues" -}}
{{- $messages := list -}}
{{- $messages = append $messages (include "herald.validateValues.autoscaling" .) -}}
{{- $messages = append $messages (include "herald.validateValues.gracePeriod" .) -}}
{{- $messages = append $messages (include "herald.validateValues.pdb" .) -}}
{{- $messages = without $messages "" -}}
{{- $message := join "\n" $messages -}}
{{- if $message -}}
{{- printf "\nVALUES VALIDATION:\n%s" $message | fail -}}
{{- end -}}
{{- end -}}

{{/* Validate values of Herald - one autoscaler at a time */}}
{{- define "herald.validateValues.autoscaling" -}}
{{- if and .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled -}}
autoscaling: enable either autoscaling.hpa or autoscaling.keda, not both (both would own the replica count).
{{- end -}}
{{- end -}}

{{/* Validate values of Herald - the grace period must outlast the drain */}}
{{- define "herald.validateValues.gracePeriod" -}}
{{- $drainMs := dig "processor" "shutdown_timeout_ms" 30000 .Values.config | int64 -}}
{{- if le (mul (int64 .Values.terminationGracePeriodSeconds) 1000) $drainMs -}}
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}s does not exceed config.processor.shutdown_timeout_ms ({{ $drainMs }} ms); Kubernetes would kill Herald while it drains.
{{- end -}}
{{- end -}}

{{/* Validate values of Herald - PDB takes one of minAvailable and maxUnavailable */}}
{{- define "herald.validateValues.pdb" -}}
{{- if and .Values.pdb.create (toString .Values.pdb.minAvailable) (toString .Values.pdb.maxUnavailable) -}}
pdb: set pdb.minAvailable or pdb.maxUnavailable, not both.
{{- end -}}
{{- end -}}
