{{/*
Names, labels and pod settings shared by every template. The tests render the chart with real
Helm (tests/chart/helm.py) and lint it with `helm lint --strict`.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "hearth.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object name: the release name when it already contains the chart name. */}}
{{- define "hearth.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "hearth.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "hearth.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "hearth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: hearth
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "component" "operator"). */}}
{{- define "hearth.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hearth.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Full labels of one component; call with (dict "root" $ "component" "operator"). */}}
{{- define "hearth.componentLabels" -}}
{{ include "hearth.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image of Hearth; call with (dict "root" $ "repository" "hearth-operator"). */}}
{{- define "hearth.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .repository (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{- define "hearth.operatorName" -}}
{{- printf "%s-operator" (include "hearth.fullname" .) -}}
{{- end -}}

{{- define "hearth.gatewayName" -}}
{{- printf "%s-gateway" (include "hearth.fullname" .) -}}
{{- end -}}

{{- define "hearth.billingName" -}}
{{- printf "%s-billing" (include "hearth.fullname" .) -}}
{{- end -}}

{{/* The Secret of the meters' root keys (`proxy`, `usage`): the chart's own or the user's. */}}
{{- define "hearth.meterKeysName" -}}
{{- default (printf "%s-meter-keys" (include "hearth.fullname" .)) .Values.meterKeys.existingSecret -}}
{{- end -}}

{{/* The Secret of the invoice readers' token (`token`): the chart's own or the user's. */}}
{{- define "hearth.billingTokenName" -}}
{{- default (printf "%s-billing-token" (include "hearth.fullname" .)) .Values.billing.existingTokenSecret -}}
{{- end -}}

{{- define "hearth.leaseName" -}}
{{- default (printf "%s-operator-leader" (include "hearth.fullname" .)) .Values.operator.leaseName -}}
{{- end -}}

{{/* Pod-level security context of every Hearth pod: PodSecurity "restricted". */}}
{{- define "hearth.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security context of every Hearth container: PodSecurity "restricted". */}}
{{- define "hearth.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Environment every hearth-operator process gets: logs, and its own pod name and namespace. */}}
{{- define "hearth.commonEnv" -}}
- name: HEARTH_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}
