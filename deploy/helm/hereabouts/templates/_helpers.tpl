{{/* Names, namespace and labels shared by every template. */}}

{{/* The chart's name: nameOverride, else the chart name. */}}
{{- define "hereabouts.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object name: fullnameOverride, else the release name when it contains
the name, else <release>-<name>. Left at 63 - 19 characters so that the longest derived name
(<fullname>-controller-metrics) stays a valid DNS label. */}}
{{- define "hereabouts.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 44 | trimSuffix "-" }}
{{- else }}
{{- $name := include "hereabouts.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 44 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 44 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Where the namespaced objects go. */}}
{{- define "hereabouts.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{/* The plugin's service account. */}}
{{- define "hereabouts.serviceAccountName" -}}
{{- default (include "hereabouts.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* The reconcile CronJob's and the controller's service account. */}}
{{- define "hereabouts.reconcilerServiceAccountName" -}}
{{- default (printf "%s-reconciler" (include "hereabouts.fullname" .)) .Values.reconcilerServiceAccount.name }}
{{- end }}

{{/* Labels of one component's objects and pods (and its selector): hereabouts.labels with
(list $ "component"). */}}
{{- define "hereabouts.labels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "hereabouts.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* The image of every container. */}}
{{- define "hereabouts.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Pod-level scheduling and security of a component: hereabouts.podSpec with
(list $ .Values.<component-values>) renders priorityClassName, imagePullSecrets,
securityContext, nodeSelector, affinity and tolerations, each only when set. */}}
{{- define "hereabouts.podSpec" -}}
{{- $root := index . 0 -}}
{{- $v := index . 1 -}}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 0 }}
{{- end }}
{{- with $v.podSecurityContext }}
securityContext:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
{{- toYaml . | nindent 0 }}
{{- end }}
{{- end }}
