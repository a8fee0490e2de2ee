/**
 * Host identity for the stream's Hello: hostname and machine id from systeminformation
 * (identity only; sampling never goes through it), labels from configuration.
 *
 * The host name and machine id are held to the collector's rules for names
 * (common/text-safety.ts) here, so that a host named with control or bidi characters is
 * refused at start with the fix, not by the collector on every connect.
 */
import si from "systeminformation";
import * as os from "node:os";
import { TrueidleError } from "../common/errors.js";
import { quoteText, unsafeTextProblem } from "../common/text-safety.js";
import type { HostIdentity } from "../common/types.js";

export async function hostIdentity(labels: Record<string, string>, hostnameOverride?: string): Promise<HostIdentity> {
  let hostname = hostnameOverride;
  let machineId = "";
  try {
    const [info, ids] = await Promise.all([hostnameOverride ? undefined : si.osInfo(), si.uuid()]);
    hostname ??= info?.fqdn && info.fqdn !== "localhost" ? info.hostname : info?.hostname;
    machineId = ids.os ?? "";
  } catch {
    // Identity is best effort; the hostname below is always available.
  }
  const identity = { hostname: hostname || os.hostname(), machineId, labels };
  const problem = hostIdentityProblem(identity);
  if (problem !== undefined) throw new TrueidleError("bad_config", problem);
  return identity;
}

/** Why the collector would refuse this identity's host name or machine id, with the fix; undefined when it would not. */
export function hostIdentityProblem(identity: Pick<HostIdentity, "hostname" | "machineId">): string | undefined {
  const name = unsafeTextProblem(identity.hostname);
  if (name !== undefined)
    return `The host name ${quoteText(identity.hostname)} ${name}; give the name to report with --hostname NAME.`;
  const id = unsafeTextProblem(identity.machineId);
  if (id !== undefined) return `The machine id ${quoteText(identity.machineId)} ${id}; check /etc/machine-id.`;
  return undefined;
}
