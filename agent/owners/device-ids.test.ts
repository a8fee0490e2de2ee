import { describe, expect, it } from "vitest";
import { isGpuUuid, matchDeviceId } from "./device-ids.js";

const GPU0 = "GPU-0a1b2c3d-0000-1111-2222-333344445555";
const GPU1 = "GPU-9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff";
const MIG = "MIG-12345678-abcd-ef01-2345-6789abcdef01";
const LEGACY_MIG = "MIG-GPU-0a1b2c3d-0000-1111-2222-333344445555/1/0";
const byIndex = new Map([
  [0, GPU0],
  [1, GPU1],
]);

describe("matchDeviceId", () => {
  it.each([
    [GPU0, GPU0, "uuid"],
    [MIG, MIG, "mig_uuid"],
    [LEGACY_MIG, LEGACY_MIG, "mig_uuid"],
    [`${GPU1}::0`, GPU1, "time_sliced"],
    [`${GPU1}::17`, GPU1, "time_sliced"],
    [`${MIG}::3`, MIG, "time_sliced"],
    [`${GPU0}-vgpu-2`, GPU0, "uuid_suffix"],
    [`${GPU0}/shared/1`, GPU0, "uuid_suffix"],
    ["1", GPU1, "index"],
    ["nvidia0", GPU0, "gke_index"],
    ["nvidia1/vgpu3", GPU1, "gke_time_shared"],
  ])("matches %s to a GPU", (id, uuid, form) => {
    expect(matchDeviceId(id, byIndex)).toEqual({ uuid, form });
  });

  it.each([
    ["0:1", "mig_index"],
    ["nvidia0/gi2", "gke_mig"],
    ["nvidia0/gi2/vgpu1", "gke_mig"],
    ["7", "index_unknown"],
    ["nvidia7", "index_unknown"],
    ["", "unknown"],
    ["gpu-0", "unknown"],
    ["GPU-0a1b2c3d-0000-1111-2222-33334444555", "unknown"], // one digit short
    [`${GPU0}0`, "unknown"], // one digit long: another id, not this uuid
    ["GPU-zzzzzzzz-0000-1111-2222-333344445555", "unknown"],
  ])("leaves %j unmatched as %s", (id, form) => {
    expect(matchDeviceId(id, byIndex)).toEqual({ uuid: undefined, form });
  });

  it("resolves no index without the host's GPU list", () => {
    expect(matchDeviceId("0")).toEqual({ uuid: undefined, form: "index_unknown" });
    expect(matchDeviceId(GPU0)).toEqual({ uuid: GPU0, form: "uuid" });
  });

  it("isGpuUuid accepts whole uuids only", () => {
    expect(isGpuUuid(GPU0)).toBe(true);
    expect(isGpuUuid(MIG)).toBe(true);
    expect(isGpuUuid(LEGACY_MIG)).toBe(true);
    expect(isGpuUuid(`${GPU0}::1`)).toBe(false);
    expect(isGpuUuid("0")).toBe(false);
    expect(isGpuUuid(`${GPU0}\n`)).toBe(false);
  });
});
