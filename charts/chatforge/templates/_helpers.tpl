{{/*
Names, labels, images and the settings every pod shares. Templates call these helpers so a name or
an environment variable is written once.
*/}}

{{- define "chatforge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* release-chart, or the release name alone when it already contains the chart name. */}}
{{- define "chatforge.fullname" -}}
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

{{/*
The name of a KubeRay object (RayService, RayJob): KubeRay refuses names over 47 characters (its
RayCluster appends 6, its Services a suffix) and names that do not start with a letter (they become
Service names, DNS-1035 labels). A longer name keeps its first 38 characters and ends in 8 of its
own SHA-256, so it stays unique and the same on every render. The gateway's RayJobs keep the same
rules and their job id whole (services/gateway/gateway/jobs/kuberay.py: object_name).
*/}}
{{- define "chatforge.kuberayName" -}}
{{- $name := . }}
{{- if not (regexMatch "^[a-z]" $name) }}
{{- $name = printf "r%s" $name }}
{{- end }}
{{- if gt (len $name) 47 }}
{{- $name = printf "%s-%s" ($name | trunc 38 | trimSuffix "-") (sha256sum $name | trunc 8) }}
{{- end }}
{{- $name }}
{{- end }}

{{/* The name of one component's objects: fullname-component, at most 63 characters. */}}
{{- define "chatforge.componentName" -}}
{{- printf "%s-%s" (include "chatforge.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "chatforge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "chatforge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: chatforge
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one component: (dict "root" $ "component" "gateway"). */}}
{{- define "chatforge.componentLabels" -}}
{{ include "chatforge.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The immutable subset used in selectors: (dict "root" $ "component" "gateway"). */}}
{{- define "chatforge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chatforge.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* A chatforge image reference: (dict "root" $ "image" .Values.gateway.image). */}}
{{- define "chatforge.image" -}}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- if .root.Values.image.registry }}
{{- printf "%s/%s:%s" .root.Values.image.registry .image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{- define "chatforge.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Object names other templates refer to. */}}
{{- define "chatforge.gatewayName" -}}{{ include "chatforge.componentName" (dict "root" . "component" "gateway") }}{{- end }}
{{- define "chatforge.tokenizerName" -}}{{ include "chatforge.componentName" (dict "root" . "component" "tokenizer") }}{{- end }}
{{- define "chatforge.sandboxName" -}}{{ include "chatforge.componentName" (dict "root" . "component" "sandbox") }}{{- end }}
{{- define "chatforge.redisName" -}}{{ include "chatforge.componentName" (dict "root" . "component" "redis") }}{{- end }}
{{- define "chatforge.inferenceName" -}}{{ include "chatforge.kuberayName" (include "chatforge.componentName" (dict "root" . "component" "inference")) }}{{- end }}
{{- define "chatforge.jobClustersName" -}}{{ include "chatforge.componentName" (dict "root" . "component" "job-clusters") }}{{- end }}
{{- define "chatforge.redisSecretName" -}}
{{- .Values.redis.auth.existingSecret | default (include "chatforge.componentName" (dict "root" . "component" "redis")) }}
{{- end }}
{{- define "chatforge.settingsName" -}}{{ include "chatforge.componentName" (dict "root" . "component" "settings") }}{{- end }}
{{- define "chatforge.artifactsClaimName" -}}
{{- .Values.artifacts.persistence.existingClaim | default (include "chatforge.componentName" (dict "root" . "component" "artifacts")) }}
{{- end }}
{{- define "chatforge.keyPepperSecretName" -}}
{{- .Values.gateway.keyPepper.existingSecret | default (include "chatforge.componentName" (dict "root" . "component" "gateway-pepper")) }}
{{- end }}

{{/* Where every chatforge process finds Redis, without its password. */}}
{{- define "chatforge.redisUrl" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s:%d/0" (include "chatforge.redisName" .) (int .Values.redis.port) }}
{{- else }}
{{- .Values.redis.url }}
{{- end }}
{{- end }}

{{/*
REDIS_URL for a container, its password read from the Secret (secretKeyRef) and put into the URL by
the kubelet ($(REDIS_PASSWORD) expands variables defined before it): the password is in no
ConfigMap, no pod spec and no custom resource.
*/}}
{{- define "chatforge.redisEnv" -}}
{{- if .Values.redis.auth.enabled -}}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "chatforge.redisSecretName" . }}
      key: {{ .Values.redis.auth.passwordKey }}
- name: REDIS_URL
  value: {{ regexReplaceAll "^([a-z]+://)" (include "chatforge.redisUrl" .) "${1}:$(REDIS_PASSWORD)@" | quote }}
{{- else -}}
- name: REDIS_URL
  value: {{ include "chatforge.redisUrl" . | quote }}
{{- end }}
{{- end }}

{{/*
A generated secret value that survives upgrades: (dict "root" $ "name" <Secret> "key" <key> "length" N).
Read back with `lookup` when the cluster is reachable; a new random value only when the Secret does
not exist yet. Offline (`helm template`, GitOps renderers, --dry-run=client) `lookup` sees nothing,
and a value made there would change on every render and invalidate what depends on it, so it
returns "" and the caller renders no Secret: the pods then need one created once (see the README).
*/}}
{{- define "chatforge.persistentSecret" -}}
{{- $secrets := lookup "v1" "Secret" .root.Release.Namespace "" }}
{{- if $secrets }}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name }}
{{- if and $existing (hasKey ($existing.data | default dict) .key) }}
{{- index $existing.data .key }}
{{- else }}
{{- randAlphaNum (int .length) | b64enc }}
{{- end }}
{{- end }}
{{- end }}

{{/* KubeRay names a RayService's Serve Service <rayservice>-serve-svc. */}}
{{- define "chatforge.inferenceUrl" -}}
{{- printf "http://%s-serve-svc:%d" (include "chatforge.inferenceName" .) (int .Values.inference.servePort) }}
{{- end }}

{{- define "chatforge.tokenizerTarget" -}}
{{- printf "%s:%d" (include "chatforge.tokenizerName" .) (int .Values.tokenizer.port) }}
{{- end }}

{{/*
The sandbox's namespace: the release's, or its own (sandbox.namespace) so that the release's
namespace can enforce the restricted Pod Security Standard (the sandbox needs privileged).
*/}}
{{- define "chatforge.sandboxNamespace" -}}
{{- .Values.sandbox.namespace | default .Release.Namespace }}
{{- end }}

{{- define "chatforge.sandboxUrl" -}}
{{- if .Values.sandbox.namespace }}
{{- printf "http://%s.%s.svc:%d" (include "chatforge.sandboxName" .) .Values.sandbox.namespace (int .Values.sandbox.port) }}
{{- else }}
{{- printf "http://%s:%d" (include "chatforge.sandboxName" .) (int .Values.sandbox.port) }}
{{- end }}
{{- end }}

{{/* The artifact store volume and its mount, the same in every pod. */}}
{{- define "chatforge.artifactsVolume" -}}
- name: artifacts
{{- if .Values.artifacts.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "chatforge.artifactsClaimName" . }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end }}

{{- define "chatforge.artifactsMount" -}}
- name: artifacts
  mountPath: {{ .Values.artifacts.mountPath }}
{{- end }}

{{/* Pod labels that let NetworkPolicies and PodMonitors find the Ray pods of a release. */}}
{{- define "chatforge.rayPodLabels" -}}
{{ include "chatforge.selectorLabels" . }}
app.kubernetes.io/part-of: chatforge
{{- end }}

{{/*
The pods of training jobs: the example RayJob's and those the gateway creates, which it labels with
exactly these (the job clusters file, job-clusters.yaml), so policies and monitors select them all.
*/}}
{{- define "chatforge.trainingSelector" -}}
{{ include "chatforge.selectorLabels" (dict "root" . "component" "training") }}
{{- end }}

{{/* The submitter pod KubeRay starts for each training RayJob: the one pod besides the operator that may reach a training cluster's dashboard. */}}
{{- define "chatforge.submitterSelector" -}}
{{ include "chatforge.selectorLabels" (dict "root" . "component" "training-submitter") }}
{{- end }}

{{/* Where a training job's pod goes: (dict "root" $ "placement" <nodeSelector/tolerations/affinity>), with the priority class. */}}
{{- define "chatforge.jobPodPlacement" -}}
{{- with .placement.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .placement.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .placement.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.gateway.jobs.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* Security contexts of every Ray pod and container (restricted Pod Security Standard). */}}
{{- define "chatforge.rayPodSecurityContext" -}}
securityContext:
  {{- toYaml .Values.ray.podSecurityContext | nindent 2 }}
{{- end }}
{{- define "chatforge.rayContainerSecurityContext" -}}
securityContext:
  {{- toYaml .Values.ray.containerSecurityContext | nindent 2 }}
{{- end }}

{{/*
Combinations values.schema.json cannot express. Called from NOTES.txt and from the settings
ConfigMap, so `helm template` and `helm install` both stop with the message.
*/}}
{{- define "chatforge.validate" -}}
{{- if and (not .Values.redis.enabled) (not .Values.redis.url) }}
{{- fail "redis: set redis.enabled=true or give an external redis.url (redis://host:6379/0)" }}
{{- end }}
{{- if and (not .Values.redis.enabled) .Values.redis.auth.enabled (not .Values.redis.auth.existingSecret) }}
{{- fail "redis: an external Redis's password comes from a Secret: set redis.auth.existingSecret (and redis.auth.passwordKey), or redis.auth.enabled=false for a Redis without auth" }}
{{- end }}
{{- if and .Values.redis.enabled .Values.redis.url }}
{{- fail "redis: redis.url is only for an external Redis; unset it or set redis.enabled=false" }}
{{- end }}
{{- if and (gt (int .Values.gateway.replicaCount) 1) (not .Values.artifacts.persistence.enabled) }}
{{- fail "artifacts.persistence.enabled=false gives each pod its own emptyDir: run one gateway replica or enable persistence" }}
{{- end }}
{{- if and .Values.artifacts.persistence.enabled (not .Values.artifacts.persistence.existingClaim) (not (has "ReadWriteMany" .Values.artifacts.persistence.accessModes)) }}
{{- fail "artifacts.persistence.accessModes must include ReadWriteMany: the gateway, tokenizer and Ray pods mount the store at once" }}
{{- end }}
{{- if and (not .Values.sandbox.hostUsers) (ge (add (int .Values.sandbox.uidBase) (int .Values.sandbox.maxConcurrent)) 65536) }}
{{- fail (printf "sandbox.uidBase (%d) + sandbox.maxConcurrent must stay below 65536 when sandbox.hostUsers is false: the pod's user namespace maps only uids 0-65535" (int .Values.sandbox.uidBase)) }}
{{- end }}
{{- if and (not .Values.sandbox.hostUsers) (semverCompare "<1.33.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "sandbox.hostUsers=false needs Kubernetes >= 1.33, where pod user namespaces (hostUsers: false) and procMount: Unmasked are on by default; this is %s: upgrade, enable the UserNamespacesSupport and ProcMountType feature gates and render with --kube-version 1.33.0, or set sandbox.hostUsers=true on dedicated nodes (see the chart README)" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- if and .Values.inference.enabled (not .Values.inference.checkpoint) }}
{{- fail "inference.enabled needs inference.checkpoint (run/stage in the artifact store): train one first with POST /v1/jobs" }}
{{- end }}
{{- if and .Values.inference.enabled (gt (int .Values.inference.replicas.min) (int .Values.inference.replicas.max)) }}
{{- fail "inference.replicas.min must not exceed inference.replicas.max" }}
{{- end }}
{{- if gt (int .Values.inference.gpuWorkers.minReplicas) (int .Values.inference.gpuWorkers.maxReplicas) }}
{{- fail "inference.gpuWorkers.minReplicas must not exceed inference.gpuWorkers.maxReplicas" }}
{{- end }}
{{- if and .Values.inference.enabled (gt (int .Values.inference.gpusPerReplica) (int .Values.inference.gpuWorkers.gpusPerPod)) }}
{{- fail "inference.gpusPerReplica exceeds inference.gpuWorkers.gpusPerPod: no worker pod could host an engine replica" }}
{{- end }}
{{- end }}

{{/* What every Ray container of the release needs to find the rest (training adds chatforge.redisEnv). */}}
{{- define "chatforge.rayEnv" -}}
- name: CHATFORGE_ARTIFACTS
  value: {{ .Values.artifacts.mountPath | quote }}
{{- end }}

{{/*
Probes of a Ray container: (dict "head" true/false "serve" true/false). Written out as HTTP probes
so KubeRay does not inject its own, which shell out to wget (absent from slim Python images).
The raylet answers on the dashboard agent's port, the head's GCS on the dashboard, and a Serve
worker is ready once its proxy is (KubeRay's own defaults, as HTTP). The head's readiness never
waits for Serve: KubeRay deploys the application only once the head is ready.
*/}}
{{- define "chatforge.rayProbes" -}}
livenessProbe:
  httpGet:
    path: /api/local_raylet_healthz
    port: 52365
  initialDelaySeconds: 30
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 120
readinessProbe:
  httpGet:
  {{- if .serve }}
    path: /-/healthz
    port: serve
  {{- else if .head }}
    path: /api/gcs_healthz
    port: dashboard
  {{- else }}
    path: /api/local_raylet_healthz
    port: 52365
  {{- end }}
  initialDelaySeconds: 10
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 10
{{- end }}
