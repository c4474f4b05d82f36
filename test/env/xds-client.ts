// What a proxyless gRPC workload says to its Istio agent: one ADS request on pilot-agent's XDS proxy socket, which
// pilot-agent forwards to istiod over its own TLS connection (verified against the mesh root, authenticated by the
// workload's certificate). The protobuf is written by hand: DiscoveryRequest's node and type_url, and the
// length-delimited fields of DiscoveryResponse, are all a test needs.
import * as grpc from "@grpc/grpc-js";

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}
function lengthDelimited(field: number, body: Buffer | string): Buffer {
  const b = typeof body === "string" ? Buffer.from(body) : body;
  return Buffer.concat([varint((field << 3) | 2), varint(b.length), b]);
}
function struct(fields: Record<string, string>): Buffer {
  return Buffer.concat(
    Object.entries(fields).map(([k, v]) =>
      lengthDelimited(1, Buffer.concat([lengthDelimited(1, k), lengthDelimited(2, lengthDelimited(3, v))])),
    ),
  );
}
/** The length-delimited fields of a message, by number (enough for DiscoveryResponse's strings and Anys). */
function fieldsOf(buf: Buffer): Map<number, Buffer[]> {
  const out = new Map<number, Buffer[]>();
  let i = 0;
  const readVarint = () => {
    let v = 0;
    let shift = 0;
    for (;;) {
      const byte = buf[i++]!;
      v += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return v;
      shift += 7;
    }
  };
  while (i < buf.length) {
    const key = readVarint();
    const wire = key & 7;
    const field = Math.floor(key / 8);
    if (wire === 0) readVarint();
    else if (wire === 2) {
      const len = readVarint();
      out.set(field, [...(out.get(field) ?? []), buf.subarray(i, i + len)]);
      i += len;
    } else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else throw new Error(`unexpected wire type ${wire}`);
  }
  return out;
}

export const CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/**
 * What a proxyless workload does: one ADS stream on pilot-agent's XDS proxy socket, which pilot-agent forwards to
 * istiod over its own TLS connection. Resolves with the first response's type_url and resource count.
 */
export function adsThroughPilotAgent(
  udsPath: string,
  workload: { podName: string; namespace: string; serviceAccount: string; clusterId?: string },
): Promise<{ typeUrl: string; resources: number }> {
  const client = new grpc.Client(`unix:${udsPath}`, grpc.credentials.createInsecure());
  const node = Buffer.concat([
    lengthDelimited(
      1,
      `sidecar~127.0.0.1~${workload.podName}.${workload.namespace}~${workload.namespace}.svc.cluster.local`,
    ),
    lengthDelimited(
      2,
      struct({
        NAMESPACE: workload.namespace,
        SERVICE_ACCOUNT: workload.serviceAccount,
        CLUSTER_ID: workload.clusterId ?? "Kubernetes",
        ISTIO_VERSION: "1.31.0",
        GENERATOR: "grpc",
      }),
    ),
  ]);
  const request = Buffer.concat([lengthDelimited(2, node), lengthDelimited(4, CLUSTER_TYPE)]);
  return new Promise((resolve, reject) => {
    const call = client.makeBidiStreamRequest(
      "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
      (b: Buffer) => b,
      (b: Buffer) => b,
      new grpc.Metadata(),
      { deadline: Date.now() + 20_000 },
    );
    call.on("data", (b: Buffer) => {
      const f = fieldsOf(b);
      resolve({
        typeUrl: f.get(4)?.[0]?.toString() ?? "",
        resources: f.get(2)?.length ?? 0,
      });
      call.cancel();
      client.close();
    });
    call.on("error", (err: grpc.ServiceError) => {
      client.close();
      if (err.code !== grpc.status.CANCELLED) reject(err);
    });
    call.write(request);
  });
}
