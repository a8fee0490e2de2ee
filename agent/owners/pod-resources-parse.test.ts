import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  AllocatableResourcesResponseSchema,
  ListPodResourcesResponseSchema,
} from "../../gen/k8s.io/kubelet/pkg/apis/podresources/v1/api_pb.js";
import { allocatableGpus, allocationsFromList, isNvidiaGpuResource } from "./pod-resources-parse.js";

const GPU0 = "GPU-0a1b2c3d-0000-1111-2222-333344445555";
const GPU1 = "GPU-9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff";
const opts = { maxOwnersPerGpu: 16 };

describe("isNvidiaGpuResource", () => {
  it.each(["nvidia.com/gpu", "nvidia.com/gpu.shared", "nvidia.com/mig-1g.10gb", "nvidia.com/mig-3g.40gb.shared"])(
    "%s is a GPU",
    (n) => {
      expect(isNvidiaGpuResource(n)).toBe(true);
    },
  );
  it.each(["nvidia.com/gpu-x", "amd.com/gpu", "example.com/nic", "cpu", ""])("%s is not", (n) => {
    expect(isNvidiaGpuResource(n)).toBe(false);
  });
  it("takes the site's own names", () => {
    expect(isNvidiaGpuResource("example.com/a100", ["example.com/a100"])).toBe(true);
  });
});

describe("allocationsFromList", () => {
  it("ignores other devices, lists a container once per GPU, and takes extra resource names", () => {
    const resp = create(ListPodResourcesResponseSchema, {
      podResources: [
        {
          namespace: "ml",
          name: "p",
          containers: [
            {
              name: "a",
              devices: [
                { resourceName: "nvidia.com/gpu", deviceIds: [`${GPU0}::0`, `${GPU0}::1`] },
                { resourceName: "example.com/nic", deviceIds: [GPU1] },
              ],
            },
            { name: "b", devices: [{ resourceName: "example.com/a100", deviceIds: [GPU1] }], cpuIds: [3n, 4n] },
          ],
        },
      ],
    });
    const r = allocationsFromList(resp, { ...opts, extraResourceNames: ["example.com/a100"] });
    expect(r.byGpu).toEqual(
      new Map([
        [GPU0, [{ via: "pod_resources", namespace: "ml", pod: "p", container: "a" }]],
        [GPU1, [{ via: "pod_resources", namespace: "ml", pod: "p", container: "b" }]],
      ]),
    );
    expect(r.matched).toEqual({ time_sliced: 2, uuid: 1 });
    expect(r.rejected.size).toBe(0);
  });

  it("counts GPUs claimed through DRA, which name no uuid here", () => {
    const resp = create(ListPodResourcesResponseSchema, {
      podResources: [
        {
          namespace: "ml",
          name: "p",
          containers: [
            {
              name: "c",
              dynamicResources: [
                {
                  claimName: "gpu-claim",
                  claimNamespace: "ml",
                  claimResources: [
                    {
                      driverName: "gpu.nvidia.com",
                      poolName: "node-a",
                      deviceName: "gpu-0",
                      cdiDevices: [{ name: "k8s.gpu.nvidia.com/device=gpu-0" }],
                    },
                  ],
                },
              ],
            },
          ],
        },
      ],
    });
    const r = allocationsFromList(resp, opts);
    expect(r.byGpu.size).toBe(0);
    expect(r.rejected.get("dra")).toEqual({ count: 1, example: "ml/gpu-claim node-a/gpu-0" });
  });

  it("keeps an allocation whose names cannot be shown, without the names", () => {
    const resp = create(ListPodResourcesResponseSchema, {
      podResources: [
        {
          namespace: "ml",
          name: "bad\u202ename",
          containers: [{ name: "c", devices: [{ resourceName: "nvidia.com/gpu", deviceIds: [GPU0] }] }],
        },
      ],
    });
    const r = allocationsFromList(resp, opts);
    expect(r.byGpu.get(GPU0)).toEqual([{ via: "pod_resources", namespace: "ml", pod: undefined, container: "c" }]);
    expect(r.rejected.get("bad_name")?.count).toBe(1);
  });
});

describe("allocatableGpus", () => {
  it("lists the GPUs the kubelet can allocate and counts forms it cannot match", () => {
    const resp = create(AllocatableResourcesResponseSchema, {
      devices: [
        { resourceName: "nvidia.com/gpu", deviceIds: [`${GPU0}::0`, `${GPU0}::1`, GPU1, "3:0"] },
        { resourceName: "example.com/nic", deviceIds: ["eth0"] },
      ],
      cpuIds: [0n, 1n],
    });
    const r = allocatableGpus(resp, {});
    expect([...r.gpus]).toEqual([GPU0, GPU1]);
    expect(r.rejected.get("mig_index")?.count).toBe(1);
  });
});
