{{/*
How many connections MySQL must accept, from the values that size the tracking servers' pools, so that a
rolling update at full load never meets "Too many connections".

Worst case: every pod of a rollout at once - `replicaCount` + the Deployment's `maxSurge` running, and up
to `replicaCount` old pods still draining (tracking.shutdown: they finish transfers for up to their grace
period, holding their pools, and a Deployment does not count terminating pods against its surge) - each uvicorn
worker process (`tracking.workers`; null: serve.py starts one per whole CPU of the container's limit) with
its own SQLAlchemy engines - the tracking store, the model registry, the basic-auth user store, and with
`tracking.auth.mode: oidc` the sign-in plugin's user store - each holding up to `databasePool.size` +
`databasePool.maxOverflow` connections. Plus `databasePool.otherConnections` for everything else: the
migrate init containers and the maintenance Jobs (NullPool or one connection each), an operator's client.
With `jobs.enabled`, the jobs pod too (one at a time: Recreate): its runner and periodic-tasks consumer
and every job process it may run at once (3 judge kinds x `judgeWorkers`, 2 online-scoring kinds x
`onlineScoringWorkers`, MLflow's 2 prompt optimizations), each with up to 3 engines (tracking store, model
registry, job store) of `jobs.databasePool.size` + `maxOverflow` connections.
*/}}

{{/* Python processes of the jobs pod at most (see above); MLflow's fixed prompt-optimization workers. */}}
{{- define "mlflow-setup.jobs.processes" -}}
{{- $j := .Values.jobs -}}
{{- add 2 (mul 3 $j.judgeWorkers) (mul 2 $j.onlineScoringWorkers) 2 -}}
{{- end }}

{{- define "mlflow-setup.jobs.maxConnections" -}}
{{- if .Values.jobs.enabled -}}
{{- $pool := .Values.jobs.databasePool -}}
{{- mul (include "mlflow-setup.jobs.processes" . | int) 3 (add $pool.size $pool.maxOverflow) -}}
{{- else -}}
0
{{- end -}}
{{- end }}

{{/* The tracking Deployment's rollingUpdate.maxSurge (tests/test_database_limits.py reads both). */}}
{{- define "mlflow-setup.tracking.maxSurge" -}}
1
{{- end }}

{{/* uvicorn worker processes per tracking pod, as serve.py chooses them. */}}
{{- define "mlflow-setup.tracking.processes" -}}
{{- $t := .Values.tracking -}}
{{- if $t.workers -}}
{{- $t.workers -}}
{{- else -}}
{{- $cpu := toString (dig "limits" "cpu" "" ($t.resources | default dict)) -}}
{{- if not $cpu -}}
{{- fail "tracking.workers is null and tracking.resources.limits.cpu is unset: serve.py would start one worker per CPU of the node, which bounds no database connection count; set one of them" -}}
{{- end -}}
{{- $cores := 0 -}}
{{- if hasSuffix "m" $cpu -}}
{{- $cores = div (trimSuffix "m" $cpu | atoi) 1000 -}}
{{- else -}}
{{- $cores = $cpu | float64 | floor | int -}}
{{- end -}}
{{- max 1 $cores -}}
{{- end -}}
{{- end }}

{{/* SQLAlchemy engines per server process (see above). */}}
{{- define "mlflow-setup.tracking.databaseEngines" -}}
{{- ternary 4 3 (eq .Values.tracking.auth.mode "oidc") -}}
{{- end }}

{{- define "mlflow-setup.database.maxConnections" -}}
{{- $pool := .Values.tracking.databasePool -}}
{{- $pods := add (mul 2 .Values.tracking.replicaCount) (include "mlflow-setup.tracking.maxSurge" . | int) -}}
{{- $processes := include "mlflow-setup.tracking.processes" . | int -}}
{{- $engines := include "mlflow-setup.tracking.databaseEngines" . | int -}}
{{- $total := add (mul $pods $processes $engines (add $pool.size $pool.maxOverflow)) $pool.otherConnections (include "mlflow-setup.jobs.maxConnections" . | int) -}}
{{- if gt $total 100000 -}}
{{- fail (printf "the tracking servers could open %d database connections, more than MySQL's most (100000): lower tracking.workers, replicaCount or databasePool" $total) -}}
{{- end -}}
{{- $total -}}
{{- end }}
