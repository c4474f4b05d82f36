// A test fixture shared by the inject tests.
/** istiod as the Istio istiod Helm chart renders it (the fields inject touches, and its neighbours). */
export function istiodDeployment(name = "istiod", revision = "default"): Record<string, unknown> {
  const istioLabel = revision === "default" ? "pilot" : "istiod";
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: {
      name,
      namespace: "istio-system",
      labels: {
        app: "istiod",
        "istio.io/rev": revision,
        "install.operator.istio.io/owning-resource": "unknown",
        "operator.istio.io/component": "Pilot",
        istio: istioLabel,
        release: "istiod",
      },
    },
    spec: {
      strategy: { rollingUpdate: { maxSurge: "100%", maxUnavailable: "25%" } },
      selector: { matchLabels: { istio: istioLabel, "istio.io/rev": revision } },
      template: {
        metadata: {
          labels: {
            app: "istiod",
            "istio.io/rev": revision,
            "install.operator.istio.io/owning-resource": "unknown",
            "sidecar.istio.io/inject": "false",
            "operator.istio.io/component": "Pilot",
            istio: istioLabel,
          },
          annotations: {
            "prometheus.io/port": "15014",
            "prometheus.io/scrape": "true",
            "sidecar.istio.io/inject": "false",
          },
        },
        spec: {
          serviceAccountName: name,
          securityContext: { fsGroup: 1337 },
          containers: [
            {
              name: "discovery",
              image: "docker.io/istio/pilot:1.24.0",
              args: [
                "discovery",
                "--monitoringAddr=:15014",
                "--log_output_level=default:info",
                "--domain",
                "cluster.local",
                "--keepaliveMaxServerConnectionAge",
                "30m",
              ],
              ports: [
                { containerPort: 8080, protocol: "TCP" },
                { containerPort: 15010, protocol: "TCP" },
                { containerPort: 15017, protocol: "TCP" },
              ],
              readinessProbe: {
                httpGet: { path: "/ready", port: 8080 },
                initialDelaySeconds: 1,
                periodSeconds: 3,
                timeoutSeconds: 5,
              },
              env: [
                { name: "REVISION", value: revision },
                { name: "PILOT_CERT_PROVIDER", value: "istiod" },
                { name: "POD_NAME", valueFrom: { fieldRef: { apiVersion: "v1", fieldPath: "metadata.name" } } },
                {
                  name: "POD_NAMESPACE",
                  valueFrom: { fieldRef: { apiVersion: "v1", fieldPath: "metadata.namespace" } },
                },
                {
                  name: "SERVICE_ACCOUNT",
                  valueFrom: { fieldRef: { apiVersion: "v1", fieldPath: "spec.serviceAccountName" } },
                },
                { name: "KUBECONFIG", value: "/var/run/secrets/remote/config" },
                { name: "ISTIOD_ADDR", value: "istiod.istio-system.svc:15012" },
                { name: "CLUSTER_ID", value: "Kubernetes" },
              ],
              resources: { requests: { cpu: "500m", memory: "2048Mi" } },
              securityContext: {
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                runAsUser: 1337,
                runAsGroup: 1337,
                runAsNonRoot: true,
                capabilities: { drop: ["ALL"] },
              },
              volumeMounts: [
                { name: "istio-token", mountPath: "/var/run/secrets/tokens", readOnly: true },
                { name: "local-certs", mountPath: "/var/run/secrets/istio-dns" },
                { name: "cacerts", mountPath: "/etc/cacerts", readOnly: true },
                { name: "istio-kubeconfig", mountPath: "/var/run/secrets/remote", readOnly: true },
                { name: "istio-csr-dns-cert", mountPath: "/var/run/secrets/istiod/tls", readOnly: true },
                { name: "istio-csr-ca-configmap", mountPath: "/var/run/secrets/istiod/ca", readOnly: true },
              ],
            },
          ],
          volumes: [
            { name: "local-certs", emptyDir: { medium: "Memory" } },
            {
              name: "istio-token",
              projected: {
                sources: [
                  { serviceAccountToken: { audience: "istio-ca", expirationSeconds: 43200, path: "istio-token" } },
                ],
              },
            },
            { name: "cacerts", secret: { secretName: "cacerts", optional: true } },
            { name: "istio-kubeconfig", secret: { secretName: "istio-kubeconfig", optional: true } },
            { name: "istio-csr-dns-cert", secret: { secretName: "istiod-tls", optional: true } },
            {
              name: "istio-csr-ca-configmap",
              configMap: { name: "istio-ca-root-cert", defaultMode: 420, optional: true },
            },
          ],
        },
      },
    },
  };
}
