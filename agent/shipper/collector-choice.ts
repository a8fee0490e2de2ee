/**
 * Which collector an agent streams to, when a `--collector` entry names several.
 *
 * A name may resolve to several addresses: a Kubernetes headless Service answers one A
 * record per collector pod. grpc-js's default `pick_first` would send every agent to the
 * first address, and its `shuffleAddressList` option (grpc-js 1.14) never puts the second
 * of three addresses first, so a fleet would lean on one or two collectors. The agent
 * resolves the name itself instead, ranks the addresses by a hash of its host name and
 * each address (rendezvous hashing), and opens its one stream to the first of them, with
 * the name kept as the TLS server name and the `:authority`. So agents spread evenly over
 * the collectors; an agent that restarts goes back to the same collector; a collector that
 * goes away moves only its own agents, each to its next address; and a collector that is
 * added takes its share of agents as their streams reconnect, not all at once.
 *
 * On a failure the agent moves to its next address of the same entry, and once every one
 * has failed since the last stream that was welcomed, to the next `--collector` entry. The
 * name is resolved again on every connect, so new pods are found. A name that does not
 * resolve here is handed to grpc-js as given, which resolves it again and fails with the
 * error the connect diagnosis reads (connect-diagnosis.ts).
 *
 * Entries: `HOST:PORT`, `[IPV6]:PORT`, gRPC's `dns:HOST:PORT`, and `dns://SERVER[:PORT]/HOST:PORT`
 * (resolved by the DNS server named, not the system resolver). Any other form (`unix:PATH`,
 * `ipv4:…`) goes to grpc-js as given.
 */
import { createHash } from "node:crypto";
import { promises as dns } from "node:dns";
import { isIP } from "node:net";
import { errorMessage } from "../../common/errors.js";

export type CollectorEntry =
  | { kind: "name"; given: string; host: string; port: number; dnsServer?: string | undefined }
  | { kind: "address"; given: string; host: string; port: number }
  | { kind: "passthrough"; given: string };

export interface CollectorChoice {
  /** The `--collector` entry as given. */
  collector: string;
  /** What the channel connects to: an `IP:PORT` resolved here, or the entry itself. */
  target: string;
  /** Set when `target` is an address resolved from a name: the name, for TLS and `:authority`. */
  serverName?: string | undefined;
  authority?: string | undefined;
  /** Why the name was handed to grpc-js unresolved. */
  resolveError?: string | undefined;
}

/** Resolves a name entry to its addresses (IPs); rejects when the name cannot be resolved. */
export type ResolveCollector = (entry: Extract<CollectorEntry, { kind: "name" }>) => Promise<string[]>;

/** How long a resolution may take before the name is handed to grpc-js as given. */
const RESOLVE_TIMEOUT_MS = 10_000;

export function parseCollectorEntry(given: string): CollectorEntry {
  let rest = given;
  let dnsServer: string | undefined;
  const withServer = /^dns:\/\/([^/]*)\/(.+)$/.exec(given);
  if (withServer) {
    dnsServer = withServer[1] === "" ? undefined : withServer[1];
    rest = withServer[2]!;
  } else if (given.startsWith("dns:")) {
    rest = given.slice("dns:".length);
  }
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(rest) ?? /^([^:[\]/]+):(\d+)$/.exec(rest);
  const port = m ? Number(m[2]) : Number.NaN;
  if (!m || !Number.isInteger(port) || port < 1 || port > 65_535) return { kind: "passthrough", given };
  const host = m[1]!;
  if (isIP(host) !== 0) return { kind: "address", given, host, port };
  if (host.includes(":")) return { kind: "passthrough", given };
  return { kind: "name", given, host, port, dnsServer };
}

/** The system resolver (getaddrinfo: hosts file, DNS), or the DNS server the entry names. */
export const resolveWithDns: ResolveCollector = async (entry) => {
  const lookup = async (): Promise<string[]> => {
    if (entry.dnsServer === undefined) return (await dns.lookup(entry.host, { all: true })).map((a) => a.address);
    const resolver = new dns.Resolver({ timeout: 3_000, tries: 2 });
    resolver.setServers([entry.dnsServer]);
    const [v4, v6] = await Promise.allSettled([resolver.resolve4(entry.host), resolver.resolve6(entry.host)]);
    const found = [...(v4.status === "fulfilled" ? v4.value : []), ...(v6.status === "fulfilled" ? v6.value : [])];
    if (found.length === 0 && v4.status === "rejected") throw v4.reason;
    return found;
  };
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${RESOLVE_TIMEOUT_MS} ms`)), RESOLVE_TIMEOUT_MS);
  });
  try {
    return await Promise.race([lookup(), timeout]);
  } finally {
    clearTimeout(timer);
  }
};

/**
 * `addresses` in this agent's order of preference: by a hash of `key` (the host name)
 * and each address, highest first. Every agent ranks the addresses differently, evenly
 * over them, and the same agent ranks them the same way every time; an address removed or
 * added moves only the agents that ranked it first.
 */
export function rankAddresses(addresses: readonly string[], key: string): string[] {
  return [...new Set(addresses)]
    .map((address) => ({
      address,
      weight: createHash("sha256").update(`${key}\0${address}`).digest().readUIntBE(0, 6),
    }))
    .sort((a, b) => b.weight - a.weight || (a.address < b.address ? -1 : 1))
    .map((r) => r.address);
}

/** `IP:PORT`, with an IPv6 address in brackets. */
export function hostPort(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The collector to stream to next: see the module comment. */
export class CollectorChooser {
  private readonly entries: CollectorEntry[];
  private index = 0;
  /** Targets of the current entry that failed since the last welcomed stream. */
  private readonly failed = new Set<string>();
  /** The current entry's targets as last resolved, ranked. */
  private latest: string[] = [];

  constructor(
    collectors: readonly string[],
    /** What ranks the addresses: the host's name, the same across restarts. */
    private readonly key: string,
    private readonly resolve: ResolveCollector = resolveWithDns,
  ) {
    if (collectors.length === 0) throw new Error("at least one collector address is needed");
    this.entries = collectors.map(parseCollectorEntry);
  }

  /** The next collector to try: this entry's best address not yet failed, else the next entry's. */
  async next(): Promise<CollectorChoice> {
    for (let turn = 0; turn <= this.entries.length; turn++) {
      const choice = await this.pick(this.entries[this.index]!);
      if (choice) return choice;
      this.index = (this.index + 1) % this.entries.length;
      this.failed.clear();
    }
    // Not reached: after a full turn nothing has failed, so the entry's best address is free.
    const entry = this.entries[this.index]!;
    return { collector: entry.given, target: entry.given };
  }

  /** The stream to `choice` failed or broke: the next choice is another address. */
  failedAt(choice: CollectorChoice): void {
    this.failed.add(choice.target);
  }

  /** A stream was welcomed: every address may be tried again. */
  welcomed(): void {
    this.failed.clear();
  }

  /** Whether the current entry, as last resolved, has an address not yet failed. */
  hasUntried(): boolean {
    return this.latest.some((t) => !this.failed.has(t));
  }

  private async pick(entry: CollectorEntry): Promise<CollectorChoice | undefined> {
    if (entry.kind === "passthrough" || entry.kind === "address") {
      const target = entry.kind === "address" ? hostPort(entry.host, entry.port) : entry.given;
      this.latest = [target];
      return this.failed.has(target) ? undefined : { collector: entry.given, target };
    }
    let addresses: string[] = [];
    let resolveError: string | undefined;
    try {
      addresses = await this.resolve(entry);
      if (addresses.length === 0) resolveError = "the name has no addresses";
    } catch (err) {
      resolveError = errorMessage(err);
    }
    if (addresses.length === 0) {
      // grpc-js resolves the name itself, and its failure is what the connect diagnosis reads.
      this.latest = [entry.given];
      return this.failed.has(entry.given) ? undefined : { collector: entry.given, target: entry.given, resolveError };
    }
    this.latest = rankAddresses(addresses, this.key).map((a) => hostPort(a, entry.port));
    const target = this.latest.find((t) => !this.failed.has(t));
    if (target === undefined) return undefined;
    return { collector: entry.given, target, serverName: entry.host, authority: hostPort(entry.host, entry.port) };
  }
}
