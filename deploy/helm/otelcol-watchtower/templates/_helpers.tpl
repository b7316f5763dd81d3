{{/* Names, labels and the pieces the three tiers share. */}}

{{- define "owt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "owt.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* owt.component: "<fullname>-<component>", within 63 characters. Call with (list $ "gateway"). */}}
{{- define "owt.component" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "owt.fullname" $root | trunc 54 | trimSuffix "-") (index . 1) -}}
{{- end -}}

{{- define "owt.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "owt.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* owt.labels: every object's labels. Call with (list $ "gateway"). */}}
{{- define "owt.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "owt.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: gowatchtower
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "owt.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The agent forwards to this. */}}
{{- define "owt.gatewayEndpoint" -}}
{{- default (printf "%s.%s.svc:4317" (include "owt.component" (list . "gateway")) .Release.Namespace) .Values.agent.gatewayEndpoint -}}
{{- end -}}

{{/*
owt.validate: the rules values.schema.json cannot express, each failing with the values it names.
*/}}
{{- define "owt.validate" -}}
{{- $v := .Values -}}
{{- if and (not $v.sampler.enabled) (or (gt (int $v.gateway.replicas) 1) $v.gateway.autoscaling.enabled) -}}
{{- fail "gateway.replicas > 1 and gateway.autoscaling.enabled need sampler.enabled=true: tail sampling needs every span of a trace in one process, and only the Kafka-sharded sampler tier gives that to more than one collector (docs/deploy.md)" -}}
{{- end -}}
{{- if eq $v.gateway.persistentQueue.volume "persistentVolumeClaim" -}}
{{- if or (gt (int $v.gateway.replicas) 1) $v.gateway.autoscaling.enabled -}}
{{- fail "gateway.persistentQueue.volume=persistentVolumeClaim is one ReadWriteOnce claim: it needs gateway.replicas=1 and gateway.autoscaling.enabled=false" -}}
{{- end -}}
{{- end -}}
{{- if and $v.kafka.tls.enabled (not $v.kafka.tls.secretName) -}}
{{- fail "kafka.tls.enabled=true needs kafka.tls.secretName: the Secret holding the CA bundle (and the client certificate)" -}}
{{- end -}}
{{- if ne (empty $v.kafka.tls.certKey) (empty $v.kafka.tls.keyKey) -}}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey go together: set both for mutual TLS, or neither" -}}
{{- end -}}
{{- if and $v.otlp.tls.enabled (not $v.otlp.tls.secretName) -}}
{{- fail "otlp.tls.enabled=true needs otlp.tls.secretName: the Secret holding the gateway's certificate and key (e.g. a cert-manager Certificate's)" -}}
{{- end -}}
{{- if and $v.otlp.tls.enabled $v.otlp.tls.clientCAKey $v.agent.enabled (not $v.otlp.tls.agentSecretName) -}}
{{- fail "otlp.tls.clientCAKey (mutual TLS) with agent.enabled=true needs otlp.tls.agentSecretName: the Secret with the agents' client certificate and key" -}}
{{- end -}}
{{- if and $v.otlp.bearerToken.enabled (not $v.otlp.tls.enabled) -}}
{{- fail "otlp.bearerToken.enabled=true needs otlp.tls.enabled=true: the token must not cross the network in clear" -}}
{{- end -}}
{{- if and $v.otlp.bearerToken.enabled (not $v.otlp.bearerToken.secretName) -}}
{{- fail "otlp.bearerToken.enabled=true needs otlp.bearerToken.secretName: the Secret holding the token" -}}
{{- end -}}
{{- if and $v.kafka.sasl.enabled (not $v.kafka.sasl.secretName) -}}
{{- fail "kafka.sasl.enabled=true needs kafka.sasl.secretName: the Secret holding the username and password" -}}
{{- end -}}
{{- range $tier := list "gateway" "sampler" "agent" -}}
{{- $ml := (index $v $tier).memoryLimiter -}}
{{- if ge (int $ml.spikeLimitMiB) (int $ml.limitMiB) -}}
{{- fail (printf "%s.memoryLimiter.spikeLimitMiB (%v) must be below %s.memoryLimiter.limitMiB (%v)" $tier $ml.spikeLimitMiB $tier $ml.limitMiB) -}}
{{- end -}}
{{- end -}}
{{- range $tier := list "gateway" "sampler" -}}
{{- $as := (index $v $tier).autoscaling -}}
{{- if and $as.enabled (gt (int $as.minReplicas) (int $as.maxReplicas)) -}}
{{- fail (printf "%s.autoscaling.minReplicas (%v) is above %s.autoscaling.maxReplicas (%v)" $tier $as.minReplicas $tier $as.maxReplicas) -}}
{{- end -}}
{{- if and $as.enabled (not $as.targetCPUUtilizationPercentage) (not $as.targetMemoryUtilizationPercentage) -}}
{{- fail (printf "%s.autoscaling.enabled needs %s.autoscaling.targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" $tier $tier) -}}
{{- end -}}
{{- $pdb := (index $v $tier).podDisruptionBudget -}}
{{- if and $pdb.enabled (eq (kindIs "invalid" $pdb.minAvailable) (kindIs "invalid" $pdb.maxUnavailable)) -}}
{{- fail (printf "%s.podDisruptionBudget: set exactly one of minAvailable and maxUnavailable (the other null)" $tier) -}}
{{- end -}}
{{- end -}}
{{- $partitions := int $v.kafka.spansTopicPartitions -}}
{{- if and $v.sampler.enabled (gt $partitions 0) -}}
{{- $most := ternary $v.sampler.autoscaling.maxReplicas $v.sampler.replicas $v.sampler.autoscaling.enabled -}}
{{- if gt (int $most) $partitions -}}
{{- fail (printf "the sampler tier may run %v replicas but kafka.spansTopicPartitions is %d: a consumer group gives each partition to one replica, so replicas beyond the partition count sit idle; add partitions or lower sampler.replicas / sampler.autoscaling.maxReplicas" $most $partitions) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The container security context every tier uses. */}}
{{- define "owt.securityContext" -}}
{{- toYaml .Values.securityContext -}}
{{- end -}}

{{/* Environment every tier shares: log level and memory limits. Call with (list $ "gateway"). */}}
{{- define "owt.commonEnv" -}}
{{- $root := index . 0 -}}
{{- $tier := index $root.Values (index . 1) -}}
- name: WATCHTOWER_LOG_LEVEL
  value: {{ $root.Values.logLevel | quote }}
- name: WATCHTOWER_MEMORY_LIMIT_MIB
  value: {{ $tier.memoryLimiter.limitMiB | quote }}
- name: WATCHTOWER_MEMORY_SPIKE_LIMIT_MIB
  value: {{ $tier.memoryLimiter.spikeLimitMiB | quote }}
- name: GOMEMLIMIT
  value: {{ printf "%vMiB" $tier.memoryLimiter.limitMiB | quote }}
{{- end -}}

{{/* Kafka connection environment of the gateway and the sampler tier. Call with (list $ "gateway"). */}}
{{- define "owt.kafkaEnv" -}}
{{- $root := index . 0 -}}
{{- $k := $root.Values.kafka -}}
- name: WATCHTOWER_KAFKA_BROKERS
  value: {{ join "," $k.brokers | quote }}
- name: WATCHTOWER_KAFKA_SPANS_TOPIC
  value: {{ $k.spansTopic | quote }}
- name: WATCHTOWER_KAFKA_CLIENT_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- if $k.tls.enabled }}
{{- with $k.tls.caKey }}
- name: WATCHTOWER_KAFKA_TLS_CA_FILE
  value: {{ printf "/etc/otelcol-watchtower/kafka-tls/%s" . | quote }}
{{- end }}
{{- if $k.tls.certKey }}
- name: WATCHTOWER_KAFKA_TLS_CERT_FILE
  value: {{ printf "/etc/otelcol-watchtower/kafka-tls/%s" $k.tls.certKey | quote }}
- name: WATCHTOWER_KAFKA_TLS_KEY_FILE
  value: {{ printf "/etc/otelcol-watchtower/kafka-tls/%s" $k.tls.keyKey | quote }}
{{- end }}
{{- with $k.tls.serverName }}
- name: WATCHTOWER_KAFKA_TLS_SERVER_NAME
  value: {{ . | quote }}
{{- end }}
- name: WATCHTOWER_KAFKA_TLS_INSECURE_SKIP_VERIFY
  value: {{ $k.tls.insecureSkipVerify | quote }}
{{- end }}
{{- if $k.sasl.enabled }}
- name: WATCHTOWER_KAFKA_SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
- name: WATCHTOWER_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.secretName }}
      key: {{ $k.sasl.usernameKey }}
- name: WATCHTOWER_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.secretName }}
      key: {{ $k.sasl.passwordKey }}
{{- end }}
{{- end -}}

{{/* Tail sampling environment of whichever tier samples. */}}
{{- define "owt.samplingEnv" -}}
{{- $s := .Values.sampling -}}
- name: WATCHTOWER_TRACES_ENDPOINT
  value: {{ .Values.tracesBackend.endpoint | quote }}
- name: WATCHTOWER_TRACES_INSECURE
  value: {{ .Values.tracesBackend.insecure | quote }}
- name: WATCHTOWER_SLOW_THRESHOLD_MS
  value: {{ $s.slowThresholdMs | quote }}
- name: WATCHTOWER_SAMPLING_BASELINE_PERCENT
  value: {{ $s.baselinePercent | quote }}
- name: WATCHTOWER_SAMPLING_DECISION_WAIT
  value: {{ $s.decisionWait | quote }}
- name: WATCHTOWER_SAMPLING_NUM_TRACES
  value: {{ $s.numTraces | quote }}
{{- end -}}

{{/* owt.configArgs: the --config flags of a tier. Call with (list $ "gateway"). */}}
{{- define "owt.configArgs" -}}
{{- $root := index . 0 -}}
{{- $tier := index . 1 -}}
- --config=/etc/otelcol-watchtower/config/{{ $tier }}.yaml
{{- range $f := include "owt.overlays" . | fromYamlArray }}
- --config=/etc/otelcol-watchtower/config/{{ $f }}
{{- end }}
{{- end -}}

{{/* owt.overlays: the overlay files merged over a tier's config, as a YAML list. */}}
{{- define "owt.overlays" -}}
{{- $root := index . 0 -}}
{{- $tier := index . 1 -}}
{{- $out := list -}}
{{- if and (eq $tier "gateway") $root.Values.sampler.enabled -}}
{{- $out = append $out "gateway-sampler-tier.yaml" -}}
{{- end -}}
{{- if and (eq $tier "gateway") (eq $root.Values.gateway.persistentQueue.volume "memory") -}}
{{- $out = append $out "gateway-memory-queue.yaml" -}}
{{- end -}}
{{- if and (has $tier (list "gateway" "sampler")) $root.Values.kafka.tls.enabled -}}
{{- $out = append $out "kafka-tls.yaml" -}}
{{- end -}}
{{- if and (has $tier (list "gateway" "sampler")) $root.Values.kafka.sasl.enabled -}}
{{- $out = append $out "kafka-sasl.yaml" -}}
{{- end -}}
{{- $otlp := $root.Values.otlp -}}
{{- if and (eq $tier "gateway") $otlp.tls.enabled -}}
{{- $out = append $out "otlp-tls.yaml" -}}
{{- end -}}
{{- if and (eq $tier "gateway") $otlp.bearerToken.enabled -}}
{{- $out = append $out "gateway-otlp-bearer.yaml" -}}
{{- end -}}
{{- if and (eq $tier "agent") $otlp.tls.enabled -}}
{{- $out = append $out "agent-gateway-tls.yaml" -}}
{{- end -}}
{{- if and (eq $tier "agent") $otlp.bearerToken.enabled -}}
{{- $out = append $out "agent-gateway-bearer.yaml" -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* Volumes and mounts of the Kafka TLS Secret. */}}
{{- define "owt.kafkaTLSVolume" -}}
{{- if .Values.kafka.tls.enabled -}}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}
{{- define "owt.kafkaTLSMount" -}}
{{- if .Values.kafka.tls.enabled -}}
- name: kafka-tls
  mountPath: /etc/otelcol-watchtower/kafka-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* The OTLP security of a tier (otlp.*): its environment, volumes and mounts. Call with
(list $ "gateway") or (list $ "agent"). The files are under /etc/otelcol-watchtower/otlp-*. */}}
{{- define "owt.otlpSecurityEnv" -}}
{{- $root := index . 0 -}}
{{- $tier := index . 1 -}}
{{- $o := $root.Values.otlp -}}
{{- if and $o.tls.enabled (eq $tier "gateway") }}
- name: WATCHTOWER_OTLP_TLS_CERT_FILE
  value: /etc/otelcol-watchtower/otlp-tls/{{ $o.tls.certKey }}
- name: WATCHTOWER_OTLP_TLS_KEY_FILE
  value: /etc/otelcol-watchtower/otlp-tls/{{ $o.tls.keyKey }}
{{- with $o.tls.clientCAKey }}
- name: WATCHTOWER_OTLP_TLS_CLIENT_CA_FILE
  value: /etc/otelcol-watchtower/otlp-tls/{{ . }}
{{- end }}
{{- end }}
{{- if and $o.tls.enabled (eq $tier "agent") }}
- name: WATCHTOWER_GATEWAY_TLS_CA_FILE
  value: /etc/otelcol-watchtower/otlp-tls/{{ $o.tls.caKey }}
{{- if $o.tls.clientCAKey }}
- name: WATCHTOWER_GATEWAY_TLS_CERT_FILE
  value: /etc/otelcol-watchtower/otlp-client/tls.crt
- name: WATCHTOWER_GATEWAY_TLS_KEY_FILE
  value: /etc/otelcol-watchtower/otlp-client/tls.key
{{- end }}
{{- end }}
{{- if $o.bearerToken.enabled }}
- name: {{ ternary "WATCHTOWER_OTLP_BEARER_TOKEN_FILE" "WATCHTOWER_GATEWAY_BEARER_TOKEN_FILE" (eq $tier "gateway") }}
  value: /etc/otelcol-watchtower/otlp-token/{{ $o.bearerToken.key }}
{{- end }}
{{- end -}}
{{- define "owt.otlpSecurityVolumes" -}}
{{- $root := index . 0 -}}
{{- $tier := index . 1 -}}
{{- $o := $root.Values.otlp -}}
{{- if $o.tls.enabled }}
- name: otlp-tls
  secret:
    secretName: {{ $o.tls.secretName }}
    defaultMode: 0440
    {{- if eq $tier "agent" }}
    # The agents need the CA only, not the gateway's key.
    items:
      - key: {{ $o.tls.caKey }}
        path: {{ $o.tls.caKey }}
    {{- end }}
{{- if and (eq $tier "agent") $o.tls.clientCAKey }}
- name: otlp-client
  secret:
    secretName: {{ $o.tls.agentSecretName }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- if $o.bearerToken.enabled }}
- name: otlp-token
  secret:
    secretName: {{ $o.bearerToken.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}
{{- define "owt.otlpSecurityMounts" -}}
{{- $root := index . 0 -}}
{{- $tier := index . 1 -}}
{{- $o := $root.Values.otlp -}}
{{- if $o.tls.enabled }}
- name: otlp-tls
  mountPath: /etc/otelcol-watchtower/otlp-tls
  readOnly: true
{{- if and (eq $tier "agent") $o.tls.clientCAKey }}
- name: otlp-client
  mountPath: /etc/otelcol-watchtower/otlp-client
  readOnly: true
{{- end }}
{{- end }}
{{- if $o.bearerToken.enabled }}
- name: otlp-token
  mountPath: /etc/otelcol-watchtower/otlp-token
  readOnly: true
{{- end }}
{{- end -}}

{{/* Probes on the health_check extension (deploy/collector/*.yaml: 0.0.0.0:13133). */}}
{{- define "owt.probes" -}}
livenessProbe:
  httpGet:
    path: /
    port: health
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /
    port: health
  periodSeconds: 5
  failureThreshold: 2
{{- end -}}

{{/* Scheduling fields of a tier's pod spec. Call with the tier's values. */}}
{{- define "owt.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* The metrics ports every tier exposes: the collector's own telemetry. */}}
{{- define "owt.commonPorts" -}}
- name: telemetry
  containerPort: 8888
  protocol: TCP
- name: health
  containerPort: 13133
  protocol: TCP
{{- end -}}

{{/* HPA metrics from a tier's autoscaling values. */}}
{{- define "owt.hpaMetrics" -}}
{{- with .targetCPUUtilizationPercentage }}
- type: Resource
  resource:
    name: cpu
    target:
      type: Utilization
      averageUtilization: {{ . }}
{{- end }}
{{- with .targetMemoryUtilizationPercentage }}
- type: Resource
  resource:
    name: memory
    target:
      type: Utilization
      averageUtilization: {{ . }}
{{- end }}
{{- end -}}

{{/* PDB minAvailable or maxUnavailable from a tier's podDisruptionBudget values. */}}
{{- define "owt.pdbSpec" -}}
{{- if not (kindIs "invalid" .minAvailable) -}}
minAvailable: {{ .minAvailable }}
{{- else -}}
maxUnavailable: {{ .maxUnavailable }}
{{- end -}}
{{- end -}}

{{/*
owt.quantityBytes: a Kubernetes quantity with a binary suffix (Ki, Mi, Gi, Ti) or none, in
bytes. (list <what> <quantity>): what names the value in the error for anything else.
*/}}
{{- define "owt.quantityBytes" -}}
{{- $what := index . 0 -}}
{{- $q := toString (index . 1) -}}
{{- $units := dict "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- $n := 0 -}}
{{- range $suffix, $mul := $units -}}
{{- if and (hasSuffix $suffix $q) (regexMatch "^[0-9]+$" (trimSuffix $suffix $q)) -}}
{{- $n = mul (trimSuffix $suffix $q | int64) $mul -}}
{{- end -}}
{{- end -}}
{{- if and (eq (int64 $n) 0) (regexMatch "^[0-9]+$" $q) -}}
{{- $n = $q | int64 -}}
{{- end -}}
{{- if le (int64 $n) 0 -}}
{{- fail (printf "%s: %q is not a size this chart understands: use a whole number with Ki, Mi, Gi or Ti (e.g. 2Gi)" $what $q) -}}
{{- end -}}
{{- $n -}}
{{- end -}}

{{/*
owt.kafkaQueueBytes: the byte capacity of each of the gateway's two Kafka sending queues (one
per signal): a quarter of the queue volume, so that both full queues, with the queue files'
overhead (docs/reliability.md: 1.1× the bytes held, measured), stay within half of it; in
memory (persistentQueue.volume=memory), an eighth of the memory limiter's budget.
*/}}
{{- define "owt.kafkaQueueBytes" -}}
{{- $pq := .Values.gateway.persistentQueue -}}
{{- if eq $pq.volume "memory" -}}
{{- div (mul (.Values.gateway.memoryLimiter.limitMiB | int64) 1048576) 8 -}}
{{- else -}}
{{- $size := $pq.sizeLimit -}}
{{- $what := "gateway.persistentQueue.sizeLimit" -}}
{{- if has $pq.volume (list "persistentVolumeClaim" "volumeClaimTemplate") -}}
{{- $size = $pq.size -}}
{{- $what = "gateway.persistentQueue.size" -}}
{{- end -}}
{{- div (include "owt.quantityBytes" (list $what $size) | int64) 4 -}}
{{- end -}}
{{- end -}}
