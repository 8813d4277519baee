{{/* Names, labels and the checks every template shares. */}}

{{- define "churnsignal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name: <release>-churnsignal, or the release name alone when it contains the chart's. */}}
{{- define "churnsignal.fullname" -}}
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

{{- define "churnsignal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. part-of: churnsignal is what deploy/prometheus/prometheus-k8s.yml keeps pods by. */}}
{{- define "churnsignal.labels" -}}
helm.sh/chart: {{ include "churnsignal.chart" . }}
{{ include "churnsignal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: churnsignal
{{- end }}

{{- define "churnsignal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "churnsignal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component's objects; called with (dict "root" $ "component" "ingest"). */}}
{{- define "churnsignal.componentLabels" -}}
{{ include "churnsignal.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "churnsignal.componentSelectorLabels" -}}
{{ include "churnsignal.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "churnsignal.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "churnsignal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "churnsignal.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the services read: the chart's own (secrets.create) or the one you manage (secrets.existingSecret). */}}
{{- define "churnsignal.secretName" -}}
{{- if .Values.secrets.create }}
{{- printf "%s-secrets" (include "churnsignal.fullname" .) }}
{{- else }}
{{- required "secrets.existingSecret: name the Secret that holds api-keys.json and database-url, or set secrets.create=true with secrets.values" .Values.secrets.existingSecret }}
{{- end }}
{{- end }}

{{- define "churnsignal.configName" -}}
{{- printf "%s-config" (include "churnsignal.fullname" .) }}
{{- end }}

{{- define "churnsignal.routingName" -}}
{{- printf "%s-routing" (include "churnsignal.fullname" .) }}
{{- end }}

{{/* Each service's port: the defaults of CHURNSIGNAL_INGEST_PORT, _SCORING_PORT, _ALERTS_PORT (shared/settings.py). */}}
{{- define "churnsignal.port" -}}
{{- get (dict "ingest" 8080 "scoring" 8081 "alerts" 8082) . }}
{{- end }}

{{/* The partition count of the topics (config.CHURNSIGNAL_TOPIC_PARTITIONS, 6 when unset). */}}
{{- define "churnsignal.partitions" -}}
{{- default "6" (get .Values.config "CHURNSIGNAL_TOPIC_PARTITIONS") | int }}
{{- end }}

{{/* The replicas a component may run at most (called with (dict "root" $ "component" "alerts")): replicas, or
maxReplicas with the autoscaler; scoring and alerts stay within the partition count, where the extra
consumers would sit idle. Fails the render with the reason otherwise. */}}
{{- define "churnsignal.checkReplicas" -}}
{{- $values := index .root.Values .component }}
{{- $autoscaling := include "churnsignal.autoscaling" . }}
{{- $most := $values.replicas | int }}
{{- $least := $most }}
{{- if $autoscaling }}
{{- $most = $values.autoscaling.maxReplicas | int }}
{{- $least = $values.autoscaling.minReplicas | int }}
{{- end }}
{{- $partitions := include "churnsignal.partitions" .root | int }}
{{- if and (ne .component "ingest") (gt $most $partitions) }}
{{- fail (printf "%s: %d replicas is more than the %d topic partitions (config.CHURNSIGNAL_TOPIC_PARTITIONS); Kafka gives each partition to one consumer, the others would sit idle: raise the partitions first" .component $most $partitions) }}
{{- end }}
{{- if and $autoscaling (gt $least $most) }}
{{- fail (printf "%s.autoscaling: minReplicas %d is above maxReplicas %d" .component $least $most) }}
{{- end }}
{{- if and $values.pdb.enabled (ge ($values.pdb.minAvailable | int) $least) }}
{{- fail (printf "%s.pdb.minAvailable %d must be below the replica count (%d), or a node drain can evict no pod" .component ($values.pdb.minAvailable | int) $least) }}
{{- end }}
{{- end }}

{{/* "true" when the component (dict "root" $ "component" "ingest") has an enabled autoscaler, "" otherwise. */}}
{{- define "churnsignal.autoscaling" -}}
{{- $values := index .root.Values .component }}
{{- if and (hasKey $values "autoscaling") $values.autoscaling.enabled }}true{{ end }}
{{- end }}
