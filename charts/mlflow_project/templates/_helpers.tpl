{{- define "mlflow-project.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Job's name: `<release>-<chart>`, failing (not truncating) beyond 63 characters. */}}
{{- define "mlflow-project.jobName" -}}
{{- $name := printf "%s-%s" .Release.Name (include "mlflow-project.name" .) -}}
{{- if gt (len $name) 63 -}}
{{- fail (printf "Job name %q is longer than 63 characters: use a shorter release name" $name) -}}
{{- end -}}
{{- $name -}}
{{- end }}

{{- define "mlflow-project.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlflow-project.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlflow-project.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: run
{{- end }}

{{- define "mlflow-project.labels" -}}
helm.sh/chart: {{ include "mlflow-project.chart" . }}
{{ include "mlflow-project.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlflow
{{- end }}

{{- define "mlflow-project.image" -}}
{{- $registry := required "image.registry is required (the ACR login server)" .Values.image.registry -}}
{{- $digest := required "image.digest is required (sha256:…)" .Values.image.digest -}}
{{- printf "%s/%s@%s" $registry .Values.image.repository $digest -}}
{{- end }}

{{/*
The run's resources with ephemeral storage: the request is its scratch volume's size limit (`tmpSizeLimit`),
so the run lands on a node with that room and the runs namespace's quota counts it; the limit adds
`logsEphemeralStorage` (its logs; the root filesystem is read-only).
*/}}
{{- define "mlflow-project.resources" -}}
{{- $mebibytes := include "mlflow-project.mebibytes" .Values.tmpSizeLimit | int -}}
{{- $logs := include "mlflow-project.mebibytes" .Values.logsEphemeralStorage | int -}}
{{- $resources := deepCopy .Values.resources -}}
{{- $_ := set $resources "requests" (merge (dict "ephemeral-storage" (printf "%dMi" $mebibytes)) (omit $resources.requests "ephemeral-storage")) -}}
{{- $_ := set $resources "limits" (merge (dict "ephemeral-storage" (printf "%dMi" (add $mebibytes $logs))) (omit $resources.limits "ephemeral-storage")) -}}
{{- toYaml $resources -}}
{{- end }}

{{/* A quantity in Mi or Gi as a number of MiB. */}}
{{- define "mlflow-project.mebibytes" -}}
{{- $q := toString . -}}
{{- if hasSuffix "Gi" $q -}}
{{- mul (trimSuffix "Gi" $q | atoi) 1024 -}}
{{- else -}}
{{- trimSuffix "Mi" $q | atoi -}}
{{- end -}}
{{- end }}
