{{/* Names and labels. */}}
{{- define "switchyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "switchyard.fullname" -}}
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

{{/* A component's object name: <fullname>-<component>, at most 63 characters. */}}
{{- define "switchyard.componentName" -}}
{{- $root := index . 0 }}{{- $component := index . 1 }}
{{- printf "%s-%s" (include "switchyard.fullname" $root | trunc (int (sub 62 (len $component)))) $component | replace "--" "-" }}
{{- end }}

{{- define "switchyard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "switchyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchyard
{{- end }}

{{- define "switchyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: [root, component]. */}}
{{- define "switchyard.componentLabels" -}}
{{ include "switchyard.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "switchyard.componentSelector" -}}
{{ include "switchyard.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "switchyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "switchyard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "switchyard.leaseName" -}}
{{- default (include "switchyard.componentName" (list . "sweeper")) .Values.worker.leaseName }}
{{- end }}

{{- define "switchyard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
A connection URL given inline must not carry credentials: they belong in a
Secret. Fails rendering otherwise. Argument: [what, url].
*/}}
{{- define "switchyard.checkInlineUrl" -}}
{{- $what := index . 0 }}{{- $url := index . 1 }}
{{- $parsed := urlParse $url }}
{{- if or (contains ":" (default "" $parsed.userinfo)) (regexMatch "(^|&)password=" (default "" $parsed.query)) }}
{{- fail (printf "%s.url holds a password: put the URL in a Secret and name it in %s.existingSecret" $what $what) }}
{{- end }}
{{- end }}

{{/*
DATABASE_URL or REDIS_URL: inline (checked), or from a Secret (the one
named, else <fullname>-<what>). Argument: [root, what, ENV_NAME].
*/}}
{{- define "switchyard.urlEnv" -}}
{{- $root := index . 0 }}{{- $what := index . 1 }}{{- $env := index . 2 }}
{{- $values := index $root.Values $what }}
{{- if and $values.url $values.existingSecret }}
{{- fail (printf "%s: set url or existingSecret, not both" $what) }}
{{- end }}
- name: {{ $env }}
{{- if $values.url }}
{{- include "switchyard.checkInlineUrl" (list $what $values.url) }}
  value: {{ $values.url | quote }}
{{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ default (include "switchyard.componentName" (list $root $what)) $values.existingSecret }}
      key: {{ $values.existingSecretKey }}
{{- end }}
{{- end }}

{{/* The connection settings every container needs. */}}
{{- define "switchyard.connectionEnv" -}}
{{ include "switchyard.urlEnv" (list . "database" "DATABASE_URL") | trim }}
{{ include "switchyard.urlEnv" (list . "redis" "REDIS_URL") | trim }}
- name: SWITCHYARD_REDIS_PREFIX
  value: {{ .Values.redis.prefix | quote }}
- name: RUST_LOG
  value: {{ .Values.config.logLevel | quote }}
- name: SWITCHYARD_LOG_FORMAT
  value: {{ .Values.config.logFormat | quote }}
{{- end }}

{{- define "switchyard.catalogEnabled" -}}
{{- if or .Values.catalog.toml .Values.catalog.existingConfigMap }}true{{- end }}
{{- end }}

{{- define "switchyard.catalogPath" -}}
/etc/switchyard/catalog.toml
{{- end }}

{{/* Settings shared by the API and the workers, with the component's own
Secrets. Argument: [root, component] (api or worker). */}}
{{- define "switchyard.serverEnv" -}}
{{- $root := index . 0 }}{{- $component := index . 1 }}
{{- $values := $root.Values }}
{{ include "switchyard.connectionEnv" $root | trim }}
{{- if include "switchyard.catalogEnabled" $root }}
- name: SWITCHYARD_CONFIG
  value: {{ include "switchyard.catalogPath" $root }}
{{- end }}
{{- with $values.config }}
{{- if not (kindIs "invalid" .maxMessageChars) }}
- name: SWITCHYARD_MAX_MESSAGE_CHARS
  value: {{ .maxMessageChars | int64 | quote }}
{{- end }}
{{- if not (kindIs "invalid" .runTimeoutSecs) }}
- name: SWITCHYARD_RUN_TIMEOUT_SECS
  value: {{ .runTimeoutSecs | int64 | quote }}
{{- end }}
{{- if not (kindIs "invalid" .maxAttempts) }}
- name: SWITCHYARD_MAX_ATTEMPTS
  value: {{ .maxAttempts | int64 | quote }}
{{- end }}
{{- if not (kindIs "invalid" .deltaFlushMs) }}
- name: SWITCHYARD_DELTA_FLUSH_MS
  value: {{ .deltaFlushMs | int64 | quote }}
{{- end }}
{{- if not (kindIs "invalid" .deltaMaxBytes) }}
- name: SWITCHYARD_DELTA_MAX_BYTES
  value: {{ .deltaMaxBytes | int64 | quote }}
{{- end }}
{{- end }}
{{- /* Read by the API too (configuration is checked as a whole at start-up);
       only the workers act on it. The namespace comes from the downward API,
       so that no pod needs its service account token just for that. */}}
- name: SWITCHYARD_SWEEPER_LEADER
  value: {{ $values.worker.sweeperLeader | quote }}
{{- if eq $values.worker.sweeperLeader "kubernetes" }}
- name: SWITCHYARD_SWEEPER_LEASE
  value: {{ include "switchyard.leaseName" $root | quote }}
- name: SWITCHYARD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}
{{- if $values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $values.otel.endpoint | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "switchyard-%s" $component | quote }}
{{- end }}
{{- /* Each component's own Secrets: the providers' keys and what tools and
       upstreams read are the workers' (`secretEnv`); the API's are
       `api.secretEnv`. */}}
{{- if eq $component "worker" }}
{{- include "switchyard.secretEnv" $values.secretEnv }}
{{- else }}
{{- include "switchyard.secretEnv" $values.api.secretEnv }}
{{- end }}
{{- with $values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Variables filled from Secrets: a list of {name, secretName, secretKey}.
`secretEnv` goes to the workers only, `api.secretEnv` to the API only: a
pod holds the secrets it uses and no other.
*/}}
{{- define "switchyard.secretEnv" -}}
{{- range . }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .secretKey }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every pod. */}}
{{- define "switchyard.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . }}
{{- end }}
securityContext:
{{ toYaml .Values.podSecurityContext | indent 2 }}
{{- end }}

{{/* The catalog ConfigMap's name. */}}
{{- define "switchyard.catalogConfigMap" -}}
{{- default (include "switchyard.componentName" (list . "catalog")) .Values.catalog.existingConfigMap }}
{{- end }}

{{/* Volumes: a writable /tmp, and the catalog when there is one. */}}
{{- define "switchyard.volumes" -}}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
{{- if include "switchyard.catalogEnabled" . }}
  - name: catalog
    configMap:
      name: {{ include "switchyard.catalogConfigMap" . }}
      items:
        - key: {{ .Values.catalog.key }}
          path: catalog.toml
{{- end }}
{{- end }}

{{- define "switchyard.volumeMounts" -}}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- if include "switchyard.catalogEnabled" . }}
  - name: catalog
    mountPath: /etc/switchyard
    readOnly: true
{{- end }}
{{- end }}

{{/* Rolls the pods when the chart's catalog changes. */}}
{{- define "switchyard.checksums" -}}
{{- if .Values.catalog.toml }}
checksum/catalog: {{ .Values.catalog.toml | sha256sum }}
{{- end }}
{{- end }}

{{/* The worker's grace period, checked against its drain. */}}
{{- define "switchyard.workerGracePeriod" -}}
{{- $drain := int64 .Values.worker.shutdownGraceSecs }}
{{- $grace := .Values.worker.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $grace }}
{{- add $drain 30 }}
{{- else if lt (int64 $grace) (add $drain 15) }}
{{- fail (printf "worker.terminationGracePeriodSeconds (%d) must be at least worker.shutdownGraceSecs (%d) + 15: after the drain the worker hands unfinished runs back and releases the sweeper's Lease" (int64 $grace) $drain) }}
{{- else }}
{{- int64 $grace }}
{{- end }}
{{- end }}

{{/* The run queue's Redis keys (apalis-redis: <queue>:scheduled, a sorted
set every push lands in, and <queue>:active, the list due jobs move to
until a worker takes them), the queue being <prefix>:queue:runs. */}}
{{- define "switchyard.runQueue" -}}
{{- printf "%s:queue:runs" .Values.redis.prefix }}
{{- end }}

{{/* The origins whose pages may call the API from a browser. */}}
{{- define "switchyard.corsEnv" -}}
{{- with .Values.cors }}
{{- if .origins }}
{{- if and .credentials (has "*" .origins) }}
{{- fail "cors: \"*\" in origins cannot go with credentials: every site could act with a visitor's cookies; list the origins" }}
{{- end }}
- name: SWITCHYARD_CORS_ORIGINS
  value: {{ join "," .origins | quote }}
- name: SWITCHYARD_CORS_CREDENTIALS
  value: {{ .credentials | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The API's authenticators (SWITCHYARD_AUTH and the OIDC settings). */}}
{{- define "switchyard.authEnv" -}}
{{- $auth := .Values.auth }}
{{- if not $auth.methods }}
{{- fail "auth.methods: name at least one of api_key, oidc, easy_auth; the API refuses to start without one" }}
{{- end }}
{{- if has "dev" $auth.methods }}
{{- fail "auth.methods: dev lets anyone in as an administrator and is for `switchyard dev` on a laptop; the chart cannot turn it on (use api_key)" }}
{{- end }}
- name: SWITCHYARD_AUTH
  value: {{ join "," $auth.methods | quote }}
- name: SWITCHYARD_ADMIN_ROLE
  value: {{ $auth.adminRole | quote }}
- name: SWITCHYARD_SERVICE_ROLE
  value: {{ $auth.serviceRole | quote }}
{{- if has "oidc" $auth.methods }}
{{- if not (and $auth.oidc.issuer $auth.oidc.audience $auth.oidc.jwksUrl) }}
{{- fail "auth.oidc: issuer, audience and jwksUrl are required with oidc in auth.methods" }}
{{- end }}
- name: SWITCHYARD_OIDC_ISSUER
  value: {{ $auth.oidc.issuer | quote }}
- name: SWITCHYARD_OIDC_AUDIENCE
  value: {{ $auth.oidc.audience | quote }}
- name: SWITCHYARD_OIDC_JWKS_URL
  value: {{ $auth.oidc.jwksUrl | quote }}
- name: SWITCHYARD_OIDC_ROLES_CLAIM
  value: {{ $auth.oidc.rolesClaim | quote }}
{{- end }}
{{- end }}
