/**
 * Host identity for the stream's Hello: hostname and machine id from systeminformation
 * (identity only; sampling never goes through it), labels from configuration.
 */
import si from "systeminformation";
import * as os from "node:os";
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
  return { hostname: hostname || os.hostname(), machineId, labels };
}
