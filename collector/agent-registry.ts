/**
 * The agent streams a collector serves: at most `maxAgents`, and one per host.
 *
 * A host is its identity from Hello: hostname and machine id. A second stream of a host
 * replaces the first, which is ended: an agent that reconnected after a network cut must
 * not be locked out by its own half-dead stream, which the collector may not notice for a
 * keepalive period or more. A replacement takes the older stream's place, so a known host
 * gets back in even while the collector is full.
 */
import { COLLECTOR_SETTINGS } from "./settings.js";

/** Streams served at once unless configured otherwise. */
export const DEFAULT_MAX_AGENTS: number = COLLECTOR_SETTINGS.maxAgents.default;

/**
 * Open streams, with or without a Hello yet, per stream served: the transport refuses
 * streams beyond maxAgents × this, so connections that never say Hello cannot pile up.
 */
export const OPEN_STREAMS_PER_AGENT = 2;

/** A refused agent comes back after a minute plus up to half a minute at random, so refused agents do not return as a herd. */
export function tooManyAgentsRetryMs(): number {
  return Math.round(60_000 * (1 + Math.random() / 2));
}

/** A registered stream: told when a newer stream of its host takes its place. */
export interface RegisteredStream {
  replaced(by: string): void;
}

export type AdmitOutcome = "admitted" | "replaced" | "full";

export function hostKey(hostname: string, machineId: string): string {
  return JSON.stringify([hostname, machineId]);
}

export class AgentRegistry {
  private readonly streams = new Map<string, RegisteredStream>();

  constructor(readonly maxAgents: number = DEFAULT_MAX_AGENTS) {}

  /** Streams registered now. */
  get size(): number {
    return this.streams.size;
  }

  /**
   * Registers `stream` as the one stream of host `key`. An older stream of the host is
   * told (`replaced(peer)`) after the new one took its place; "full" when `maxAgents`
   * streams of other hosts are open.
   */
  admit(key: string, stream: RegisteredStream, peer: string): AdmitOutcome {
    const older = this.streams.get(key);
    if (older === undefined && this.streams.size >= this.maxAgents) return "full";
    this.streams.set(key, stream);
    if (older === undefined || older === stream) return "admitted";
    older.replaced(peer);
    return "replaced";
  }

  /** Unregisters `stream`; a stream already replaced leaves its successor in place. */
  leave(key: string, stream: RegisteredStream): void {
    if (this.streams.get(key) === stream) this.streams.delete(key);
  }
}
