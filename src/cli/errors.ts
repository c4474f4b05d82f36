// A usage or configuration error: every problem at once, each naming the flag, variable or field and what is
// expected. Commands exit 2 on it.
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(
      `invalid configuration (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n  - ${problems.join("\n  - ")}`,
    );
    this.name = "ConfigError";
  }
}
