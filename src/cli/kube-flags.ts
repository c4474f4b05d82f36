// The Kubernetes access section every apiserver-using command shares (inject, doctor, setup-vault, sidecar, relay):
// --kubeconfig and --context, with the same parsers and help. Kept apart from kube.ts so that a command's flag table
// (and --help) loads no client code. The precedence rule lives in kube.ts.
import { fieldFlags, type FlagTable } from "./flags.js";
import { nonEmpty } from "./validate.js";

export interface KubeAccess {
  kubeconfig?: string | undefined;
  context?: string | undefined;
}

/** The shared flag section; `at` says where the command keeps its KubeAccess (e.g. `(c) => c.kube`). */
export function kubeAccessFlags<C>(at: (c: C) => KubeAccess): FlagTable<C> {
  const { option } = fieldFlags<C>();
  return {
    kubeconfig: option(
      "kubeconfig file(s) for the apiserver, colon-separated to merge them",
      nonEmpty,
      (c) => at(c).kubeconfig,
      { arg: "FILE[:FILE]", defaultText: "$KUBECONFIG, else in-cluster in a pod, else ~/.kube/config" },
    ),
    context: option("kubeconfig context to use (never in-cluster)", nonEmpty, (c) => at(c).context, {
      arg: "NAME",
      defaultText: "the kubeconfig's current-context",
    }),
  };
}
