{{/*
Ephemeral storage, from the scratch volumes' sizes: a container's `ephemeral-storage` request is the sum of
the size limits of the disk-backed emptyDir volumes it mounts (so the scheduler places the pod on a node
with that much room, and the runs namespace's quota counts it), and its limit adds `logsEphemeralStorage`
(its logs; root filesystems are read-only). In-memory volumes count as memory instead.
*/}}

{{/* A quantity in Mi or Gi (the schema allows no other unit for scratch volumes) as a number of MiB. */}}
{{- define "mlflow-setup.mebibytes" -}}
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
`resources` with the ephemeral-storage of the scratch volumes mounted. Called with a dict: `root`,
`resources` (the container's, as configured), `scratch` (the mounted emptyDir size limits).
*/}}
{{- define "mlflow-setup.resourcesWithScratch" -}}
{{- $resources := deepCopy (.resources | default dict) -}}
{{- $mebibytes := 0 -}}
{{- range .scratch -}}
{{- $mebibytes = add $mebibytes (include "mlflow-setup.mebibytes" .) -}}
{{- end -}}
{{- $logs := include "mlflow-setup.mebibytes" .root.Values.logsEphemeralStorage -}}
{{- $_ := set $resources "requests" (merge (dict "ephemeral-storage" (printf "%dMi" $mebibytes)) (omit ($resources.requests | default dict) "ephemeral-storage")) -}}
{{- $_ := set $resources "limits" (merge (dict "ephemeral-storage" (printf "%dMi" (add $mebibytes $logs))) (omit ($resources.limits | default dict) "ephemeral-storage")) -}}
{{- toYaml $resources -}}
{{- end }}
