/**
 * A small authoritative DNS server on a loopback UDP port, for names that resolve to
 * several addresses (a Kubernetes headless Service answers one A record per pod) without
 * touching the machine's resolver: agents reach it through a `dns://127.0.0.1:PORT/NAME:PORT`
 * collector entry. It answers A and AAAA queries from `records` (TTL 0, so every lookup
 * asks again), NODATA for a known name's other types and NXDOMAIN for unknown names.
 * `records` may be changed while it runs.
 */
import { createSocket } from "node:dgram";
import { isIP } from "node:net";

export interface DnsServer {
  port: number;
  /** Name (lower case, no trailing dot) to addresses; changes apply to the next query. */
  records: Map<string, string[]>;
  /** Queries answered, per name. */
  queries: Map<string, number>;
  close(): Promise<void>;
}

const TYPE_A = 1;
const TYPE_AAAA = 28;

export async function startDnsServer(records: Record<string, string[]>): Promise<DnsServer> {
  const socket = createSocket("udp4");
  const table = new Map(Object.entries(records).map(([k, v]) => [k.toLowerCase(), v]));
  const queries = new Map<string, number>();
  socket.on("message", (msg, rinfo) => {
    const reply = answer(msg, table, queries);
    if (reply) socket.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(0, "127.0.0.1", () => resolve());
  });
  return {
    port: socket.address().port,
    records: table,
    queries,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

function answer(msg: Buffer, table: Map<string, string[]>, queries: Map<string, number>): Buffer | undefined {
  if (msg.length < 12 || msg.readUInt16BE(4) !== 1) return undefined;
  const labels: string[] = [];
  let at = 12;
  while (at < msg.length && msg[at] !== 0) {
    const len = msg[at]!;
    labels.push(msg.subarray(at + 1, at + 1 + len).toString("ascii"));
    at += 1 + len;
  }
  const questionEnd = at + 5;
  if (questionEnd > msg.length) return undefined;
  const qtype = msg.readUInt16BE(at + 1);
  const name = labels.join(".").toLowerCase();
  queries.set(name, (queries.get(name) ?? 0) + 1);
  const known = table.get(name);
  const family = qtype === TYPE_A ? 4 : qtype === TYPE_AAAA ? 6 : 0;
  const addresses = (known ?? []).filter((a) => isIP(a) === family);
  const header = Buffer.alloc(12);
  header.writeUInt16BE(msg.readUInt16BE(0), 0);
  // Response, authoritative, recursion desired and available; NXDOMAIN for an unknown name.
  header.writeUInt16BE(0x8580 | (known === undefined ? 3 : 0), 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(addresses.length, 6);
  const records = addresses.map((a) => {
    const rdata = family === 4 ? Buffer.from(a.split(".").map(Number)) : ipv6Bytes(a);
    const rr = Buffer.alloc(12);
    rr.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
    rr.writeUInt16BE(qtype, 2);
    rr.writeUInt16BE(1, 4);
    rr.writeUInt32BE(0, 6);
    rr.writeUInt16BE(rdata.length, 10);
    return Buffer.concat([rr, rdata]);
  });
  return Buffer.concat([header, msg.subarray(12, questionEnd), ...records]);
}

function ipv6Bytes(address: string): Buffer {
  const [head = "", tail = ""] = address.split("::");
  const h = head === "" ? [] : head.split(":");
  const t = tail === "" ? [] : tail.split(":");
  const groups = address.includes("::") ? [...h, ...Array(8 - h.length - t.length).fill("0"), ...t] : h;
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => {
    out.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  });
  return out;
}
