{{/* Chart name, truncated to the 63-character DNS label limit. */}}
{{- define "dicom-adapter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; collapses "<release>-<chart>" when the release already names the chart. */}}
{{- define "dicom-adapter.fullname" -}}
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

{{/* "<fullname>-<suffix>" kept under 63 characters. */}}
{{- define "dicom-adapter.componentName" -}}
{{- $full := include "dicom-adapter.fullname" .root | trunc (int (sub 62 (len .suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $full .suffix }}
{{- end }}

{{- define "dicom-adapter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard app.kubernetes.io labels. */}}
{{- define "dicom-adapter.labels" -}}
helm.sh/chart: {{ include "dicom-adapter.chart" . }}
{{ include "dicom-adapter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dicom-adapter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "dicom-adapter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dicom-adapter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels / selector labels of one component: pass (dict "root" $ "component" "importer"). */}}
{{- define "dicom-adapter.componentLabels" -}}
{{ include "dicom-adapter.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "dicom-adapter.componentSelectorLabels" -}}
{{ include "dicom-adapter.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "dicom-adapter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dicom-adapter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "dicom-adapter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Values the chart reads from the site config (single source of truth for ports and paths). */}}
{{/* Same rule as the adapter: a plugin section that is present is enabled unless enabled: false. */}}
{{- define "dicom-adapter.sectionEnabled" -}}
{{- $section := index .root.Values.config .name }}
{{- if and (kindIs "map" $section) (dig "enabled" true $section) }}true{{ end }}
{{- end }}

{{- define "dicom-adapter.importerEnabled" -}}
{{- include "dicom-adapter.sectionEnabled" (dict "root" . "name" "importer") }}
{{- end }}

{{- define "dicom-adapter.exporterEnabled" -}}
{{- include "dicom-adapter.sectionEnabled" (dict "root" . "name" "exporter") }}
{{- end }}

{{- define "dicom-adapter.healthPort" -}}
{{- dig "health" "port" 8080 .Values.config | int }}
{{- end }}

{{- define "dicom-adapter.dimsePort" -}}
{{- dig "importer" "dimse" "port" 2575 .Values.config | int }}
{{- end }}

{{- define "dicom-adapter.aeTitle" -}}
{{- dig "importer" "dimse" "ae_title" "IMPORTADAPTER" .Values.config }}
{{- end }}

{{- define "dicom-adapter.spoolPath" -}}
{{- dig "importer" "spool" "path" "/var/lib/dicom-adapter/spool" .Values.config }}
{{- end }}

{{- define "dicom-adapter.exportStateDir" -}}
{{- dig "exporter" "state_dir" "/var/lib/dicom-adapter/export" .Values.config }}
{{- end }}

{{/* Importer dead letters: importer.dead_letter_path, else <dir of spool.path>/deadletter. */}}
{{- define "dicom-adapter.deadLetterDir" -}}
{{- $explicit := dig "importer" "dead_letter_path" "" .Values.config | toString }}
{{- if $explicit }}{{ $explicit }}{{ else }}{{ printf "%s/deadletter" (dir (include "dicom-adapter.spoolPath" .)) }}{{ end }}
{{- end }}

{{/* Core state_dir: the provenance log (two-way echo guard). */}}
{{- define "dicom-adapter.stateDir" -}}
{{- .Values.config.state_dir | default "/var/lib/dicom-adapter/state" }}
{{- end }}

{{/* True when the exporter runs inside the importer pods (shared provenance log, one PVC). */}}
{{- define "dicom-adapter.exporterColocated" -}}
{{- if and (include "dicom-adapter.importerEnabled" .) (include "dicom-adapter.exporterEnabled" .) .Values.exporter.colocated }}true{{ end }}
{{- end }}

{{/* Workloads rendered, space-separated: "importer" (StatefulSet) and/or "exporter" (Deployment). */}}
{{- define "dicom-adapter.workloads" -}}
{{- $w := list }}
{{- if include "dicom-adapter.importerEnabled" . }}{{ $w = append $w "importer" }}{{ end }}
{{- if and (include "dicom-adapter.exporterEnabled" .) (not (include "dicom-adapter.exporterColocated" .)) }}{{ $w = append $w "exporter" }}{{ end }}
{{- join " " $w }}
{{- end }}

{{/* Plugins run by a workload: pass (dict "root" $ "component" "importer"|"exporter"). */}}
{{- define "dicom-adapter.plugins" -}}
{{- if and (eq .component "importer") (include "dicom-adapter.exporterColocated" .root) }}importer exporter{{ else }}{{ .component }}{{ end }}
{{- end }}

{{/*
Writable directories of a workload, all on one volume named "data" (the spool PVC for the importer,
an emptyDir for the exporter), each at the path the site config names, via subPath.
*/}}
{{- define "dicom-adapter.dataMounts" -}}
{{- $root := .root }}
{{- $plugins := splitList " " (include "dicom-adapter.plugins" .) }}
{{- if has "importer" $plugins }}
- name: data
  mountPath: {{ include "dicom-adapter.spoolPath" $root }}
  subPath: spool
- name: data
  mountPath: {{ include "dicom-adapter.deadLetterDir" $root }}
  subPath: deadletter
{{- end }}
{{- if has "exporter" $plugins }}
- name: data
  mountPath: {{ include "dicom-adapter.exportStateDir" $root }}
  subPath: export
{{- end }}
- name: data
  mountPath: {{ include "dicom-adapter.stateDir" $root }}
  subPath: state
{{- end }}

{{- define "dicom-adapter.configPath" -}}/etc/dicom-adapter/adapter.yaml{{- end }}

{{/* Refuse configurations that cannot work, with a message naming the key. */}}
{{- define "dicom-adapter.validate" -}}
{{- $auth := dig "dicomweb" "auth" dict .Values.config }}
{{- range $k := list "token" "password" "secret" "private_key" "credentials" }}
{{- if hasKey $auth $k }}
{{- fail (printf "config.dicomweb.auth.%s: secrets must not be inlined in values; put them in a Secret, set existingSecret, and use token_file/password_file or token_env/password_env" $k) }}
{{- end }}
{{- end }}
{{- $bind := dig "health" "bind" "0.0.0.0" .Values.config | toString }}
{{- if has $bind (list "127.0.0.1" "localhost" "::1") }}
{{- fail (printf "config.health.bind: %q is unreachable for kubelet probes; use 0.0.0.0" $bind) }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (include "dicom-adapter.importerEnabled" .) (empty .Values.networkPolicy.pacsCidrs) }}
{{- fail "networkPolicy.pacsCidrs: must list at least one PACS CIDR when networkPolicy.enabled and the importer runs (otherwise no association can reach it)" }}
{{- end }}
{{- if not (dig "health" "enabled" true .Values.config) }}
{{- fail "config.health.enabled: must be true in Kubernetes (liveness/readiness probes and /metrics use it)" }}
{{- end }}
{{- if and (not (include "dicom-adapter.importerEnabled" .)) (not (include "dicom-adapter.exporterEnabled" .)) }}
{{- fail "config.importer.enabled and config.exporter.enabled are both false: nothing to deploy" }}
{{- end }}
{{- end }}

{{/* Pod-level annotations shared by both workloads. */}}
{{- define "dicom-adapter.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if .Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ include "dicom-adapter.healthPort" . | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* The adapter container; pass (dict "root" $ "component" "importer"|"exporter"). */}}
{{- define "dicom-adapter.container" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $wl := index $v .component -}}
- name: {{ .component }}
  image: {{ include "dicom-adapter.image" $root | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  command:
    - dicom-adapter
  args:
    - run
    - --config
    - {{ include "dicom-adapter.configPath" $root }}
    {{- range splitList " " (include "dicom-adapter.plugins" .) }}
    - --only
    - {{ . }}
    {{- end }}
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: TMPDIR
      value: /tmp
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if and $v.existingSecret $v.existingSecretEnvFrom }}
  envFrom:
    - secretRef:
        name: {{ $v.existingSecret }}
  {{- end }}
  ports:
    {{- if eq .component "importer" }}
    - name: dimse
      containerPort: {{ include "dicom-adapter.dimsePort" $root }}
      protocol: TCP
    {{- end }}
    - name: health
      containerPort: {{ include "dicom-adapter.healthPort" $root }}
      protocol: TCP
  startupProbe:
    httpGet:
      path: /healthz
      port: health
    periodSeconds: {{ $v.probes.startup.periodSeconds }}
    failureThreshold: {{ $v.probes.startup.failureThreshold }}
    timeoutSeconds: {{ $v.probes.startup.timeoutSeconds }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: health
    periodSeconds: {{ $v.probes.liveness.periodSeconds }}
    failureThreshold: {{ $v.probes.liveness.failureThreshold }}
    timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: health
    periodSeconds: {{ $v.probes.readiness.periodSeconds }}
    failureThreshold: {{ $v.probes.readiness.failureThreshold }}
    timeoutSeconds: {{ $v.probes.readiness.timeoutSeconds }}
  {{- if and (eq .component "importer") (gt (int $wl.preStopSleepSeconds) 0) }}
  lifecycle:
    preStop:
      exec:
        command: ["sleep", "{{ $wl.preStopSleepSeconds | int }}"]
  {{- end }}
  resources:
    {{- toYaml $wl.resources | nindent 4 }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: config
      mountPath: /etc/dicom-adapter
      readOnly: true
    - name: tmp
      mountPath: /tmp
    {{- include "dicom-adapter.dataMounts" . | trim | nindent 4 }}
    {{- if $v.existingSecret }}
    - name: credentials
      mountPath: {{ $v.existingSecretMountPath }}
      readOnly: true
    {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/* Pod-level volumes shared by both workloads (the spool is added by the StatefulSet). */}}
{{- define "dicom-adapter.volumes" -}}
- name: config
  configMap:
    name: {{ include "dicom-adapter.fullname" . }}
    items:
      - key: adapter.yaml
        path: adapter.yaml
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- if .Values.existingSecret }}
- name: credentials
  secret:
    secretName: {{ .Values.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Calling AE of the helm test's C-ECHO: tests.callingAeTitle, else the first allowed AE. */}}
{{- define "dicom-adapter.testCallingAe" -}}
{{- $allowed := dig "importer" "dimse" "allowed_calling_aets" list .Values.config }}
{{- if .Values.tests.callingAeTitle }}{{ .Values.tests.callingAeTitle }}
{{- else if $allowed }}{{ first $allowed }}
{{- else }}HELMTEST{{ end }}
{{- end }}
