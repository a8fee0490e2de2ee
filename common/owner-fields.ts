/**
 * The owner fields that may become labels and tags (DESIGN "Owners", "Public names"): the
 * Prometheus labels of the owner series, the tags of `gpu_owner_window`, and what
 * `trueidle report --by` can group owners by.
 */
export const OWNER_LABELS = ["namespace", "pod", "container", "job", "user"] as const;
export type OwnerLabel = (typeof OWNER_LABELS)[number];

export function isOwnerLabel(key: string): key is OwnerLabel {
  return (OWNER_LABELS as readonly string[]).includes(key);
}
