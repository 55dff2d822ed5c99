{{/*
The pod of every maintenance Job (the backup, gc and binlog CronJobs, the pre-migration Job, the rollback
guard, the point-in-time restore): the tracking server's image and database settings, each with only the
Azure access its ServiceAccount's workload identity has. Called with a dict: `root` (the chart's context),
`component`, `serviceAccount`, `env` (more EnvVars), `resources`, and either `command` (one container
named after the component) or `steps` (containers run in order: all but the last as init containers;
each `name`, `command` and, for MySQL's client tools, `image`), with `volumes` (more emptyDir volumes,
each `name`, `mountPath` and `emptyDir`) mounted in every step.
*/}}
{{- define "mlflow-setup.maintenance.podTemplate" -}}
{{- $ := .root -}}
{{- $steps := .steps | default (list (dict "name" .component "command" .command)) -}}
{{- /* Every step mounts every scratch volume: each asks for all of their room (ephemeral storage). */ -}}
{{- $scratch := list $.Values.maintenanceTmpSizeLimit -}}
{{- range .volumes }}{{ if ne (.emptyDir.medium | default "") "Memory" }}{{ $scratch = append $scratch .emptyDir.sizeLimit }}{{ end }}{{ end -}}
{{- $task := dict "env" .env "resources" .resources "volumes" .volumes "scratch" $scratch -}}
metadata:
  labels:
    {{- include "mlflow-setup.maintenance.selectorLabels" $ | nindent 4 }}
    mlflow-aks/task: {{ .component }}
    # Azure access through its ServiceAccount's identity: backup the backups, gc the artifacts.
    azure.workload.identity/use: "true"
spec:
  restartPolicy: Never
  serviceAccountName: {{ .serviceAccount }}
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: {{ $.Values.tracking.runAsUser }}
    runAsGroup: {{ $.Values.tracking.runAsUser }}
    fsGroup: {{ $.Values.tracking.runAsUser }}
    seccompProfile:
      type: RuntimeDefault
  {{- with $.Values.tracking.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $.Values.tracking.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if gt (len $steps) 1 }}
  initContainers:
    {{- range initial $steps }}
    {{- include "mlflow-setup.maintenance.container" (dict "root" $ "task" $task "step" .) | nindent 4 }}
    {{- end }}
  {{- end }}
  containers:
    {{- include "mlflow-setup.maintenance.container" (dict "root" $ "task" $task "step" (last $steps)) | nindent 4 }}
  volumes:
    - name: auth-config
      secret:
        secretName: {{ include "mlflow-setup.tracking.secretName" $ }}
        defaultMode: 0440
        items:
          - key: basic_auth.ini
            path: basic_auth.ini
    # Python's temporary files; a backup streams, it never stages the dump here (a restore downloads the
    # backup here before it checks it).
    - name: tmp
      emptyDir:
        sizeLimit: {{ $.Values.maintenanceTmpSizeLimit | quote }}
    {{- range .volumes }}
    - name: {{ .name }}
      emptyDir:
        {{- toYaml .emptyDir | nindent 8 }}
    {{- end }}
{{- end }}

{{/* One container of a maintenance pod (see podTemplate). */}}
{{- define "mlflow-setup.maintenance.container" -}}
{{- $ := .root -}}
{{- $secret := include "mlflow-setup.tracking.secretName" $ -}}
- name: {{ .step.name }}
  image: {{ .step.image | default (include "mlflow-setup.tracking.image" $) | quote }}
  imagePullPolicy: {{ $.Values.tracking.image.pullPolicy }}
  command:
    {{- toYaml .step.command | nindent 4 }}
  env:
    - name: MLFLOW_BACKEND_STORE_URI
      valueFrom:
        secretKeyRef:
          name: {{ $secret }}
          key: backend-store-uri
    - name: MLFLOW_AUTH_CONFIG_PATH
      value: /etc/mlflow/auth/basic_auth.ini
    {{- if eq $.Values.tracking.auth.mode "oidc" }}
    # The sign-in plugin's user store: backed up and restored with the other two databases.
    - name: OIDC_USERS_DB_URI
      valueFrom:
        secretKeyRef:
          name: {{ $secret }}
          key: oidc-users-db-uri
    {{- end }}
    {{- with .task.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- include "mlflow-setup.telemetryEnv" $ | nindent 4 }}
    - name: HOME
      value: /tmp
  resources:
    {{- include "mlflow-setup.resourcesWithScratch" (dict "root" $ "resources" .task.resources "scratch" .task.scratch) | nindent 4 }}
  securityContext:
    {{- include "mlflow-setup.containerSecurityContext" $.Values.tracking.runAsUser | nindent 4 }}
  volumeMounts:
    - name: auth-config
      mountPath: /etc/mlflow/auth
      readOnly: true
    - name: tmp
      mountPath: /tmp
    {{- range .task.volumes }}
    - name: {{ .name }}
      mountPath: {{ .mountPath }}
    {{- end }}
{{- end }}

{{/* MySQL's own image (the subchart's, by digest): its mysqlbinlog and mysql read and replay its logs. */}}
{{- define "mlflow-setup.mysql.image" -}}
{{- $image := .Values.mysql.image -}}
{{- printf "%s/%s@%s" $image.registry $image.repository (required "mysql.image.digest is required" $image.digest) -}}
{{- end }}

{{/* The pre-migration Job of this release revision (each revision has its own: a Job cannot change). */}}
{{- define "mlflow-setup.preMigration.jobName" -}}
{{ include "mlflow-setup.fullname" . }}-pre-migration-r{{ .Release.Revision }}
{{- end }}
