// Parsing relay command lines in unit tests: the config a valid one yields, or the problems an invalid one reports.
import assert from "node:assert/strict";
import { ConfigError } from "../../src/config/config.js";
import { parseRelayArgs, type RelayConfig } from "../../src/relay/config.js";

/** The RelayConfig `argv` yields with environment `env` (asserts it is a run, not --help). */
export function relayConfig(argv: string[], env: NodeJS.ProcessEnv): RelayConfig {
  const parsed = parseRelayArgs(argv, env);
  assert.equal(parsed.kind, "run");
  return (parsed as { config: RelayConfig }).config;
}

/** The problems of the ConfigError `argv` is refused with (fails the test if it is accepted). */
export function relayProblems(argv: string[], env: NodeJS.ProcessEnv): string[] {
  try {
    parseRelayArgs(argv, env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err.problems;
  }
  assert.fail("expected a ConfigError");
}
