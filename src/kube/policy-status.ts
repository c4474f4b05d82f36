// What the RootTrustPolicy's status says, as pure functions of the agent's state (unit-tested on a fake clock): the
// Ready condition with its reason, and a lastTransitionTime that moves only when the condition's status changes, as
// Kubernetes' condition conventions ask (a rewrite with the same status keeps the previous time).

export type RefusalReason = "InvalidSpec" | "ShadowedByFlag";
export type ReadyReason = "IntermediateServed" | "RenewalFailed" | "NoIntermediate" | RefusalReason;

export interface Condition {
  type: string;
  status: "True" | "False" | "Unknown";
  reason: string;
  message: string;
  lastTransitionTime: string;
}

/** The agent's state as the status reports it. */
export interface AgentState {
  /** An unexpired intermediate is served. */
  served: boolean;
  /** The last attempt to obtain an intermediate failed with this message (cleared by the next success). */
  lastError?: string | undefined;
  /** The newest policy generation was refused (the last good configuration keeps running). */
  refusal?: { reason: RefusalReason; message: string } | undefined;
}

/** The Ready condition's status, reason and message for `s`; a refused policy outranks a failing renewal. */
export function readiness(s: AgentState): Pick<Condition, "status" | "reason" | "message"> & { reason: ReadyReason } {
  if (s.refusal) return { status: "False", reason: s.refusal.reason, message: s.refusal.message };
  if (s.served && s.lastError)
    return {
      status: "False",
      reason: "RenewalFailed",
      message: `renewing the intermediate failed (the current one is still served): ${s.lastError}`,
    };
  if (s.served) return { status: "True", reason: "IntermediateServed", message: "a valid intermediate is served" };
  return { status: "False", reason: "NoIntermediate", message: s.lastError ?? "no intermediate yet" };
}

/** Kubernetes' metav1.Time: RFC 3339 in whole seconds. */
export function kubeTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/**
 * The condition to write of type `next.type`: `lastTransitionTime` is kept from `previous` (read from the object)
 * when the status did not change, and is `now` otherwise.
 */
export function nextCondition(
  previous: readonly unknown[] | undefined,
  next: Omit<Condition, "lastTransitionTime">,
  nowMs: number,
): Condition {
  const prev = (previous ?? []).find(
    (c): c is Partial<Condition> => typeof c === "object" && c !== null && (c as Condition).type === next.type,
  );
  const keep = prev?.status === next.status && typeof prev.lastTransitionTime === "string";
  return { ...next, lastTransitionTime: keep ? prev.lastTransitionTime! : kubeTime(nowMs) };
}
