{{/*
Names, labels, the sluice.toml renderer and the values derived from the config (ports,
shutdown timings). Every check that refuses a release lives here, in `sluice.runtime`, so that
each template sees the same numbers.
*/}}

{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name. Capped at 52 characters: StatefulSet pods add "-<ordinal>" and a
controller-revision-hash label adds 11 more, and suffixed names ("-headless") must stay
DNS labels (63). */}}
{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the pods; never change them on upgrade (selectors are immutable). */}}
{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sluice.labels" -}}
helm.sh/chart: {{ include "sluice.chart" . }}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: sluice
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sluice.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Where the chart mounts things in the container. The image keeps its state under
/var/lib/sluice (its WORKDIR) and its schemas in /etc/sluice/schemas. */}}
{{- define "sluice.stateDir" -}}/var/lib/sluice{{- end -}}
{{- define "sluice.configDir" -}}/etc/sluice/config{{- end -}}
{{- define "sluice.secretsDir" -}}/etc/sluice/secrets{{- end -}}

{{/* The path of JWT key number .index inside the container. */}}
{{- define "sluice.jwtKeyPath" -}}
{{- printf "%s/jwt-%d/%s" (include "sluice.secretsDir" .root) (int .index) .key.key -}}
{{- end -}}

{{/* Kafka's secret files: (values key, config.kafka field) pairs. */}}
{{- define "sluice.kafkaSecretFields" -}}
{{- toJson (list (list "saslPasswordKey" "sasl_password_file") (list "caKey" "ssl_ca_file") (list "certKey" "ssl_cert_file") (list "keyKey" "ssl_key_file") (list "oauthClientSecretKey" "oauth_client_secret_file")) -}}
{{- end -}}

{{- define "sluice.apiKeysPath" -}}
{{- printf "%s/api-keys/%s" (include "sluice.secretsDir" .) .Values.secrets.apiKeys.key -}}
{{- end -}}

{{/*
The configuration Sluice reads, as JSON: `config` from the values, plus what the chart wires
in itself (an [[auth.keys]] entry per mounted JWT key, auth.api_keys_file for the mounted
API-key file). Consumers: `include "sluice.config" . | fromJson`.
*/}}
{{- define "sluice.config" -}}
{{- $c := deepCopy (.Values.config | default dict) -}}
{{- $auth := deepCopy ($c.auth | default dict) -}}
{{- $keys := $auth.keys | default list -}}
{{- range $i, $k := .Values.secrets.jwtKeys -}}
{{- $entry := dict "algorithm" $k.algorithm -}}
{{- with $k.kid -}}{{- $_ := set $entry "kid" . -}}{{- end -}}
{{- $path := include "sluice.jwtKeyPath" (dict "root" $ "index" $i "key" $k) -}}
{{- if hasPrefix "HS" $k.algorithm -}}
{{- $_ := set $entry "secret_file" $path -}}
{{- else -}}
{{- $_ := set $entry "pem_file" $path -}}
{{- end -}}
{{- $keys = append $keys $entry -}}
{{- end -}}
{{- if $keys -}}{{- $_ := set $auth "keys" $keys -}}{{- end -}}
{{- if .Values.secrets.apiKeys.secretName -}}
{{- if $auth.api_keys_file -}}
{{- fail "config.auth.api_keys_file and secrets.apiKeys are both set: the chart sets auth.api_keys_file to the file it mounts from secrets.apiKeys; keep one" -}}
{{- end -}}
{{- $_ := set $auth "api_keys_file" (include "sluice.apiKeysPath" .) -}}
{{- end -}}
{{- if $auth -}}{{- $_ := set $c "auth" $auth -}}{{- end -}}
{{- with .Values.secrets.kafka -}}
{{- if .secretName -}}
{{- $kafka := deepCopy ($c.kafka | default dict) -}}
{{- $secret := . -}}
{{- if not (or .saslPasswordKey .caKey .certKey .keyKey .oauthClientSecretKey) -}}
{{- fail "secrets.kafka.secretName is set but names no key: set saslPasswordKey, caKey, certKey, keyKey or oauthClientSecretKey" -}}
{{- end -}}
{{- range $pair := include "sluice.kafkaSecretFields" $ | fromJsonArray -}}
{{- $key := index $secret (index $pair 0) -}}
{{- $field := index $pair 1 -}}
{{- if $key -}}
{{- if hasKey $kafka $field -}}
{{- fail (printf "config.kafka.%s and secrets.kafka.%s are both set: the chart sets the first to the file it mounts for the second; keep one" $field (index $pair 0)) -}}
{{- end -}}
{{- $_ := set $kafka $field (printf "%s/kafka/%s" (include "sluice.secretsDir" $) $key) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $c "kafka" $kafka -}}
{{- end -}}
{{- end -}}
{{- toJson $c -}}
{{- end -}}

{{/*
TOML renderer for the config map. Helm's toToml writes every number from values as a float
(1000 -> 1000.0, 20000000 -> 2e+07), which Sluice's integer fields refuse, so this one writes
whole numbers as integers. Sluice has no float fields. Tables are written in key order: plain
keys first, then sub-tables ([a.b]), then arrays of tables ([[a.c]]). Nulls are left out (TOML
has none), which lets `--set config.x.y=null` remove a default.
*/}}
{{- define "sluice.toml" -}}
{{- include "sluice.toml.table" (dict "path" list "table" .) -}}
{{- end -}}

{{- define "sluice.toml.table" -}}
{{- $path := .path -}}
{{- $t := .table -}}
{{- range $k := keys $t | sortAlpha -}}
{{- $v := index $t $k -}}
{{- if not (or (kindIs "invalid" $v) (kindIs "map" $v) (include "sluice.toml.isTableArray" $v)) }}
{{ include "sluice.toml.key" $k }} = {{ include "sluice.toml.value" (dict "v" $v "path" (append $path $k)) }}
{{- end -}}
{{- end -}}
{{- range $k := keys $t | sortAlpha -}}
{{- $v := index $t $k -}}
{{- $p := append $path $k -}}
{{- if kindIs "map" $v }}

[{{ include "sluice.toml.path" $p }}]
{{- include "sluice.toml.table" (dict "path" $p "table" $v) -}}
{{- else if include "sluice.toml.isTableArray" $v -}}
{{- range $item := $v }}

[[{{ include "sluice.toml.path" $p }}]]
{{- include "sluice.toml.table" (dict "path" $p "table" $item) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "true" when the value is a non-empty list of maps (TOML arrays of tables). A list that
mixes maps and other values has no TOML form. */}}
{{- define "sluice.toml.isTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) -}}
{{- $maps := 0 -}}
{{- range . -}}{{- if kindIs "map" . -}}{{- $maps = add1 $maps -}}{{- end -}}{{- end -}}
{{- if eq (int $maps) (len .) -}}true
{{- else if gt (int $maps) 0 -}}{{- fail "config: a list mixes tables and plain values, which TOML cannot write" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sluice.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{- . -}}{{- else -}}{{- toJson . -}}{{- end -}}
{{- end -}}

{{- define "sluice.toml.path" -}}
{{- $parts := list -}}
{{- range . -}}{{- $parts = append $parts (include "sluice.toml.key" .) -}}{{- end -}}
{{- join "." $parts -}}
{{- end -}}

{{/* A JSON string is a valid TOML basic string (TOML accepts JSON's escapes, \uXXXX
included). */}}
{{- define "sluice.toml.value" -}}
{{- $v := .v -}}
{{- if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- ternary "true" "false" $v -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) -}}
{{- printf "%d" $v -}}
{{- else if kindIs "float64" $v -}}
{{- if eq $v (floor $v) -}}{{- printf "%d" (int64 $v) -}}{{- else -}}{{- printf "%v" $v -}}{{- end -}}
{{- else if kindIs "slice" $v -}}
{{- $items := list -}}
{{- range $v -}}
{{- if kindIs "map" . -}}{{- fail (printf "config.%s: a table inside a list of plain values has no TOML form" (join "." $.path)) -}}{{- end -}}
{{- $items = append $items (include "sluice.toml.value" (dict "v" . "path" $.path)) -}}
{{- end -}}
[{{ join ", " $items }}]
{{- else -}}
{{- fail (printf "config.%s: %s values cannot be written to TOML" (join "." .path) (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{/* A Sluice duration ("30s", "500ms", "2m", "1h") in milliseconds; fails naming the field
when it is not one. Input: (dict "field" "config.x" "value" "30s"). */}}
{{- define "sluice.durationMs" -}}
{{- $s := trim (toString .value) -}}
{{- if not (regexMatch "^[0-9]+(ms|s|m|h)$" $s) -}}
{{- fail (printf "%s: %q is not a duration (write 30s, 500ms, 2m or 1h)" .field $s) -}}
{{- end -}}
{{- $n := regexFind "^[0-9]+" $s | int64 -}}
{{- $unit := regexFind "(ms|s|m|h)$" $s -}}
{{- if eq $unit "ms" -}}{{- $n -}}
{{- else if eq $unit "s" -}}{{- mul $n 1000 -}}
{{- else if eq $unit "m" -}}{{- mul $n 60000 -}}
{{- else -}}{{- mul $n 3600000 -}}
{{- end -}}
{{- end -}}

{{/* The port of a listen address, which must be on every interface so that the kubelet's
probes and the Service reach it. Input: (dict "field" "config.server.listen" "value" "0.0.0.0:8080"). */}}
{{- define "sluice.listenPort" -}}
{{- $s := toString .value -}}
{{- if not (regexMatch "^(0\\.0\\.0\\.0|\\[::\\]):[0-9]+$" $s) -}}
{{- fail (printf "%s: %q must listen on every interface (0.0.0.0:PORT or [::]:PORT), or the kubelet's probes and the Service cannot reach it" .field $s) -}}
{{- end -}}
{{- $port := regexFind "[0-9]+$" $s | int -}}
{{- if or (lt $port 1) (gt $port 65535) -}}
{{- fail (printf "%s: port %d is not between 1 and 65535" .field $port) -}}
{{- end -}}
{{- $port -}}
{{- end -}}

{{/* Environment variables the chart derives from the config; set in extraEnv they would
override the file and silently break the ports, probes or timings derived from it. */}}
{{- define "sluice.ownedEnv" -}}
{{- list "SLUICE_CONFIG" "SLUICE_SERVER__LISTEN" "SLUICE_SERVER__ADMIN_LISTEN" "SLUICE_SERVER__DRAIN_DELAY" "SLUICE_SERVER__SHUTDOWN_GRACE" "SLUICE_SCHEMAS__DIR" "SLUICE_LOG__FORMAT" | toJson -}}
{{- end -}}

{{/*
Everything derived from the config, as JSON (consumers: `include "sluice.runtime" . | fromJson`),
and every cross-field check.

Shutdown, in order (docs/delivery.md, "Graceful drain"):
  1. The pod is marked for deletion. Kubernetes starts removing it from the Service's
     endpoints and, at the same time, runs the preStop hook: a sleep, during which Sluice
     serves as usual. kube-proxy on every node and ingress controllers apply the removal
     asynchronously; requests they still route here are answered.
  2. SIGTERM. Sluice answers /readyz with 503 and keeps serving for server.drain_delay, for
     whatever follows readiness rather than endpoints (load balancers that health-check pods).
  3. The listener closes; in-flight requests finish (each bounded by the sink's delivery
     timeout); the producer flushes; exit within server.shutdown_grace of SIGTERM.
So the replica accepts new requests for preStop + drain_delay after deletion starts, and the
chart sleeps in preStop only for the part of termination.deregistrationSeconds that
drain_delay does not already cover:
  preStop = max(0, ceil(deregistrationSeconds - drain_delay))
terminationGracePeriodSeconds counts from the start of preStop, so it must exceed
preStop + shutdown_grace, or the kubelet's SIGKILL lands before Sluice's own deadline.
*/}}
{{- define "sluice.runtime" -}}
{{- $c := include "sluice.config" . | fromJson -}}
{{- $server := $c.server | default dict -}}
{{- $listen := $server.listen | default "0.0.0.0:8080" -}}
{{- $httpPort := include "sluice.listenPort" (dict "field" "config.server.listen" "value" $listen) | int -}}
{{- $adminPort := 0 -}}
{{- with $server.admin_listen -}}
{{- $adminPort = include "sluice.listenPort" (dict "field" "config.server.admin_listen" "value" .) | int -}}
{{- if eq $adminPort $httpPort -}}
{{- fail (printf "config.server.admin_listen: port %d is also config.server.listen's" $adminPort) -}}
{{- end -}}
{{- end -}}
{{- /* TLS (config.tls): probes and the scrape speak HTTPS to a port that serves it. The
kubelet cannot present a client certificate, so that port must not require one. */ -}}
{{- $tls := $c.tls | default dict -}}
{{- $probeTls := and (not (empty $tls.cert_file)) (or (eq $adminPort 0) (eq (toString $tls.admin) "true")) -}}
{{- if and $probeTls $tls.client_ca_file (eq (toString $tls.client_auth) "required") -}}
{{- fail "config.tls.client_auth: \"required\" on the port the kubelet probes (it cannot present a client certificate); set config.server.admin_listen with config.tls.admin = false, or client_auth = \"optional\"" -}}
{{- end -}}
{{- /* Authentication: a pod with no key source would serve only itself (protected mode),
and running open must be a choice, not a default. */ -}}
{{- $auth := $c.auth | default dict -}}
{{- if not (or $auth.keys $auth.jwks_urls $auth.api_keys $auth.api_keys_file $auth.client_certs $auth.mode) -}}
{{- fail "no key source for authentication: set secrets.jwtKeys, secrets.apiKeys or config.auth.jwks_urls (or config.auth.keys, api_keys, client_certs); or set config.auth.mode = \"disabled\" to let anyone who reaches the Service write events and change the schema registry. Without either, Sluice would serve only clients inside its own pod (protected mode)" -}}
{{- end -}}
{{- $drainMs := include "sluice.durationMs" (dict "field" "config.server.drain_delay" "value" ($server.drain_delay | default "5s")) | int64 -}}
{{- $graceMs := include "sluice.durationMs" (dict "field" "config.server.shutdown_grace" "value" ($server.shutdown_grace | default "30s")) | int64 -}}
{{- /* The sink's delivery timeout bounds how long an in-flight request can wait. */ -}}
{{- $sinkKind := (($c.sink | default dict).kind | default "file") -}}
{{- $deliveryMs := 0 -}}
{{- $deliveryField := "" -}}
{{- if eq $sinkKind "kafka" -}}
{{- $deliveryMs = (($c.kafka | default dict).delivery_timeout_ms | default 10000) | int64 -}}
{{- $deliveryField = "config.kafka.delivery_timeout_ms" -}}
{{- else if eq $sinkKind "kinesis" -}}
{{- $deliveryMs = include "sluice.durationMs" (dict "field" "config.kinesis.delivery_timeout" "value" (($c.kinesis | default dict).delivery_timeout | default "10s")) | int64 -}}
{{- $deliveryField = "config.kinesis.delivery_timeout" -}}
{{- end -}}
{{- /* Sluice keeps the last tenth of the grace (at most 1 s) for flushing and exiting. */ -}}
{{- $reserveMs := min (div $graceMs 10) 1000 -}}
{{- if lt (sub $graceMs $reserveMs) (add $drainMs $deliveryMs) -}}
{{- fail (printf "config.server.shutdown_grace (%dms) must cover config.server.drain_delay (%dms)%s plus Sluice's exit reserve (%dms), or every rollout cuts requests still waiting for the sink (docs/delivery.md)" $graceMs $drainMs (ternary (printf " plus %s (%dms)" $deliveryField $deliveryMs) "" (gt $deliveryMs 0)) $reserveMs) -}}
{{- end -}}
{{- $t := .Values.termination -}}
{{- $uncovered := sub (mul (int64 $t.deregistrationSeconds) 1000) $drainMs -}}
{{- $preStop := 0 -}}
{{- if gt $uncovered 0 -}}{{- $preStop = div (add $uncovered 999) 1000 -}}{{- end -}}
{{- $graceSec := div (add $graceMs 999) 1000 -}}
{{- $floor := add $preStop $graceSec -}}
{{- $tgps := add $floor (int64 $t.killMarginSeconds) -}}
{{- if not (kindIs "invalid" $t.terminationGracePeriodSeconds) -}}
{{- $tgps = int64 $t.terminationGracePeriodSeconds -}}
{{- if le $tgps $floor -}}
{{- fail (printf "termination.terminationGracePeriodSeconds (%d) must exceed the preStop sleep (%ds) plus config.server.shutdown_grace (%ds), or the kubelet kills Sluice before its drain ends; leave it null to have it computed" $tgps $preStop $graceSec) -}}
{{- end -}}
{{- end -}}
{{- /* Writable paths must be on the state volume: the root file system is read-only. */ -}}
{{- $state := include "sluice.stateDir" . -}}
{{- $paths := dict -}}
{{- if eq $sinkKind "file" -}}{{- $_ := set $paths "config.file.dir" (($c.file | default dict).dir | default "data") -}}{{- end -}}
{{- $spool := $c.spool | default dict -}}
{{- if $spool.enabled -}}{{- $_ := set $paths "config.spool.dir" ($spool.dir | default "data/spool") -}}{{- end -}}
{{- $registryUrl := (($c.registry | default dict).url | default "sqlite://data/registry.db") -}}
{{- if hasPrefix "sqlite://" $registryUrl -}}{{- $_ := set $paths "config.registry.url" (trimPrefix "sqlite://" $registryUrl) -}}{{- end -}}
{{- range $field, $p := $paths -}}
{{- $p = toString $p -}}
{{- if and (hasPrefix "/" $p) (not (or (eq $p $state) (hasPrefix (printf "%s/" $state) $p))) -}}
{{- fail (printf "%s: %q is outside %s, the only writable volume (the root file system is read-only); use a path under it or a relative one" $field $p $state) -}}
{{- end -}}
{{- end -}}
{{- /* Acknowledging on the spool alone needs a spool that outlives the pod. */ -}}
{{- $routes := $c.routes | default dict -}}
{{- $spoolAck := eq (toString $routes.ack) "spool" -}}
{{- range ($routes.rules | default list) -}}{{- if eq (toString .ack) "spool" -}}{{- $spoolAck = true -}}{{- end -}}{{- end -}}
{{- if and $spoolAck (not .Values.persistence.enabled) -}}
{{- fail "config.routes: a route acknowledges on the spool (ack = \"spool\"), but persistence.enabled is false: the spool would be an emptyDir, and events answered 200 but not yet replayed would be lost with the pod at every rollout. Enable persistence (docs/delivery.md, \"What can be lost\")" -}}
{{- end -}}
{{- $owned := include "sluice.ownedEnv" . | fromJsonArray -}}
{{- range .Values.extraEnv -}}
{{- if has .name $owned -}}
{{- fail (printf "extraEnv: %s is set by the chart from config (or is derived from it); set the field in config instead" .name) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled .Values.autoscaling.demand.enabled -}}
{{- $maxInflight := (($c.limits | default dict).max_inflight_events | default 20000) | int64 -}}
{{- if ge (int64 .Values.autoscaling.demand.targetAverageValue) $maxInflight -}}
{{- fail (printf "autoscaling.demand.targetAverageValue (%d) must be below config.limits.max_inflight_events (%d): at that bound Sluice already answers 503, so scaling would start too late" (int64 .Values.autoscaling.demand.targetAverageValue) $maxInflight) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) -}}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" -}}
{{- end -}}
{{- dict "httpPort" $httpPort "adminPort" $adminPort "probePort" (ternary "admin" "http" (gt $adminPort 0)) "probeScheme" (ternary "HTTPS" "HTTP" $probeTls) "drainMs" $drainMs "graceMs" $graceMs "preStopSeconds" $preStop "terminationGracePeriodSeconds" $tgps "schemasDir" (($c.schemas | default dict).dir | default "schemas") "logFormat" (($c.log | default dict).format | default "text") | toJson -}}
{{- end -}}

{{- define "sluice.workloadKind" -}}
{{- ternary "StatefulSet" "Deployment" .Values.persistence.enabled -}}
{{- end -}}
