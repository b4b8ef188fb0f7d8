{{/* Names, labels and the pieces shared by the sidecar Deployment and the Collector pod. */}}

{{- define "otel-logbert.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-otel-logbert, or fullnameOverride; 63 chars minus room for "-headless". */}}
{{- define "otel-logbert.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "otel-logbert.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "otel-logbert.labels" -}}
helm.sh/chart: {{ include "otel-logbert.chart" . }}
app.kubernetes.io/name: {{ include "otel-logbert.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: otel-logbert
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels for one component: call with (dict "ctx" $ "component" "sidecar"). */}}
{{- define "otel-logbert.selectorLabels" -}}
app.kubernetes.io/name: {{ include "otel-logbert.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "otel-logbert.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "otel-logbert.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* True when this chart deploys a Collector (always in collectorPod mode). */}}
{{- define "otel-logbert.collectorEnabled" -}}
{{- if or (eq .Values.mode "collectorPod") .Values.collector.enabled -}}true{{- end -}}
{{- end -}}

{{/* forward.endpoint of the sidecar config. */}}
{{- define "otel-logbert.forwardEndpoint" -}}
{{- if .Values.sidecar.forwardEndpoint -}}
{{- .Values.sidecar.forwardEndpoint -}}
{{- else if eq .Values.mode "collectorPod" -}}
{{- printf "http://127.0.0.1:%d" (int .Values.collector.enrichedPort) -}}
{{- else if .Values.collector.enabled -}}
{{- printf "http://%s-collector:%d" (include "otel-logbert.fullname" .) (int .Values.collector.enrichedPort) -}}
{{- else -}}
{{- .Values.sidecar.defaultForwardEndpoint -}}
{{- end -}}
{{- end -}}

{{/*
The sidecar YAML (docs/sidecar-config.md): values-derived keys first, then .Values.sidecar.config
merged over them (the user's keys win). In collectorPod mode the OTLP receivers listen on loopback
only: the Collector in the same pod is their only client.
*/}}
{{- define "otel-logbert.sidecarConfig" -}}
{{- $listen := ternary "127.0.0.1" "0.0.0.0" (eq .Values.mode "collectorPod") -}}
{{- $base := dict
  "receivers" (dict
    "grpc" (dict "endpoint" (printf "%s:%d" $listen (int .Values.sidecar.ports.grpc)))
    "http" (dict "endpoint" (printf "%s:%d" $listen (int .Values.sidecar.ports.http))))
  "forward" (dict "endpoint" (include "otel-logbert.forwardEndpoint" .) "protocol" "grpc")
  "telemetry" (dict "endpoint" (printf "0.0.0.0:%d" (int .Values.sidecar.ports.telemetry)))
-}}
{{- if .Values.triton.enabled -}}
{{- $triton := dict "url" (printf "%s-triton:%d" (include "otel-logbert.fullname" .) (int .Values.triton.ports.grpc)) -}}
{{- if .Values.triton.modelName -}}
{{- $_ := set $triton "model_name" .Values.triton.modelName -}}
{{- end -}}
{{- $_ := set $base "scoring" (dict "scorer" "triton" "triton" $triton) -}}
{{- end -}}
{{- if .Values.sidecar.persistence.enabled -}}
{{- $queue := .Values.sidecar.persistence -}}
{{- $_ := set $base "persistence" (dict "directory" $queue.mountPath "max_bytes" (int64 $queue.maxBytes)) -}}
{{- end -}}
{{- $merged := mustMergeOverwrite $base (deepCopy .Values.sidecar.config) -}}
{{- toYaml $merged -}}
{{- end -}}

{{- define "otel-logbert.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* An HTTP probe from probes.<kind>: (dict "probe" .Values.sidecar.probes.liveness "port" "telemetry"). */}}
{{- define "otel-logbert.httpProbe" -}}
httpGet:
  path: {{ .probe.path }}
  port: {{ .port }}
  {{- with .scheme }}
  scheme: {{ . }}
  {{- end }}
periodSeconds: {{ .probe.periodSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
timeoutSeconds: 2
{{- end -}}

{{/* Volumes for the models (+ the sidecar's writable dirs). */}}
{{- define "otel-logbert.modelVolume" -}}
- name: models
{{- if eq .Values.models.source "pvc" }}
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-models" (include "otel-logbert.fullname" .)) .Values.models.pvc.existingClaim }}
    readOnly: true
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.models.sizeLimit }}
{{- end }}
{{- end -}}

{{/* Init container that fills the models emptyDir (sources init / objectStorage); nothing for pvc. */}}
{{- define "otel-logbert.modelInitContainers" -}}
{{- if eq .Values.models.source "init" }}
- name: fetch-models
  image: {{ .Values.models.init.image }}
  command:
    {{- toYaml .Values.models.init.command | nindent 4 }}
  {{- with .Values.models.init.env }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.models.initResources | nindent 4 }}
  volumeMounts:
    - name: models
      mountPath: {{ .Values.models.mountPath }}
    - name: tmp
      mountPath: /tmp
{{- else if eq .Values.models.source "objectStorage" }}
- name: sync-models
  image: {{ .Values.models.objectStorage.image }}
  command: ["aws"]
  args:
    - s3
    - sync
    - --no-progress
    {{- with .Values.models.objectStorage.endpointUrl }}
    - --endpoint-url={{ . }}
    {{- end }}
    - {{ .Values.models.objectStorage.url | quote }}
    - {{ .Values.models.mountPath | quote }}
  env:
    - name: HOME               # the AWS CLI writes its cache under $HOME; the root fs is read-only
      value: /tmp
  {{- with .Values.models.objectStorage.credentialsSecret }}
  envFrom:
    - secretRef:
        name: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.models.initResources | nindent 4 }}
  volumeMounts:
    - name: models
      mountPath: {{ .Values.models.mountPath }}
    - name: tmp
      mountPath: /tmp
{{- end }}
{{- end -}}

{{/* The sidecar container, used by the sidecar Deployment and by the Collector pod. */}}
{{/* HTTPS when the sidecar config gives the telemetry port TLS (telemetry.tls.cert_file), else HTTP. */}}
{{- define "otel-logbert.telemetryScheme" -}}
{{- if dig "telemetry" "tls" "cert_file" "" .Values.sidecar.config -}}HTTPS{{- else -}}HTTP{{- end -}}
{{- end -}}

{{- define "otel-logbert.sidecarContainer" -}}
- name: otel-logbert
  image: {{ include "otel-logbert.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["otel-logbert"]
  args: ["serve", "--config", "/etc/otel-logbert/sidecar.yaml"]
  ports:
    - name: otlp-grpc
      containerPort: {{ .Values.sidecar.ports.grpc }}
      protocol: TCP
    - name: otlp-http
      containerPort: {{ .Values.sidecar.ports.http }}
      protocol: TCP
    - name: telemetry
      containerPort: {{ .Values.sidecar.ports.telemetry }}
      protocol: TCP
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    {{- with .Values.sidecar.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  startupProbe:
    {{- include "otel-logbert.httpProbe" (dict "probe" .Values.sidecar.probes.startup "port" "telemetry" "scheme" (include "otel-logbert.telemetryScheme" .)) | nindent 4 }}
  livenessProbe:
    {{- include "otel-logbert.httpProbe" (dict "probe" .Values.sidecar.probes.liveness "port" "telemetry" "scheme" (include "otel-logbert.telemetryScheme" .)) | nindent 4 }}
  readinessProbe:
    {{- include "otel-logbert.httpProbe" (dict "probe" .Values.sidecar.probes.readiness "port" "telemetry" "scheme" (include "otel-logbert.telemetryScheme" .)) | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.sidecar.resources | nindent 4 }}
  volumeMounts:
    - name: sidecar-config
      mountPath: /etc/otel-logbert
      readOnly: true
    - name: models
      mountPath: {{ .Values.models.mountPath }}
      readOnly: true
    - name: state                # Drain3 state (parsing.state_file), learn output
      mountPath: /var/lib/otel-logbert
    {{- if .Values.sidecar.persistence.enabled }}
    - name: queue                # the persistent queue (persistence.directory)
      mountPath: {{ .Values.sidecar.persistence.mountPath }}
    {{- end }}
    - name: tmp
      mountPath: /tmp
    {{- range .Values.sidecar.secretMounts }}
    - name: secret-{{ .name }}
      mountPath: {{ .mountPath }}
      readOnly: true
    {{- end }}
{{- end -}}

{{/* True when the sidecar runs as a StatefulSet: its own workload with a persistent queue per replica. */}}
{{- define "otel-logbert.sidecarStateful" -}}
{{- if and (eq .Values.mode "deployment") .Values.sidecar.persistence.enabled -}}true{{- end -}}
{{- end -}}

{{/* Pod volumes that go with the sidecar container. */}}
{{- define "otel-logbert.sidecarVolumes" -}}
- name: sidecar-config
  configMap:
    name: {{ include "otel-logbert.fullname" . }}-config
{{ include "otel-logbert.modelVolume" . }}
- name: state
  emptyDir: {}
{{- if and .Values.sidecar.persistence.enabled (not (include "otel-logbert.sidecarStateful" .)) }}
- name: queue
  emptyDir:
    sizeLimit: {{ .Values.sidecar.persistence.size }}
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- range .Values.sidecar.secretMounts }}
- name: secret-{{ .name }}
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}
