/**
 * Bytes per series. Every field an agent sends is length-capped, but the caps add up: with
 * the longest host name, eight of the longest labels, the longest uuid, model and driver,
 * one GPU would cost about 65 KB of `/metrics` and InfluxDB tags. So the labels every
 * per-GPU series carries — `host`, `gpu`, `uuid`, `model` and the host's configured labels,
 * as rendered in the exposition — are held to a budget: HOST_LABEL_BYTES for what Hello
 * sets (host name and configured labels), GPU_LABEL_BYTES for what a window adds (index,
 * uuid, model and, on trueidle_gpu_info, driver). A Hello over its part is refused with
 * INVALID_ARGUMENT naming the budget; a window over its part is rejected as `too_large`.
 * Real hosts use a fraction: a 40-character FQDN, three labels, an NVIDIA uuid and model
 * come to about 200 bytes.
 */
import { labelPairs } from "../common/prom-text.js";

/** The host's part of every per-GPU series' labels: `host="…"` and the configured labels. */
export const HOST_LABEL_BYTES = 640;
/** The GPU's part: `gpu="…",uuid="…",model="…"`, `driver="…"` and a MIG instance's `parent_uuid` and `mig_profile`. */
export const GPU_LABEL_BYTES = 384;

/** Bytes of `k="v",…` as the exposition renders it (escapes included). */
function renderedBytes(pairs: Iterable<readonly [string, string]>): number {
  return Buffer.byteLength(labelPairs(pairs));
}

/** Why a host's name and labels are over their budget, or undefined. */
export function hostLabelProblem(hostname: string, labels: Readonly<Record<string, string>>): string | undefined {
  const bytes = renderedBytes([["host", hostname], ...Object.entries(labels)]);
  if (bytes <= HOST_LABEL_BYTES) return undefined;
  return (
    `hello.host: the host name and labels take ${bytes} bytes in the labels of every series of every GPU; ` +
    `at most ${HOST_LABEL_BYTES} are allowed (use shorter label values or fewer labels)`
  );
}

/**
 * The field of a window whose identity is over the GPU's budget (the longest of uuid,
 * model, driver_version and, for a MIG instance, parent_uuid and mig_profile), or
 * undefined. Allocation-free for every window that is plainly within it: UTF-16 length × 3
 * bounds the UTF-8 bytes of a BMP character and its escape (a backslash doubles one byte at
 * most).
 */
export function gpuLabelProblem(
  index: number,
  uuid: string,
  model: string,
  driver: string,
  parentUuid = "",
  migProfile = "",
): "uuid" | "model" | "driver_version" | "parent_uuid" | "mig_profile" | undefined {
  const quick = 3 * (uuid.length + model.length + driver.length + parentUuid.length + migProfile.length) + 80;
  if (quick <= GPU_LABEL_BYTES) return undefined;
  const pairs: Array<readonly [string, string]> = [
    ["gpu", String(index)],
    ["uuid", uuid],
    ["model", model],
    ["driver", driver],
  ];
  if (parentUuid !== "") pairs.push(["parent_uuid", parentUuid], ["mig_profile", migProfile]);
  const bytes = renderedBytes(pairs);
  if (bytes <= GPU_LABEL_BYTES) return undefined;
  const fields = [
    ["uuid", uuid.length],
    ["model", model.length],
    ["driver_version", driver.length],
    ["parent_uuid", parentUuid.length],
    ["mig_profile", migProfile.length],
  ] as const;
  let longest: (typeof fields)[number] = fields[0];
  for (const f of fields) if (f[1] > longest[1]) longest = f;
  return longest[0];
}
