/**
 * Owners end to end, as a node tells them: one host per GPU source (the fake nvidia-smi and
 * NVML through the stub libnvidia-ml.so, driven by the same scenario), each with
 *
 *   GPU 0  nothing running, allocated to pod ml/trainer-0 by the kubelet (a server speaking
 *          the real pod-resources API over a unix socket)          → held_idle, the pod
 *   GPU 1  nothing running, allocated to Slurm job 4242 of alice (a job mapping file, as a
 *          prolog writes it)                                     → held_idle, the job
 *   GPU 2  bob's python3 holding 30 GiB and spinning, no scheduler (its owner from the host
 *          root's /proc and /etc/passwd)                         → busy_phantom, bob
 *   GPU 3  nothing                                               → free_idle, no owner
 *
 * agent subprocesses → collector subprocess over real gRPC → a real Prometheus and a real
 * InfluxDB → `trueidle report` as a subprocess. Each GPU's state and owners are checked at
 * every step, and the seconds agree across them: Prometheus's counters, the InfluxDB points
 * and the report's figures are the same sums, the hourly roll-up included.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rollup } from "../../collector/influx/schema.js";
import { fakeUuid } from "../../agent/sim/scenario.js";
import { eventually } from "../helpers/eventually.js";
import { GPU_SOURCES } from "../helpers/gpu-sources.js";
import { FakeHostRoot } from "../helpers/host-root.js";
import { influxQuery, startInfluxd, type PrivateInfluxd } from "../helpers/influxdb.js";
import { gpuPod, PodResourcesServer } from "../helpers/pod-resources-server.js";
import { freePort } from "../helpers/ports.js";
import { startPrometheus, type PrometheusHandle } from "../helpers/prometheus.js";
import { runTrueidle, startTrueidle, type TrueidleProcess } from "../helpers/trueidle-process.js";

const BOB_PID = 31337;
const STATES = ["held_idle", "held_idle", "busy_phantom", "free_idle"];
const SCENARIO_GPUS = [
  { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "free_idle" }] },
  { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "free_idle" }] },
  {
    model: "NVIDIA H100 80GB HBM3",
    phases: [
      { for: "1h", state: "busy_phantom", processes: [{ pid: BOB_PID, name: "python3", usedMiB: 30_000, smUtil: 0 }] },
    ],
  },
  { model: "NVIDIA H100 80GB HBM3", phases: [{ for: "1h", state: "free_idle" }] },
];

/** What each GPU's owner is, as label values (namespace, pod, container, job, user). */
const OWNERS: Array<Record<string, string> | undefined> = [
  { namespace: "ml", pod: "trainer-0", container: "main", job: "", user: "" },
  { namespace: "", pod: "", container: "", job: "4242", user: "alice" },
  { namespace: "", pod: "", container: "", job: "", user: "bob" },
  undefined,
];

interface Host {
  name: string;
  uuids: string[];
  kubelet: PodResourcesServer;
  root: FakeHostRoot;
  agent: TrueidleProcess;
}

describe("owners: agents → collector → Prometheus, InfluxDB and the report", () => {
  let dir: string;
  let influx: PrivateInfluxd;
  let prom: PrometheusHandle;
  let collector: TrueidleProcess;
  const hosts: Host[] = [];
  const db = "trueidle";
  let startedMs: number;

  beforeAll(async () => {
    startedMs = Date.now();
    dir = mkdtempSync(path.join(tmpdir(), "trueidle-owners-e2e-"));
    influx = await startInfluxd();
    const grpcPort = await freePort();
    const httpPort = await freePort();
    collector = startTrueidle([
      "collector",
      "--plaintext",
      "--grpc-listen",
      `127.0.0.1:${grpcPort}`,
      "--http-listen",
      `127.0.0.1:${httpPort}`,
      "--influx-url",
      `${influx.url}/${db}`,
      "--log-level",
      "warn",
    ]);
    prom = await startPrometheus({ scrapeTargets: [`127.0.0.1:${httpPort}`], scrapeIntervalMs: 1000 });
    for (const kind of GPU_SOURCES) {
      const name = `own-${kind.name}`;
      const hostDir = path.join(dir, name);
      mkdirSync(hostDir);
      const uuids = SCENARIO_GPUS.map((_, i) => fakeUuid(name, i));
      const kubelet = await PodResourcesServer.start({ pods: [gpuPod("ml", "trainer-0", "main", [uuids[0]!])] });
      const root = await FakeHostRoot.create();
      await root.addProcess({
        pid: BOB_PID,
        comm: "python3",
        uid: 1001,
        cgroup: "0::/user.slice/user-1001.slice/session-4.scope\n",
      });
      // The prolog's file for GPU 1: the job and its user's uid (alice is 1000 in the host's passwd).
      const mapping = path.join(hostDir, "job-mapping");
      mkdirSync(mapping);
      writeFileSync(path.join(mapping, "1"), "4242 1000\n");
      const src = kind.prepare(hostDir, { host: name, driverVersion: "550.90.07", gpus: SCENARIO_GPUS });
      const agent = startTrueidle(
        [
          "agent",
          "--plaintext",
          ...src.flags,
          "--collector",
          `127.0.0.1:${grpcPort}`,
          "--hostname",
          name,
          "--label",
          "site=lab-a",
          "--pod-resources-socket",
          kubelet.socketPath,
          "--job-mapping-dir",
          mapping,
          "--host-root",
          root.root,
          "--interval",
          "1s",
          "--window",
          "2s",
          "--log-level",
          "warn",
        ],
        src.env,
      );
      hosts.push({ name, uuids, kubelet, root, agent });
    }
  }, 120_000);

  afterAll(async () => {
    await Promise.all(hosts.map((h) => h.agent.stop()));
    await collector?.stop();
    await prom?.stop();
    await influx?.stop();
    for (const h of hosts) {
      await h.kubelet.stop();
      await h.root.cleanup();
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("Prometheus: every GPU in its state, the owners of the held ones, none for the free one", async () => {
    const total = hosts.length * STATES.length;
    // The first windows may come before the kubelet's and the mapping's first answers (the
    // agent never waits for them): wait for the states the owners make.
    const statesOf = (r: Array<{ metric: Record<string, string> }>, host: string): string[] =>
      r
        .filter((s) => s.metric["host"] === host)
        .sort((a, b) => Number(a.metric["gpu"]) - Number(b.metric["gpu"]))
        .map((s) => s.metric["state"]!);
    const current = await prom.waitFor(
      "trueidle_gpu_state == 1",
      (r) => r.length === total && hosts.every((h) => statesOf(r, h.name).join() === STATES.join()),
      90_000,
    );
    const owners = await prom.waitFor("trueidle_gpu_owner_info", (r) => r.length === hosts.length * 3, 60_000);
    for (const h of hosts) {
      expect(statesOf(current, h.name), `states of ${h.name}`).toEqual(STATES);
      for (let i = 0; i < OWNERS.length; i++) {
        const got = owners.filter((s) => s.metric["host"] === h.name && s.metric["gpu"] === String(i));
        const want = OWNERS[i];
        if (want === undefined) {
          expect(got, `owners of ${h.name} GPU ${i}`).toEqual([]);
          continue;
        }
        expect(got, `owners of ${h.name} GPU ${i}`).toHaveLength(1);
        const { __name__: _n, instance: _i, job: _j, exported_job: exportedJob, ...labels } = got[0]!.metric;
        // Prometheus keeps its own `job` label and renames the series' one to exported_job;
        // an empty label is no label to it.
        const blank = { namespace: "", pod: "", container: "", user: "" };
        expect({ ...blank, ...labels, job: exportedJob ?? "" }, `owner of ${h.name} GPU ${i}`).toEqual({
          host: h.name,
          gpu: String(i),
          uuid: h.uuids[i],
          ...want,
        });
      }
    }
    // Each owner's seconds are in the state of the GPU it holds.
    const byOwner = await prom.query(
      "sum by (namespace, pod, exported_job, user, state) (trueidle_owner_state_seconds_total) > 0",
    );
    const key = (m: Record<string, string>): string =>
      `${m["namespace"] ?? ""}/${m["pod"] ?? ""}/${m["exported_job"] ?? ""}/${m["user"] ?? ""}`;
    expect(new Map(byOwner.map((s) => [key(s.metric), s.metric["state"]]))).toEqual(
      new Map([
        ["ml/trainer-0//", "held_idle"],
        ["//4242/alice", "held_idle"],
        ["///bob", "busy_phantom"],
      ]),
    );
  });

  it("InfluxDB, Prometheus and the report agree on each owner's seconds, raw and rolled up", async () => {
    // Enough windows, then the agents stop (flushing their last windows) and the collector
    // has written everything it acknowledged.
    await prom.waitFor(
      'min(trueidle_owner_state_seconds_total{state="held_idle"} > 0)',
      (r) => (r[0]?.value ?? 0) >= 8,
      60_000,
    );
    await Promise.all(hosts.map((h) => h.agent.stop()));
    const ownerSums = async (): Promise<Map<string, Record<string, number>>> => {
      const res = await influxQuery(
        influx.url,
        'SELECT sum("observed_s") AS observed_s, sum("held_idle_s") AS held_idle_s, sum("busy_phantom_s") AS busy_phantom_s, ' +
          'sum("free_idle_s") AS free_idle_s, sum("reported_idle_s") AS reported_idle_s FROM "gpu_owner_window" GROUP BY "namespace", "pod", "job", "user"',
        db,
      );
      const out = new Map<string, Record<string, number>>();
      for (const s of res[0]?.series ?? []) {
        const t = s.tags ?? {};
        const v = Object.fromEntries(s.columns.map((c, i) => [c, s.values![0]![i] as number]));
        out.set(`${t["namespace"] ?? ""}/${t["pod"] ?? ""}/${t["job"] ?? ""}/${t["user"] ?? ""}`, v);
      }
      return out;
    };
    // Prometheus's counters, once a scrape has seen the last window.
    const influxOwners = await eventually(
      "every window in InfluxDB and scraped",
      async () => {
        const inInflux = await ownerSums();
        const scraped = await prom.query(
          'sum by (namespace, pod, exported_job, user) (trueidle_owner_state_seconds_total{state=~"held_idle|busy_phantom"})',
        );
        const promMap = new Map(
          scraped.map((s) => [
            `${s.metric["namespace"] ?? ""}/${s.metric["pod"] ?? ""}/${s.metric["exported_job"] ?? ""}/${s.metric["user"] ?? ""}`,
            s.value,
          ]),
        );
        if (inInflux.size !== 3 || promMap.size !== 3) return undefined;
        for (const [k, v] of inInflux)
          if (Math.abs((promMap.get(k) ?? -1) - (v["held_idle_s"]! + v["busy_phantom_s"]!)) > 1e-9) return undefined;
        return inInflux;
      },
      60_000,
      500,
    );

    // Against the scenario (the same pod, job and user on both hosts): each owner held its
    // GPUs idle the whole time it held them.
    // An allocated GPU with nothing on it is held only while its allocation is known, and
    // then its owner holds it: the owner's seconds are the GPU's held seconds, exactly. A
    // process holds its GPU from the first sample; its owner is named once looked up.
    const gpuSum = async (field: string, gpu: number): Promise<number> => {
      const r = await influxQuery(
        influx.url,
        `SELECT sum("${field}") AS s FROM "gpu_window" WHERE "gpu" = '${gpu}'`,
        db,
      );
      return r[0]!.series![0]!.values![0]![1] as number;
    };
    const pod = influxOwners.get("ml/trainer-0//")!;
    expect(pod["held_idle_s"]).toBe(pod["observed_s"]);
    expect(pod["observed_s"]).toBeCloseTo(await gpuSum("held_idle_s", 0), 9);
    expect(pod["reported_idle_s"]).toBe(pod["observed_s"]); // the usual tools: idle too
    const job = influxOwners.get("//4242/alice")!;
    expect(job["held_idle_s"]).toBe(job["observed_s"]);
    expect(job["observed_s"]).toBeCloseTo(await gpuSum("held_idle_s", 1), 9);
    const bob = influxOwners.get("///bob")!;
    expect(bob["busy_phantom_s"]).toBe(bob["observed_s"]);
    expect(bob["observed_s"]).toBeGreaterThan(0);
    expect(bob["observed_s"]).toBeLessThanOrEqual(await gpuSum("busy_phantom_s", 2));
    expect(bob["reported_idle_s"]).toBe(0); // the usual tools call bob's GPU busy
    for (const o of influxOwners.values()) expect(o["free_idle_s"]).toBe(0);

    // The report, as a planner runs it, by owner and mixed with a label.
    const since = new Date(Math.floor(startedMs / 3_600_000) * 3_600_000).toISOString();
    const until = new Date((Math.floor(Date.now() / 3_600_000) + 1) * 3_600_000).toISOString();
    const report = async (by: string, measurement = "auto"): Promise<ReportJson> => {
      const out = path.join(dir, `r-${by}-${measurement}.json`);
      const r = await runTrueidle([
        "report",
        "--influx-url",
        `${influx.url}/${db}`,
        "--since",
        since,
        "--until",
        until,
        "--by",
        by,
        "--measurement",
        measurement,
        "--format",
        "json",
        "--out",
        out,
      ]);
      expect(r.code, r.output).toBe(0);
      return JSON.parse(readFileSync(out, "utf8")) as ReportJson;
    };
    const byNs = await report("namespace,pod");
    expect(byNs.subject).toBe("owners");
    const ml = byNs.groups.find((g) => g.key["namespace"] === "ml")!;
    expect(ml.key).toEqual({ namespace: "ml", pod: "trainer-0" });
    expect(ml["gpus"]).toBe(2);
    expect(ml["gpu_hours_observed"]).toBeCloseTo(pod["observed_s"]! / 3600, 9);
    expect(ml["held_idle_gpu_hours"]).toBeCloseTo(pod["held_idle_s"]! / 3600, 9);
    expect(ml["real_idle_pct"]).toBeCloseTo(100, 9);
    const byUser = await report("site,user");
    expect(byUser.groups.map((g) => [g.key["site"], g.key["user"]])).toEqual([
      ["lab-a", ""],
      ["lab-a", "alice"],
      ["lab-a", "bob"],
    ]);
    const bobRow = byUser.groups.find((g) => g.key["user"] === "bob")!;
    expect(bobRow["phantom_busy_gpu_hours"]).toBeCloseTo(bob["busy_phantom_s"]! / 3600, 9);
    expect(bobRow["reported_idle_pct"]).toBe(0);
    expect(bobRow["hidden_idle_pct"]).toBeCloseTo(100, 9);

    // Every report, by any key, says who holds idle GPUs: the three owners, most idle first.
    const byModel = await report("model");
    expect(byModel.subject).toBe("gpus");
    expect(byModel.holders.tags).toEqual(["namespace", "pod", "job", "user"]);
    const holders = new Map(byModel.holders.owners.map((o) => [o.label, o]));
    expect([...holders.keys()].sort()).toEqual(["job 4242, user alice", "ml/trainer-0", "user bob"]);
    expect(holders.get("ml/trainer-0")!["real_idle_gpu_hours"]).toBeCloseTo(pod["observed_s"]! / 3600, 9);
    expect(holders.get("user bob")!["phantom_busy_gpu_hours"]).toBeCloseTo(bob["busy_phantom_s"]! / 3600, 9);
    expect(holders.get("job 4242, user alice")!["gpus"]).toBe(2);

    // The hourly roll-up (the continuous query's own SELECT, run now) gives the same report.
    const fromMs = Date.parse(since);
    await rollup({ baseUrl: influx.url, database: db }, fromMs, Date.parse(until));
    const rolled = await report("namespace,pod", "gpu_hour");
    expect(rolled.measurement).toBe("gpu_hour");
    const mlRolled = rolled.groups.find((g) => g.key["namespace"] === "ml")!;
    expect(mlRolled["gpu_hours_observed"]).toBeCloseTo(ml["gpu_hours_observed"] as number, 9);
    expect(mlRolled["held_idle_gpu_hours"]).toBeCloseTo(ml["held_idle_gpu_hours"] as number, 9);

    const table = await runTrueidle([
      "report",
      "--influx-url",
      `${influx.url}/${db}`,
      "--since",
      since,
      "--until",
      until,
      "--by",
      "namespace",
    ]);
    expect(table.code, table.output).toBe(0);
    expect(table.output).toMatch(/^NAMESPACE\s+GPUS\s/m);
    expect(table.output).toMatch(/^ml\s+2\s/m);
    expect(table.output).toMatch(/^all owners\s/m);
    expect(table.output).toMatch(/^Who holds idle GPUs \(owners by idle GPU-hours held\):$/m);
    expect(table.output).toMatch(/^ml\/trainer-0\s+2\s/m);
  }, 180_000);
});

interface ReportJson {
  subject: string;
  measurement: string;
  groups: Array<Record<string, unknown> & { key: Record<string, string> }>;
  holders: { tags: string[]; owners: Array<Record<string, number> & { label: string }> };
}
