// The Ready condition of the RootTrustPolicy's status: its reason for each agent state, and a lastTransitionTime that
// changes only when the condition's status changes.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { kubeTime, nextCondition, readiness } from "../../src/kube/policy-status.js";
import { FakeClock } from "./fake-clock.js";

void describe("RootTrustPolicy Ready condition", () => {
  void it("says why it is not ready: refusal first, then a failing renewal, then no intermediate", () => {
    assert.deepEqual(readiness({ served: true }), {
      status: "True",
      reason: "IntermediateServed",
      message: "a valid intermediate is served",
    });
    const failing = readiness({
      served: true,
      lastError: "Vault POST pki/root/sign-intermediate: 403 permission denied",
    });
    assert.equal(failing.status, "False");
    assert.equal(failing.reason, "RenewalFailed");
    assert.match(failing.message, /403 permission denied/);
    assert.equal(readiness({ served: false, lastError: "x" }).reason, "NoIntermediate");
    const shadowed = readiness({
      served: true,
      lastError: "x",
      refusal: { reason: "ShadowedByFlag", message: "generation 4 refused: --auth-role: ..." },
    });
    assert.deepEqual(shadowed, {
      status: "False",
      reason: "ShadowedByFlag",
      message: "generation 4 refused: --auth-role: ...",
    });
  });

  void it("keeps lastTransitionTime while the status stays, and moves it when the status changes", async () => {
    const clock = new FakeClock(Date.UTC(2026, 10, 29, 12, 0, 0), 0);
    const t0 = kubeTime(clock.now());
    let conds = [nextCondition(undefined, { type: "Ready", ...readiness({ served: true }) }, clock.now())];
    assert.equal(conds[0]!.lastTransitionTime, t0);

    await clock.advance(60_000); // a rotation: still True
    conds = [nextCondition(conds, { type: "Ready", ...readiness({ served: true }) }, clock.now())];
    assert.equal(conds[0]!.lastTransitionTime, t0, "a write with no status change keeps the time");

    await clock.advance(60_000); // renewal fails: False
    const t2 = kubeTime(clock.now());
    conds = [nextCondition(conds, { type: "Ready", ...readiness({ served: true, lastError: "e1" }) }, clock.now())];
    assert.equal(conds[0]!.lastTransitionTime, t2);
    assert.equal(conds[0]!.reason, "RenewalFailed");

    await clock.advance(5_000); // fails again, another message and even another reason: still False
    conds = [nextCondition(conds, { type: "Ready", ...readiness({ served: false, lastError: "e2" }) }, clock.now())];
    assert.equal(conds[0]!.lastTransitionTime, t2);
    assert.equal(conds[0]!.reason, "NoIntermediate");

    await clock.advance(5_000); // recovered
    const t4 = kubeTime(clock.now());
    conds = [nextCondition(conds, { type: "Ready", ...readiness({ served: true }) }, clock.now())];
    assert.equal(conds[0]!.lastTransitionTime, t4);
    assert.notEqual(t4, t2);
  });

  void it("reads the previous condition from whatever the object holds, ignoring other types and junk", () => {
    const now = Date.UTC(2026, 10, 29);
    const prev = [null, "x", { type: "Other", status: "True", lastTransitionTime: "2020-01-01T00:00:00Z" }];
    assert.equal(
      nextCondition(prev, { type: "Ready", status: "True", reason: "r", message: "m" }, now).lastTransitionTime,
      kubeTime(now),
    );
    const same = [{ type: "Ready", status: "True", lastTransitionTime: "2020-01-01T00:00:00Z" }];
    assert.equal(
      nextCondition(same, { type: "Ready", status: "True", reason: "r", message: "m" }, now).lastTransitionTime,
      "2020-01-01T00:00:00Z",
    );
  });
});
