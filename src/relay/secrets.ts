// Moved: the Secret store is the core's (kube/secret-store.ts), the relay's annotation prefix is in keep-or-renew.ts.
// Re-exported for the relay's commands until their imports point there.
export { ANNOTATION_PREFIX } from "./keep-or-renew.js";
export * from "../kube/secret-store.js";
