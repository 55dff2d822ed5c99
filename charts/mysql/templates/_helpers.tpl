{{/* Name of the chart, overridable. */}}
{{- define "mysql.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name `<release>-mysql`, overridable; mlflow_setup computes the same name for its URIs. */}}
{{- define "mysql.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "mysql.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "mysql.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mysql.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mysql.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: database
{{- end }}

{{- define "mysql.labels" -}}
helm.sh/chart: {{ include "mysql.chart" . }}
{{ include "mysql.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The image by digest only: a tag can be re-pushed, a digest cannot. */}}
{{- define "mysql.image" -}}
{{- $digest := required "image.digest is required (sha256:…): MySQL is pulled by digest" .Values.image.digest -}}
{{- printf "%s/%s@%s" .Values.image.registry .Values.image.repository $digest -}}
{{- end }}

{{/* Where the StatefulSet mounts align.sql (the Secret's key of that name). */}}
{{- define "mysql.alignFile" -}}
/etc/mysql/align/align.sql
{{- end }}

{{/* Where the StatefulSet mounts the passwords (the Secret's `root-password` and `password`) as files. */}}
{{- define "mysql.passwordsDir" -}}
/etc/mysql/passwords
{{- end }}

{{/* A MySQL string literal: quotes and backslashes escaped (the default sql_mode reads backslash escapes). */}}
{{- define "mysql.string" -}}
'{{ . | replace "\\" "\\\\" | replace "'" "''" }}'
{{- end }}

{{- define "mysql.alignSql" -}}
{{- $root := include "mysql.string" .Values.auth.rootPassword -}}
{{- $user := printf "%s@'%%'" (include "mysql.string" .Values.auth.username) -}}
ALTER USER IF EXISTS 'root'@'localhost' IDENTIFIED BY {{ $root }};
ALTER USER IF EXISTS 'root'@'%' IDENTIFIED BY {{ $root }};
CREATE USER IF NOT EXISTS {{ $user }} IDENTIFIED BY {{ include "mysql.string" .Values.auth.password }};
ALTER USER {{ $user }} IDENTIFIED BY {{ include "mysql.string" .Values.auth.password }};
{{- range (prepend .Values.auth.extraDatabases .Values.auth.database) }}
CREATE DATABASE IF NOT EXISTS `{{ . }}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
GRANT ALL PRIVILEGES ON `{{ . }}`.* TO {{ $user }};
{{- end }}
{{- include "mysql.restoreGrants" (dict "user" $user "databases" (prepend .Values.auth.extraDatabases .Values.auth.database)) }}
{{- include "mysql.binlogGrants" (dict "user" $user "Values" .Values) }}
{{- end }}

{{/*
With binary logs: the application user may read them (REPLICATION SLAVE: mysqlbinlog
--read-from-remote-server, which the binlog shipping and point-in-time restore Jobs run), see where they
stand (REPLICATION CLIENT: SHOW BINARY LOGS), close the current one (RELOAD: FLUSH BINARY LOGS), restore
without logging what it writes (SESSION_VARIABLES_ADMIN: sql_log_bin) and replay logs into its databases
(REPLICATION_APPLIER: the BINLOG statements of mysqlbinlog's output, with the privileges it holds on each
database; not BINLOG_ADMIN, which could also purge logs not shipped yet). It holds every privilege on every
database here already: reading their changes reveals nothing more.
*/}}
{{- define "mysql.binlogGrants" -}}
{{- if .Values.binaryLogs.enabled }}
GRANT RELOAD, REPLICATION CLIENT, REPLICATION SLAVE ON *.* TO {{ .user }};
GRANT SESSION_VARIABLES_ADMIN, REPLICATION_APPLIER ON *.* TO {{ .user }};
{{- end }}
{{- end }}

{{/*
Every privilege on the staging databases a restore loads a backup into and moves the replaced tables to
(`<database>_restore`, `<database>_replaced`: STAGING_SUFFIXES in images/tracking-server/backup.py),
beside each database. `_` is escaped: each grant names one database, not a pattern.
*/}}
{{- define "mysql.restoreGrants" -}}
{{- $user := .user -}}
{{- range .databases }}
{{- $literal := . | replace "_" "\\_" }}
GRANT ALL PRIVILEGES ON `{{ $literal }}\_restore`.* TO {{ $user }};
GRANT ALL PRIVILEGES ON `{{ $literal }}\_replaced`.* TO {{ $user }};
{{- end }}
{{- end }}

{{/* A quantity in Mi or Gi as a number of MiB (scratch volume sizes). */}}
{{- define "mysql.mebibytes" -}}
{{- $q := toString . -}}
{{- if hasSuffix "Gi" $q -}}
{{- mul (trimSuffix "Gi" $q | atoi) 1024 -}}
{{- else if hasSuffix "Mi" $q -}}
{{- trimSuffix "Mi" $q | atoi -}}
{{- else -}}
{{- fail (printf "%s: a scratch volume's size must be in Mi or Gi" $q) -}}
{{- end -}}
{{- end }}

{{/*
`resources` with ephemeral storage: the request is the sum of the scratch volumes' size limits (so the pod
lands on a node with that room), the limit adds `logsEphemeralStorage` (the root filesystem is read-only).
Called with a dict: `root`, `resources`, `scratch` (size limits).
*/}}
{{- define "mysql.resourcesWithScratch" -}}
{{- $resources := deepCopy (.resources | default dict) -}}
{{- $mebibytes := 0 -}}
{{- range .scratch -}}
{{- $mebibytes = add $mebibytes (include "mysql.mebibytes" .) -}}
{{- end -}}
{{- $logs := include "mysql.mebibytes" .root.Values.logsEphemeralStorage -}}
{{- $_ := set $resources "requests" (merge (dict "ephemeral-storage" (printf "%dMi" $mebibytes)) (omit ($resources.requests | default dict) "ephemeral-storage")) -}}
{{- $_ := set $resources "limits" (merge (dict "ephemeral-storage" (printf "%dMi" (add $mebibytes $logs))) (omit ($resources.limits | default dict) "ephemeral-storage")) -}}
{{- toYaml $resources -}}
{{- end }}
