// Kubernetes label selectors in their string form (what `kubectl get -l` takes): comma-separated requirements, each
// `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key` (exists) or `!key` (absent).
// Parsed once at start, so a typo is a usage error naming what was wrong instead of an apiserver 400 at every list;
// matched locally, so a namespace whose labels stop matching is seen as such (a filtered watch would only drop it).
export type Requirement =
  { key: string; op: "in" | "notin"; values: string[] } | { key: string; op: "exists" | "absent" };

export interface LabelSelector {
  requirements: Requirement[];
  /** The selector as given (trimmed); empty selects everything. */
  text: string;
}

// A qualified name: an optional DNS-subdomain prefix and "/", then up to 63 of [A-Za-z0-9-_.], alphanumeric at both ends.
const NAME = /^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$/;
const PREFIX = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;
const VALUE = /^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$/;

export class LabelSelectorError extends Error {}

function checkKey(key: string): string {
  const slash = key.indexOf("/");
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined && (prefix.length === 0 || prefix.length > 253 || !PREFIX.test(prefix)))
    throw new LabelSelectorError(`label key "${key}": the prefix must be a DNS subdomain, e.g. example.com/name`);
  if (!NAME.test(name))
    throw new LabelSelectorError(
      `label key "${key}": expected up to 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric`,
    );
  return key;
}

function checkValue(key: string, value: string): string {
  if (!VALUE.test(value))
    throw new LabelSelectorError(
      `label value "${value}" (key ${key}): expected up to 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric`,
    );
  return value;
}

/** Splits on commas outside parentheses. */
function splitTop(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let cur = "";
  for (const ch of text) {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (depth < 0) throw new LabelSelectorError(`unbalanced ")" in "${text}"`);
    if (ch === "," && depth === 0) {
      parts.push(cur);
      cur = "";
    } else cur += ch;
  }
  if (depth !== 0) throw new LabelSelectorError(`unbalanced "(" in "${text}"`);
  parts.push(cur);
  return parts.map((p) => p.trim());
}

/** Parses `text`; throws LabelSelectorError saying which requirement is wrong and what is expected. */
export function parseLabelSelector(text: string): LabelSelector {
  const trimmed = text.trim();
  if (trimmed === "") return { requirements: [], text: "" };
  const requirements: Requirement[] = [];
  for (const part of splitTop(trimmed)) {
    if (part === "") throw new LabelSelectorError(`empty requirement in "${trimmed}" (a stray comma?)`);
    let m: RegExpMatchArray | null;
    if ((m = /^!\s*([^\s=!(),]+)$/.exec(part))) {
      requirements.push({ key: checkKey(m[1]!), op: "absent" });
    } else if ((m = /^([^\s=!(),]+)\s+(in|notin)\s*\(([^()]*)\)$/.exec(part))) {
      const key = checkKey(m[1]!);
      const values = m[3]!.split(",").map((v) => checkValue(key, v.trim()));
      requirements.push({ key, op: m[2] as "in" | "notin", values });
    } else if ((m = /^([^\s=!(),]+)\s*(==|=|!=)\s*([^\s=!(),]*)$/.exec(part))) {
      const key = checkKey(m[1]!);
      requirements.push({ key, op: m[2] === "!=" ? "notin" : "in", values: [checkValue(key, m[3]!)] });
    } else if ((m = /^([^\s=!(),]+)$/.exec(part))) {
      requirements.push({ key: checkKey(m[1]!), op: "exists" });
    } else {
      throw new LabelSelectorError(
        `"${part}" is not a label requirement; expected key=value, key!=value, key in (a,b), key notin (a,b), key or !key`,
      );
    }
  }
  return { requirements, text: trimmed };
}

/** Whether `labels` satisfy every requirement (an empty selector matches everything). */
export function matchesSelector(selector: LabelSelector, labels: Record<string, string> | undefined): boolean {
  const l = labels ?? {};
  return selector.requirements.every((r) => {
    const has = Object.hasOwn(l, r.key);
    switch (r.op) {
      case "exists":
        return has;
      case "absent":
        return !has;
      case "in":
        return has && r.values.includes(l[r.key]!);
      case "notin":
        return !has || !r.values.includes(l[r.key]!);
    }
  });
}
