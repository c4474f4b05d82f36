// The readable diff `inject --dry-run` prints: how one Deployment object differs from another.
import { isDeepStrictEqual } from "node:util";
import { isObj, type Named } from "./pod-template.js";

/** Lines describing how `after` differs from `before`; arrays of named objects are matched by name. */
export function describeChanges(before: unknown, after: unknown, path = ""): string[] {
  if (isDeepStrictEqual(before, after)) return [];
  const show = (v: unknown) => JSON.stringify(v);
  if (isObj(before) && isObj(after)) {
    const lines: string[] = [];
    for (const key of new Set([...Object.keys(before), ...Object.keys(after)])) {
      const p = path ? `${path}.${key}` : key;
      if (!(key in after)) lines.push(`- ${p}: ${show(before[key])}`);
      else if (!(key in before)) lines.push(`+ ${p}: ${show(after[key])}`);
      else lines.push(...describeChanges(before[key], after[key], p));
    }
    return lines;
  }
  const named = (v: unknown): v is Named[] =>
    Array.isArray(v) && v.every((x) => isObj(x) && typeof x.name === "string");
  if (named(before) && named(after)) {
    const lines: string[] = [];
    const names = [...new Set([...before.map((x) => x.name), ...after.map((x) => x.name)])];
    for (const name of names) {
      const [b, a] = [before.find((x) => x.name === name), after.find((x) => x.name === name)];
      const p = `${path}[name=${name}]`;
      if (!a) lines.push(`- ${p}: ${show(b)}`);
      else if (!b) lines.push(`+ ${p}: ${show(a)}`);
      else lines.push(...describeChanges(b, a, p));
    }
    if (lines.length === 0)
      lines.push(`~ ${path}: order ${show(before.map((x) => x.name))} → ${show(after.map((x) => x.name))}`);
    return lines;
  }
  return [`~ ${path}: ${show(before)} → ${show(after)}`];
}
