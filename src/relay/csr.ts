// Certificate requests for the relay's leaf certificates: made by the shared CSR builder in authority/csr.ts.
export { createLeafCsr, type LeafUsage } from "../authority/csr.js";
