{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "tusk.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart> unless the release name already contains the chart name. */}}
{{- define "tusk.fullname" -}}
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

{{- define "tusk.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tusk.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tusk.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tusk.labels" -}}
helm.sh/chart: {{ include "tusk.chart" . }}
{{ include "tusk.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tusk.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tusk.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tusk.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* terminationGracePeriodSeconds: the value given, or preStop sleep + drain + 10s. */}}
{{- define "tusk.terminationGracePeriodSeconds" -}}
{{- $l := .Values.lifecycle }}
{{- if kindIs "invalid" $l.terminationGracePeriodSeconds }}
{{- add (int64 $l.preStopSleepSeconds) (int64 $l.shutdownDrainSeconds) 10 }}
{{- else }}
{{- int64 $l.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Whether the pods mount /data: fs storage keeps the bytes there, the embedded coordinator
its records (/data/.tusk). With S3 or GCS storage and Redis or etcd the pods are stateless
and have none. */}}
{{- define "tusk.needsData" -}}
{{- if or (eq .Values.config.storage.backend "fs") (eq .Values.config.coordinator.backend "embedded") }}true{{ end }}
{{- end }}

{{/*
Settings that cannot work together, refused at render time with a message naming them:
several pods need Redis or etcd (the embedded coordinator is one process's) and storage they all
reach (an S3 or GCS bucket, or with fs one directory they all mount: any node reads the
bytes another wrote); S3 and GCS need a bucket; a claim is pointless on stateless pods; and the grace
period must cover the preStop sleep and the drain.
*/}}
{{- define "tusk.validate" -}}
{{- $v := .Values }}
{{- $s3 := $v.config.storage.s3 }}
{{- $several := or $v.autoscaling.enabled (gt (int64 $v.replicaCount) 1) }}
{{- if and $several (eq $v.config.coordinator.backend "embedded") }}
{{- fail "replicaCount > 1 or autoscaling.enabled needs config.coordinator.backend: redis or etcd (the embedded coordinator serves one pod)" }}
{{- end }}
{{- if and $several (eq $v.config.storage.backend "fs") (not $v.persistence.existingClaim) }}
{{- fail "replicaCount > 1 or autoscaling.enabled needs config.storage.backend: s3 or gcs, or persistence.existingClaim: a ReadWriteMany claim shared by every replica (fs storage; without it each pod sees only its own uploads)" }}
{{- end }}
{{- $redis := $v.config.coordinator.redis }}
{{- if and $redis.clusterNodes $redis.sentinels }}
{{- fail "config.coordinator.redis.clusterNodes and sentinels exclude each other: a Redis Cluster fails over by itself" }}
{{- end }}
{{- if and $redis.clusterNodes $redis.existingSecret $redis.urlKey }}
{{- fail "config.coordinator.redis.clusterNodes take the password from redis.passwordKey; urlKey holds one Redis URL: leave it empty" }}
{{- end }}
{{- if eq $v.config.storage.backend "s3" }}
{{- if not $s3.bucket }}
{{- fail "config.storage.backend: s3 needs config.storage.s3.bucket" }}
{{- end }}
{{- if lt (int64 $s3.partSize) (int64 $s3.minPartSize) }}
{{- fail "config.storage.s3.partSize must be at least config.storage.s3.minPartSize" }}
{{- end }}
{{- end }}
{{- if eq $v.config.storage.backend "gcs" }}
{{- if not $v.config.storage.gcs.bucket }}
{{- fail "config.storage.backend: gcs needs config.storage.gcs.bucket" }}
{{- end }}
{{- end }}
{{- if and (ne $v.config.storage.backend "fs") (ne $v.config.coordinator.backend "embedded") $v.persistence.existingClaim }}
{{- fail (printf "persistence.existingClaim is unused with config.storage.backend: %s and a shared coordinator (redis, etcd; the pods keep nothing on disk): leave it empty" $v.config.storage.backend) }}
{{- end }}
{{- $grace := int64 (include "tusk.terminationGracePeriodSeconds" .) }}
{{- if le $grace (add (int64 $v.lifecycle.preStopSleepSeconds) (int64 $v.lifecycle.shutdownDrainSeconds)) }}
{{- fail "lifecycle.terminationGracePeriodSeconds must exceed preStopSleepSeconds + shutdownDrainSeconds" }}
{{- end }}
{{- if and $v.autoscaling.enabled (kindIs "invalid" $v.autoscaling.targetCPUUtilizationPercentage) (kindIs "invalid" $v.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling.enabled needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- end }}

{{/* The Redis URL with the password from the Secret spliced in: redis://:$(REDIS_PASSWORD)@host... */}}
{{- define "tusk.redisUrlWithPassword" -}}
{{- $url := .Values.config.coordinator.redis.url }}
{{- $scheme := regexFind "^rediss?://" $url }}
{{- printf "%s:$(REDIS_PASSWORD)@%s" $scheme (trimPrefix $scheme $url) }}
{{- end }}

{{/*
coordinator.redis.clusterNodes with the password of REDIS_PASSWORD spliced into each,
comma-separated.
*/}}
{{- define "tusk.redisClusterNodesWithPassword" -}}
{{- $nodes := list }}
{{- range .Values.config.coordinator.redis.clusterNodes }}
{{- $scheme := regexFind "^rediss?://" . }}
{{- $nodes = append $nodes (printf "%s:$(REDIS_PASSWORD)@%s" $scheme (trimPrefix $scheme .)) }}
{{- end }}
{{- join "," $nodes }}
{{- end }}

{{/*
A volume with the PEM CA certificates of `ca` ({secret, configMap, key}), named `name`;
nothing when neither source is set.
*/}}
{{- define "tusk.caVolume" -}}
{{- if .ca.secret }}
- name: {{ .name }}
  secret:
    secretName: {{ .ca.secret }}
    items:
      - key: {{ .ca.key }}
        path: {{ .ca.key }}
{{- else if .ca.configMap }}
- name: {{ .name }}
  configMap:
    name: {{ .ca.configMap }}
    items:
      - key: {{ .ca.key }}
        path: {{ .ca.key }}
{{- end }}
{{- end }}
