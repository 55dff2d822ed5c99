{{/* Chart name, overridable. */}}
{{- define "mlflow-setup.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Base of every resource name: fullnameOverride, else `<release>-<chart>` (just the release name when it
already contains the chart name). Truncated so that `<fullname>-<suffix>` stays a valid 63-char name.
*/}}
{{- define "mlflow-setup.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mlflow-setup.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "mlflow-setup.labels" -}}
helm.sh/chart: {{ include "mlflow-setup.chart" . }}
app.kubernetes.io/name: {{ include "mlflow-setup.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlflow
{{- end }}

{{/* Selector labels of the tracking-server pods (also what the MySQL NetworkPolicy admits). */}}
{{- define "mlflow-setup.tracking.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlflow-setup.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: tracking
{{- end }}

{{- define "mlflow-setup.tracking.labels" -}}
{{ include "mlflow-setup.labels" . }}
app.kubernetes.io/component: tracking
{{- end }}

{{/* Names of the tracking server's objects. */}}
{{- define "mlflow-setup.tracking.fullname" -}}
{{- printf "%s-tracking" (include "mlflow-setup.fullname" .) }}
{{- end }}

{{/* Secret with the server's credentials: URIs, basic-auth config, admin password, Flask key. */}}
{{- define "mlflow-setup.tracking.secretName" -}}
{{- printf "%s-tracking" (include "mlflow-setup.fullname" .) }}
{{- end }}

{{/* Secret with what run Jobs need to log in (MLFLOW_TRACKING_USERNAME/PASSWORD). */}}
{{- define "mlflow-setup.run.secretName" -}}
{{- printf "%s-run-credentials" (include "mlflow-setup.fullname" .) }}
{{- end }}

{{- define "mlflow-setup.tracking.image" -}}
{{- $registry := required "tracking.image.registry is required (the ACR login server)" .Values.tracking.image.registry -}}
{{- $digest := required "tracking.image.digest is required (sha256:…)" .Values.tracking.image.digest -}}
{{- printf "%s/%s@%s" $registry .Values.tracking.image.repository $digest -}}
{{- end }}

{{- define "mlflow-setup.tls.image" -}}
{{- $registry := required "tls.image.registry is required when exposure.type is public (the ACR login server)" .Values.tls.image.registry -}}
{{- $digest := required "tls.image.digest is required when exposure.type is public (sha256:…)" .Values.tls.image.digest -}}
{{- printf "%s/%s@%s" $registry .Values.tls.image.repository $digest -}}
{{- end }}

{{/*
The TLS terminator's certificate storage claim: `tls.storage.existingClaim`, made outside the release, or
the chart's own (which a rollback, an uninstall or a switch to private deletes); and the public Services'
shared annotations.
*/}}
{{- define "mlflow-setup.tls.claimName" -}}
{{- .Values.tls.storage.existingClaim | default (printf "%s-tls" (include "mlflow-setup.tracking.fullname" .)) }}
{{- end }}
{{- define "mlflow-setup.tracking.publicAnnotations" -}}
service.beta.kubernetes.io/azure-pip-name: {{ required "exposure.publicIP.name is required when exposure.type is public" .Values.exposure.publicIP.name | quote }}
service.beta.kubernetes.io/azure-load-balancer-resource-group: {{ required "exposure.publicIP.resourceGroup is required when exposure.type is public" .Values.exposure.publicIP.resourceGroup | quote }}
{{- with .Values.tracking.service.annotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* In-cluster DNS names of the tracking Service, shortest first. */}}
{{- define "mlflow-setup.tracking.dnsNames" -}}
{{- $svc := include "mlflow-setup.tracking.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | join "," -}}
{{- end }}

{{/*
`--allowed-hosts`: MLflow >= 3.5 answers 403 to any other Host header. The Service's DNS names with and
without port, localhost on any port (kubectl port-forward, the readiness check), the public name when
public (the terminator passes the client's Host on), then the configured extra hosts.
*/}}
{{- define "mlflow-setup.tracking.allowedHosts" -}}
{{- $port := .Values.tracking.service.port | toString -}}
{{- $hosts := list -}}
{{- range (include "mlflow-setup.tracking.dnsNames" . | splitList ",") -}}
{{- $hosts = append $hosts . -}}
{{- $hosts = append $hosts (printf "%s:%s" . $port) -}}
{{- end -}}
{{- $hosts = concat $hosts (list "localhost" "localhost:*" "127.0.0.1" "127.0.0.1:*") -}}
{{- if eq .Values.exposure.type "public" -}}
{{- $hosts = append $hosts .Values.exposure.hostname -}}
{{- end -}}
{{- $hosts = concat $hosts .Values.tracking.allowedHosts -}}
{{- $hosts | uniq | join "," -}}
{{- end }}

{{- define "mlflow-setup.tracking.artifactsDestination" -}}
{{- $a := .Values.tracking.artifacts -}}
{{- $account := required "tracking.artifacts.storageAccount is required" $a.storageAccount -}}
{{- $container := required "tracking.artifacts.container is required" $a.container -}}
{{- printf "wasbs://%s@%s.%s/%s" $container $account $a.endpointSuffix ($a.path | trimPrefix "/") | trimSuffix "/" -}}
{{- end }}

{{/* Name of the bundled MySQL's Service, computed as charts/mysql computes it. */}}
{{- define "mlflow-setup.mysql.fullname" -}}
{{- if .Values.mysql.fullnameOverride }}
{{- .Values.mysql.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-mysql" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Connection settings of the database, from the bundled MySQL or externalDatabase, as a dict. */}}
{{- define "mlflow-setup.database" -}}
{{- if .Values.mysql.enabled -}}
{{- $auth := .Values.mysql.auth -}}
host: {{ include "mlflow-setup.mysql.fullname" . }}
port: 3306
user: {{ $auth.username }}
password: {{ required "mysql.auth.password is required" $auth.password | quote }}
database: {{ $auth.database }}
authDatabase: {{ first $auth.extraDatabases }}
oidcDatabase: {{ if gt (len $auth.extraDatabases) 1 }}{{ index $auth.extraDatabases 1 }}{{ end }}
{{- else -}}
{{- $db := .Values.externalDatabase -}}
host: {{ required "externalDatabase.host is required when mysql.enabled is false" $db.host | quote }}
port: {{ $db.port }}
user: {{ $db.user | quote }}
password: {{ required "externalDatabase.password is required" $db.password | quote }}
database: {{ $db.database | quote }}
authDatabase: {{ $db.authDatabase | quote }}
oidcDatabase: {{ $db.oidcDatabase | quote }}
caFile: {{ $db.tls.caFile | quote }}
{{- end -}}
{{- end }}

{{/*
SQLAlchemy URI of one database; the password is URL-encoded. Call with (list $ "<database>").
With a CA bundle (`externalDatabase.tls.caFile`) the URI asks PyMySQL for TLS and verifies the server's
certificate against it and its name against the host (SQLAlchemy's pymysql dialect turns `ssl_ca` and
`ssl_check_hostname` into PyMySQL's `ssl` options: with a CA, PyMySQL requires a verified certificate).
*/}}
{{- define "mlflow-setup.databaseUri" -}}
{{- $root := index . 0 -}}
{{- $db := include "mlflow-setup.database" $root | fromYaml -}}
{{- printf "mysql+pymysql://%s:%s@%s:%v/%s" ($db.user | urlquery) ($db.password | urlquery) $db.host $db.port (index $db (index . 1)) -}}
{{- with $db.caFile -}}
{{- printf "?ssl_ca=%s&ssl_check_hostname=true" . -}}
{{- end -}}
{{- end }}

{{/* Container securityContext: non-root, read-only root filesystem, no capabilities. Pass the UID. */}}
{{- define "mlflow-setup.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ . }}
capabilities:
  drop: ["ALL"]
{{- end }}

{{/*
Names of the project volume's objects. The PersistentVolume is cluster-scoped: its name carries the
namespace. `project-files`, not `projects` as before the mount key moved to the release's namespace: a
volume's source (its secret reference) and a claim's volume cannot change in place
(https://github.com/kubernetes/kubernetes/issues/88622), so an upgrade replaces both under new names.
*/}}
{{- define "mlflow-setup.project.claimName" -}}
{{- printf "%s-project-files" (include "mlflow-setup.fullname" .) }}
{{- end }}
{{- define "mlflow-setup.project.volumeName" -}}
{{- printf "%s-%s-project-files" .Release.Namespace (include "mlflow-setup.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "mlflow-setup.project.secretName" -}}
{{- printf "%s-project-share" (include "mlflow-setup.fullname" .) }}
{{- end }}

{{/* Egress to the cluster DNS (CoreDNS in kube-system), for the NetworkPolicies that limit egress. */}}
{{- define "mlflow-setup.dnsEgress" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end }}

{{/* Namespace of run Jobs and what they use (credentials, project volume): its own, or the release's. */}}
{{- define "mlflow-setup.project.namespace" -}}
{{- .Values.project.namespace | default .Release.Namespace -}}
{{- end }}

{{- define "mlflow-setup.project.labels" -}}
{{ include "mlflow-setup.labels" . }}
app.kubernetes.io/component: project
{{- end }}

{{- define "mlflow-setup.test.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlflow-setup.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
{{- end }}

{{/* Selector labels of the backup and gc Job pods (MySQL's NetworkPolicy admits them). */}}
{{- define "mlflow-setup.maintenance.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlflow-setup.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: maintenance
{{- end }}

{{/* With `tracking.auth.mode: oidc`: the sign-in settings, checked, with their defaults applied, as a dict. */}}
{{- define "mlflow-setup.oidc" -}}
{{- $oidc := .Values.tracking.auth.oidc -}}
{{- if not (include "mlflow-setup.database" . | fromYaml).oidcDatabase }}
{{- fail "tracking.auth.mode oidc needs the sign-in database: a second entry of mysql.auth.extraDatabases (or externalDatabase.oidcDatabase)" }}
{{- end }}
{{- $public := eq .Values.exposure.type "public" -}}
discoveryUrl: {{ required "tracking.auth.oidc.discoveryUrl is required with tracking.auth.mode oidc" $oidc.discoveryUrl | quote }}
issuer: {{ required "tracking.auth.oidc.issuer is required with tracking.auth.mode oidc" $oidc.issuer | quote }}
clientId: {{ required "tracking.auth.oidc.clientId is required with tracking.auth.mode oidc" $oidc.clientId | quote }}
audience: {{ $oidc.audience | default $oidc.clientId | quote }}
{{- if $oidc.redirectUri }}
redirectUri: {{ $oidc.redirectUri | quote }}
{{- else if $public }}
redirectUri: {{ printf "https://%s/callback" (required "exposure.hostname is required when exposure.type is public" .Values.exposure.hostname) | quote }}
{{- else }}
redirectUri: {{ printf "http://localhost:%v/callback" .Values.tracking.service.port | quote }}
{{- end }}
{{- if not $oidc.allowedGroups }}
{{- fail "tracking.auth.oidc.allowedGroups must name at least one group with tracking.auth.mode oidc" }}
{{- end }}
{{- if not $oidc.adminGroups }}
{{- fail "tracking.auth.oidc.adminGroups must name at least one group with tracking.auth.mode oidc" }}
{{- end }}
allowedGroups: {{ join "," $oidc.allowedGroups | quote }}
adminGroups: {{ join "," $oidc.adminGroups | quote }}
{{- end }}

{{/* The sign-in plugin's provider registry (AUTH_PROVIDERS, JSON): the OpenID provider people sign in
with, and the cluster's ServiceAccount issuer for run Jobs' tokens (only from the runs namespace). */}}
{{- define "mlflow-setup.oidc.providers" -}}
{{- $oidc := .Values.tracking.auth.oidc -}}
{{- $settings := include "mlflow-setup.oidc" . | fromYaml -}}
{{- $people := dict "id" "default" "type" "oidc" "discovery_url" $settings.discoveryUrl "client_id" $settings.clientId "audience" $settings.audience "issuer" $settings.issuer -}}
{{- $providers := list $people -}}
{{- with $oidc.runTokens.issuer -}}
{{- $runs := dict "id" "runs" "type" "k8s" "issuer" . "audience" $oidc.runTokens.audience "namespace_allowlist" (list (include "mlflow-setup.project.namespace" $)) -}}
{{- if $oidc.runTokens.jwks -}}
{{- $_ := set $runs "jwks_inline" $oidc.runTokens.jwks -}}
{{- else -}}
{{- $_ := set $runs "discovery_url" ($oidc.runTokens.discoveryUrl | default (printf "%s/.well-known/openid-configuration" (trimSuffix "/" .))) -}}
{{- end -}}
{{- $providers = append $providers $runs -}}
{{- end -}}
{{- toJson $providers -}}
{{- end }}

{{/* MLflow's usage telemetry (env of every MLflow container): off unless `telemetry.enabled`. */}}
{{- define "mlflow-setup.telemetryEnv" -}}
{{- if not .Values.telemetry.enabled }}
- name: MLFLOW_DISABLE_TELEMETRY
  value: "true"
{{- end }}
{{- end }}

{{/* The stack's keys over what MLflow encrypts in its database (env of the init container and the server). */}}
{{- define "mlflow-setup.encryptionEnv" -}}
{{- $secret := include "mlflow-setup.tracking.secretName" . -}}
- name: MLFLOW_CRYPTO_KEK_PASSPHRASE
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: kek-passphrase
- name: MLFLOW_CRYPTO_KEK_VERSION
  value: {{ .Values.tracking.encryption.kekVersion | quote }}
- name: MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: webhook-key
{{- end }}

{{- /*
Seconds the largest configured artifact transfer takes at the slowest assumed rate (rounded up).
*/}}
{{- define "mlflow-setup.tracking.transferSeconds" -}}
{{- $s := .Values.tracking.shutdown -}}
{{- div (add (int $s.largestTransferMiB) (sub (int $s.minTransferMiBPerSecond) 1)) (int $s.minTransferMiBPerSecond) -}}
{{- end }}

{{- /*
A tracking pod's terminationGracePeriodSeconds: it keeps accepting for drainSeconds, then a transfer that
started just before may take transferSeconds, then the processes exit.
*/}}
{{- define "mlflow-setup.tracking.terminationGracePeriodSeconds" -}}
{{- $s := .Values.tracking.shutdown -}}
{{- add (int $s.drainSeconds) (include "mlflow-setup.tracking.transferSeconds" . | int) (int $s.exitSeconds) -}}
{{- end }}

{{/* Selector labels of the jobs pod (MLflow's server-side job runner; MySQL's NetworkPolicy admits it). */}}
{{- define "mlflow-setup.jobs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlflow-setup.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: jobs
{{- end }}

{{- define "mlflow-setup.jobs.labels" -}}
{{ include "mlflow-setup.labels" . }}
app.kubernetes.io/component: jobs
{{- end }}

{{- define "mlflow-setup.jobs.fullname" -}}
{{- printf "%s-jobs" (include "mlflow-setup.fullname" .) }}
{{- end }}

{{/* Where jobs reach the AI Gateway: `jobs.gatewayUri`, else the tracking Service. */}}
{{- define "mlflow-setup.jobs.gatewayUri" -}}
{{- .Values.jobs.gatewayUri | default (printf "http://%s.%s.svc.cluster.local:%v" (include "mlflow-setup.tracking.fullname" .) .Release.Namespace .Values.tracking.service.port) -}}
{{- end }}

{{/*
Server-side jobs and LLM providers, in the env of the tracking server and the jobs pod alike: jobs are
accepted (MLflow's `executor` engine: a row in the tracking database) and run by the jobs pod only
(serve.py change 12); the internal token MLflow's basic-auth accepts from jobs on /gateway/ routes.
*/}}
{{- define "mlflow-setup.jobsEnv" -}}
- name: MLFLOW_SERVER_ENABLE_JOB_EXECUTION
  value: {{ .Values.jobs.enabled | quote }}
{{- if .Values.jobs.enabled }}
- name: MLFLOW_SERVER_JOB_EXECUTION_ENGINE
  value: executor
- name: MLFLOW_AKS_JOB_RUNNER
  value: separate
- name: _MLFLOW_INTERNAL_GATEWAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "mlflow-setup.tracking.secretName" . }}
      key: gateway-token
{{- end }}
{{- if .Values.llm.allowPrivateAddresses }}
- name: MLFLOW_GATEWAY_API_BASE_ALLOW_PRIVATE_IPS
  value: "true"
{{- end }}
{{- end }}
