// The one door to @kubernetes/client-node: a static import of only what src/kube/kubeconfig.ts uses, reached through
// that module's import() (so the in-pod path never loads it). Static and named, so the bundler (scripts/bundle.mjs)
// keeps just KubeConfig and what it needs rather than the whole generated API (16 MB of the 21 MB bundle).
export { KubeConfig } from "@kubernetes/client-node";
