{{/*
The pod of every maintenance Job (the backup and gc CronJobs, the pre-migration Job, the rollback
guard): the tracking server's image and database settings, each with only the Azure access its
ServiceAccount's workload identity has. Called with a dict: `root` (the chart's context), `component`,
`serviceAccount`, `command`, `env` (more EnvVars), `resources`.
*/}}
{{- define "mlflow-setup.maintenance.podTemplate" -}}
{{- $ := .root -}}
{{- $secret := include "mlflow-setup.tracking.secretName" $ -}}
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
  containers:
    - name: {{ .component }}
      image: {{ include "mlflow-setup.tracking.image" $ | quote }}
      imagePullPolicy: {{ $.Values.tracking.image.pullPolicy }}
      command:
        {{- toYaml .command | nindent 8 }}
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
        {{- with .env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        - name: HOME
          value: /tmp
      resources:
        {{- toYaml .resources | nindent 8 }}
      securityContext:
        {{- include "mlflow-setup.containerSecurityContext" $.Values.tracking.runAsUser | nindent 8 }}
      volumeMounts:
        - name: auth-config
          mountPath: /etc/mlflow/auth
          readOnly: true
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: auth-config
      secret:
        secretName: {{ $secret }}
        defaultMode: 0440
        items:
          - key: basic_auth.ini
            path: basic_auth.ini
    # Python's temporary files; a backup streams, it never stages the dump here (a restore downloads the
    # backup here before it checks it).
    - name: tmp
      emptyDir:
        sizeLimit: 1Gi
{{- end }}

{{/* The pre-migration Job of this release revision (each revision has its own: a Job cannot change). */}}
{{- define "mlflow-setup.preMigration.jobName" -}}
{{ include "mlflow-setup.fullname" . }}-pre-migration-r{{ .Release.Revision }}
{{- end }}
