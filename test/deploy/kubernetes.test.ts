/**
 * deploy/kubernetes, rendered and checked:
 *
 * - the base and the example overlay render (test/helpers/kustomize.ts: the Kustomize subset
 *   they use, with Kustomize's ConfigMap names) and every object, and every example Secret,
 *   validates against the Kubernetes 1.33 OpenAPI schemas (kubernetes-models) or, for the
 *   Prometheus Operator's objects, against their CRD schemas
 *   (@kubernetes-models/prometheus-operator);
 * - every file reads the same as YAML 1.1 (kubectl) and YAML 1.2;
 * - what links the objects holds: ConfigMaps, Secrets and their keys, ports, probes, Service
 *   and monitor selectors, the files that TRUEIDLE_* settings name, and every TRUEIDLE_*
 *   variable is a flag (or documented secret variable) of the binary that gets it, read from
 *   `trueidle agent --help` and `trueidle collector --help`;
 * - the PrometheusRule carries exactly the groups of deploy/prometheus's rule files, and the
 *   ServiceMonitor gives the job label those rules expect;
 * - the example overlay's collector and agent, with the environment their pods get (test
 *   certificates for the Secrets' files, loopback ports), start, connect over mutual TLS
 *   with the example token through a dns:///NAME:PORT target, and answer their probes; the
 *   agent keeps the default `--source auto` and runs twice, once with only nvidia-smi (the
 *   fake) and once with only libnvidia-ml.so.1 (the stub, NVML), as the NVIDIA runtime's
 *   `utility` capability mounts both, and the collector sees the same GPU states each time.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import ts from "typescript";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import YAML from "yaml";
import { Namespace, ConfigMap, Secret, Service } from "kubernetes-models/v1";
import { DaemonSet, Deployment } from "kubernetes-models/apps/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import {
  PodMonitor,
  PrometheusRule,
  ServiceMonitor,
} from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import { makeTestCerts, type TestCerts } from "../helpers/certs.js";
import { parseExposition } from "../helpers/exposition.js";
import { GPU_C01_STEADY_STATES, GPU_SOURCES, gpuStatesOf, pick } from "../helpers/gpu-sources.js";
import { containersOf, loadYamlDocuments, renderKustomization, type K8sObject } from "../helpers/kustomize.js";
import { freePort } from "../helpers/ports.js";
import { REPO_ROOT, TRUEIDLE_BIN, startTrueidle, type TrueidleProcess } from "../helpers/trueidle-process.js";

const run = promisify(execFile);
const K8S = path.join(REPO_ROOT, "deploy", "kubernetes");
const BASE = path.join(K8S, "base");
const OVERLAY = path.join(K8S, "overlays", "example");
const SECRETS = path.join(K8S, "secrets");

// biome-ignore lint/suspicious/noExplicitAny: rendered manifests are walked by path, as kubectl does
type Obj = Record<string, any>;
type Validating = new (data: unknown) => { validate(): void };

/** The schema of every kind the manifests may contain; any other kind fails the test. */
const MODELS: Record<string, Validating> = {
  "v1/Namespace": Namespace as unknown as Validating,
  "v1/ConfigMap": ConfigMap as unknown as Validating,
  "v1/Secret": Secret as unknown as Validating,
  "v1/Service": Service as unknown as Validating,
  "apps/v1/DaemonSet": DaemonSet as unknown as Validating,
  "apps/v1/Deployment": Deployment as unknown as Validating,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget as unknown as Validating,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor as unknown as Validating,
  "monitoring.coreos.com/v1/PodMonitor": PodMonitor as unknown as Validating,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule as unknown as Validating,
};

/** Where the TypeScript declaration of each kind lives (the same packages' types). */
const TYPES: Record<string, [string, string]> = {
  "v1/Namespace": ["kubernetes-models/v1/Namespace", "INamespace"],
  "v1/ConfigMap": ["kubernetes-models/v1/ConfigMap", "IConfigMap"],
  "v1/Secret": ["kubernetes-models/v1/Secret", "ISecret"],
  "v1/Service": ["kubernetes-models/v1/Service", "IService"],
  "apps/v1/DaemonSet": ["kubernetes-models/apps/v1/DaemonSet", "IDaemonSet"],
  "apps/v1/Deployment": ["kubernetes-models/apps/v1/Deployment", "IDeployment"],
  "policy/v1/PodDisruptionBudget": ["kubernetes-models/policy/v1/PodDisruptionBudget", "IPodDisruptionBudget"],
  "monitoring.coreos.com/v1/ServiceMonitor": [
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor",
    "IServiceMonitor",
  ],
  "monitoring.coreos.com/v1/PodMonitor": [
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor",
    "IPodMonitor",
  ],
  "monitoring.coreos.com/v1/PrometheusRule": [
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule",
    "IPrometheusRule",
  ],
};

/**
 * The schemas allow fields they do not know (as the API server's non-strict decoding does),
 * so a misspelt field would pass them silently. TypeScript's excess-property check on the
 * objects, typed with the same packages' declarations, finds those: each object becomes a
 * typed constant in a virtual source file compiled with the project's tsconfig.
 */
function unknownFields(objs: K8sObject[]): string[] {
  const file = path.join(REPO_ROOT, "test", "deploy", "kubernetes-strict.virtual.ts");
  const used = [...new Set(objs.map((o) => `${o.apiVersion}/${o.kind}`))];
  const lines = used.map((k, i) => `import type { ${TYPES[k]![1]} as T${i} } from "${TYPES[k]![0]}";`);
  const first = lines.length;
  for (const [i, o] of objs.entries())
    lines.push(`export const o${i}: T${used.indexOf(`${o.apiVersion}/${o.kind}`)} = ${JSON.stringify(o)};`);
  const source = lines.join("\n");
  const config = ts.parseJsonConfigFileContent(
    ts.readConfigFile(path.join(REPO_ROOT, "tsconfig.json"), ts.sys.readFile).config,
    ts.sys,
    REPO_ROOT,
  );
  const options = { ...config.options, noEmit: true };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (f, language, ...rest) =>
    f === file ? ts.createSourceFile(f, source, language) : getSourceFile(f, language, ...rest);
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (f) => f === file || fileExists(f);
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program, program.getSourceFile(file)).map((d) => {
    const { line, character } = d.file!.getLineAndCharacterOfPosition(d.start ?? 0);
    const o = objs[line - first];
    const where = o
      ? `${o.kind}/${o.metadata.name} near ${lines[line]!.slice(Math.max(0, character - 60), character + 40)}`
      : `line ${line}`;
    return `${where}: ${ts.flattenDiagnosticMessageText(d.messageText, "\n")}`;
  });
}

interface Flags {
  /** TRUEIDLE_<FLAG> of every flag. */
  env: Set<string>;
  defaults: Map<string, string>;
  help: string;
}

async function flagsOf(command: "agent" | "collector"): Promise<Flags> {
  const { stdout } = await run(process.execPath, [TRUEIDLE_BIN, command, "--help"], { cwd: REPO_ROOT });
  const env = new Set<string>();
  const defaults = new Map<string, string>();
  // A flag's line, and its description (on the next line when the name is long).
  const lines = stdout.split("\n");
  lines.forEach((line, i) => {
    const m = /^ {2}--([a-z][a-z0-9.-]*)/.exec(line);
    if (!m) return;
    const name = `TRUEIDLE_${m[1]!.toUpperCase().replace(/[-.]/g, "_")}`;
    env.add(name);
    const d = /\[default: ([^\]]+)\]/.exec(line) ?? /^ {10,}.*\[default: ([^\]]+)\]/.exec(lines[i + 1] ?? "");
    if (d) defaults.set(name, d[1]!);
  });
  return { env, defaults, help: stdout };
}

const find = (objs: K8sObject[], kind: string, name: string): Obj => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind}/${name} among ${objs.map((x) => `${x.kind}/${x.metadata.name}`).join(", ")}`);
  return o as Obj;
};
const matches = (selector: Record<string, string>, labels: Record<string, string> | undefined): boolean =>
  Object.entries(selector).every(([k, v]) => labels?.[k] === v);
const portOf = (hostPort: string): number => Number(hostPort.slice(hostPort.lastIndexOf(":") + 1));

/** The settings a container sees: its ConfigMap's data, then its own env values. */
function settingsOf(objs: K8sObject[], container: Obj): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of container["envFrom"] ?? []) {
    for (const [k, v] of Object.entries(find(objs, "ConfigMap", e.configMapRef.name)["data"] as Record<string, string>))
      out.set(k, v);
  }
  for (const e of container["env"] ?? []) if (e.value !== undefined) out.set(e.name, e.value);
  return out;
}

const secretObjects = (): K8sObject[] =>
  readdirSync(SECRETS)
    .filter((f) => f.endsWith(".example.yaml"))
    .flatMap((f) => loadYamlDocuments(path.join(SECRETS, f)));

const secretKeys = (s: Obj): string[] => [...Object.keys(s["stringData"] ?? {}), ...Object.keys(s["data"] ?? {})];

let agentFlags: Flags;
let collectorFlags: Flags;

beforeAll(async () => {
  [agentFlags, collectorFlags] = await Promise.all([flagsOf("agent"), flagsOf("collector")]);
});

describe.each([
  ["base", BASE],
  ["example overlay", OVERLAY],
])("deploy/kubernetes %s", (_name, dir) => {
  const objs = renderKustomization(dir);
  const agent = (): Obj => find(objs, "DaemonSet", "trueidle-agent");
  const collector = (): Obj => find(objs, "Deployment", "trueidle-collector");
  const agentContainer = (): Obj => agent()["spec"].template.spec.containers.find((c: Obj) => c["name"] === "agent");
  const collectorContainer = (): Obj =>
    collector()["spec"].template.spec.containers.find((c: Obj) => c["name"] === "collector");

  it("renders objects that each validate against their Kubernetes or CRD schema", () => {
    expect(objs.map((o) => `${o.kind}/${o.metadata.name.replace(/-[a-z0-9]{10}$/, "-<hash>")}`).sort()).toEqual([
      "ConfigMap/trueidle-agent-<hash>",
      "ConfigMap/trueidle-collector-<hash>",
      "DaemonSet/trueidle-agent",
      "Deployment/trueidle-collector",
      "Namespace/trueidle",
      "PodDisruptionBudget/trueidle-collector",
      "PodMonitor/trueidle-agent",
      "PrometheusRule/trueidle",
      "Service/trueidle-collector",
      "Service/trueidle-collector-headless",
      "ServiceMonitor/trueidle-collector",
    ]);
    for (const o of objs) {
      const Model = MODELS[`${o.apiVersion}/${o.kind}`];
      expect(Model, `${o.apiVersion} ${o.kind} has a schema in this test`).toBeDefined();
      expect(() => new Model!(o).validate(), `${o.kind}/${o.metadata.name}`).not.toThrow();
      if (o.kind !== "Namespace")
        expect(o.metadata.namespace, `${o.kind}/${o.metadata.name} namespace`).toBe("trueidle");
    }
  });

  it("has no field that the Kubernetes and Prometheus Operator types lack", () => {
    expect(unknownFields(objs)).toEqual([]);
  });

  it("gives each binary only settings it has, from files and Secrets that exist", () => {
    const secrets = secretObjects();
    const cases: Array<[Obj, Obj, Flags]> = [
      [agent(), agentContainer(), agentFlags],
      [collector(), collectorContainer(), collectorFlags],
    ];
    for (const [workload, container, flags] of cases) {
      const pod = workload["spec"].template.spec;
      const settings = settingsOf(objs, container);
      for (const name of settings.keys()) {
        if (name.startsWith("NVIDIA_")) continue;
        expect(flags.env, `${workload["kind"]} setting ${name}`).toContain(name);
      }
      for (const e of container["env"] ?? []) {
        if (e.value !== undefined) continue;
        const ref = e.valueFrom?.secretKeyRef;
        if (ref) {
          // Secret-only variables are named in --help (TRUEIDLE_TOKEN, TRUEIDLE_AGENT_TOKENS, ...).
          expect(
            flags.env.has(e.name) || flags.help.includes(e.name),
            `${e.name} is read by the ${workload["kind"]}`,
          ).toBe(true);
          const secret = find(secrets, "Secret", ref.name);
          expect(secretKeys(secret), `Secret ${ref.name}`).toContain(ref.key);
        } else {
          expect(flags.env, `${workload["kind"]} env ${e.name}`).toContain(e.name);
          expect(e.valueFrom?.fieldRef, `${e.name} has a value`).toBeDefined();
        }
      }
      // A setting naming a file under a mounted Secret: the Secret has that key.
      const mounts: Obj[] = container["volumeMounts"];
      for (const [name, value] of settings) {
        if (!value.startsWith("/etc/trueidle/")) continue;
        const mount = mounts.find((m) => value.startsWith(`${m["mountPath"]}/`));
        expect(mount, `${name}=${value} lies in a mounted volume`).toBeDefined();
        const volume = (pod.volumes as Obj[]).find((v) => v["name"] === mount!["name"])!;
        expect(volume["secret"], `${name}: the volume at ${mount!["mountPath"]} is a Secret`).toBeDefined();
        const secret = find(secrets, "Secret", volume["secret"].secretName);
        expect(secretKeys(secret), `Secret ${volume["secret"].secretName} holds ${name}'s file`).toContain(
          value.slice(mount!["mountPath"].length + 1),
        );
      }
      // The root filesystem is read-only: state and spool directories are on volumes.
      for (const name of ["TRUEIDLE_STATE_DIR", "TRUEIDLE_SPOOL_DIR"]) {
        const value = settings.get(name);
        if (value === undefined) continue;
        const mount = mounts.find((m) => value === m["mountPath"] || value.startsWith(`${m["mountPath"]}/`));
        expect(mount && !mount["readOnly"], `${name}=${value} is on a writable volume`).toBe(true);
      }
      for (const c of containersOf(pod) as Obj[]) {
        expect(c["securityContext"]?.readOnlyRootFilesystem, `${c["name"]} read-only root`).toBe(true);
        expect(c["securityContext"]?.allowPrivilegeEscalation, `${c["name"]} no privilege escalation`).toBe(false);
        expect(c["resources"]?.requests?.cpu && c["resources"]?.limits?.memory, `${c["name"]} resources`).toBeTruthy();
      }
      for (const e of container["envFrom"])
        expect(e.configMapRef.name).toMatch(/^trueidle-(agent|collector)-[a-z0-9]{10}$/);
    }
  });

  it("runs the agent on GPU nodes only, as the node's name, with its buffer on the node", () => {
    const pod = agent()["spec"].template.spec;
    const c = agentContainer();
    const settings = settingsOf(objs, c);
    expect(pod.runtimeClassName).toBe("nvidia");
    expect(pod.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms).toEqual([
      { matchExpressions: [{ key: "nvidia.com/gpu.present", operator: "In", values: ["true"] }] },
    ]);
    expect(pod.tolerations).toContainEqual({ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" });
    expect(settings.get("NVIDIA_VISIBLE_DEVICES")).toBe("all");
    expect(settings.get("NVIDIA_DRIVER_CAPABILITIES")).toBe("utility");
    // No GPU is taken from the scheduler: the agent must see those that other pods use.
    expect(JSON.stringify(c["resources"])).not.toContain("nvidia.com/gpu");
    expect(c["env"]).toContainEqual({
      name: "TRUEIDLE_HOSTNAME",
      valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } },
    });
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
    // The agent drains for up to 5 s on SIGTERM (agent.stop); the pod gets well over that.
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(15);

    const stateDir = settings.get("TRUEIDLE_STATE_DIR")!;
    const mount = (c["volumeMounts"] as Obj[]).find((m) => m["mountPath"] === stateDir)!;
    const volume = (pod.volumes as Obj[]).find((v) => v["name"] === mount["name"])!;
    expect(volume["hostPath"]?.path).toMatch(/^\/var\/lib\/trueidle(\/|$)/);
    // The init container that hands the hostPath to the agent's user mounts the same volume.
    const init = pod.initContainers.find((i: Obj) => i["command"]?.[0] === "chown");
    expect(init.command).toEqual([
      "chown",
      `${pod.securityContext.runAsUser}:${pod.securityContext.runAsGroup}`,
      stateDir,
    ]);
    expect(init.volumeMounts).toContainEqual({ name: volume["name"], mountPath: stateDir });

    // Probes on /healthz at the port the agent listens on.
    const http = portOf(settings.get("TRUEIDLE_HTTP_LISTEN")!);
    expect((c["ports"] as Obj[]).find((p) => p["name"] === "http")?.containerPort).toBe(http);
    for (const probe of [c["readinessProbe"], c["livenessProbe"]])
      expect(probe.httpGet).toEqual({ path: "/healthz", port: "http" });
    if (dir === OVERLAY) expect(c["image"]).toBe("registry.example.internal/trueidle/agent:0.1.0");
  });

  it("points the agents at the collectors' headless Service and the Services at the collectors", () => {
    const pod = collector()["spec"].template.spec;
    const c = collectorContainer();
    const settings = settingsOf(objs, c);
    const listen = (name: string): number => portOf(settings.get(name) ?? collectorFlags.defaults.get(name)!);
    const ports = new Map((c["ports"] as Obj[]).map((p) => [p["name"] as string, p["containerPort"] as number]));
    expect(ports).toEqual(
      new Map([
        ["http", listen("TRUEIDLE_HTTP_LISTEN")],
        ["grpc", listen("TRUEIDLE_GRPC_LISTEN")],
      ]),
    );
    // The shipped ports are the binary's defaults (the images and docs use them).
    expect([ports.get("http"), ports.get("grpc")]).toEqual([9745, 9746].map((p) => p));
    expect(portOf(collectorFlags.defaults.get("TRUEIDLE_HTTP_LISTEN")!)).toBe(9745);
    expect(portOf(collectorFlags.defaults.get("TRUEIDLE_GRPC_LISTEN")!)).toBe(9746);
    for (const probe of [c["readinessProbe"], c["livenessProbe"]])
      expect(probe.httpGet).toEqual({ path: "/healthz", port: "http" });
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    if (dir === OVERLAY) {
      expect(collector()["spec"].replicas).toBe(3);
      expect(c["image"]).toBe("registry.example.internal/trueidle/collector:0.1.0");
    }

    const podLabels = collector()["spec"].template.metadata.labels;
    const svc = find(objs, "Service", "trueidle-collector");
    const headless = find(objs, "Service", "trueidle-collector-headless");
    expect(headless["spec"].clusterIP).toBe("None");
    for (const s of [svc, headless]) {
      expect(matches(s["spec"].selector, podLabels), `${s["metadata"].name} selects the collectors`).toBe(true);
      for (const p of s["spec"].ports)
        expect(ports.get(p.targetPort), `${s["metadata"].name} port ${p.name}`).toBe(p.port);
    }
    expect(matches(collector()["spec"].selector.matchLabels, podLabels)).toBe(true);
    expect(
      matches(find(objs, "PodDisruptionBudget", "trueidle-collector")["spec"].selector.matchLabels, podLabels),
    ).toBe(true);
    expect(matches(agent()["spec"].selector.matchLabels, agent()["spec"].template.metadata.labels)).toBe(true);

    const grpc = headless["spec"].ports.find((p: Obj) => p["name"] === "grpc").port;
    const agentSettings = settingsOf(objs, agentContainer());
    expect(agentSettings.get("TRUEIDLE_COLLECTOR")).toBe(
      `dns:///${headless["metadata"].name}.${headless["metadata"].namespace}.svc:${grpc}`,
    );
  });

  it("scrapes every collector as job trueidle-collector and every agent as job trueidle-agent", () => {
    const services = objs.filter((o) => o.kind === "Service") as Obj[];
    const sm = find(objs, "ServiceMonitor", "trueidle-collector");
    const selected = services.filter((s) => matches(sm["spec"].selector.matchLabels, s["metadata"].labels));
    // One Service only: the headless one would scrape every collector a second time.
    expect(selected.map((s) => s["metadata"].name)).toEqual(["trueidle-collector"]);
    expect(selected[0]!["metadata"].labels[sm["spec"].jobLabel]).toBe("trueidle-collector");
    const alerts = readFileSync(path.join(REPO_ROOT, "deploy", "prometheus", "trueidle-alerts.yml"), "utf8");
    expect(alerts).toContain('up{job="trueidle-collector"}');
    for (const e of sm["spec"].endpoints) {
      expect(selected[0]!["spec"].ports.map((p: Obj) => p["name"])).toContain(e.port);
      expect(e.path).toBe("/metrics");
    }

    const pm = find(objs, "PodMonitor", "trueidle-agent");
    const agentLabels = agent()["spec"].template.metadata.labels;
    expect(matches(pm["spec"].selector.matchLabels, agentLabels)).toBe(true);
    expect(agentLabels[pm["spec"].jobLabel]).toBe("trueidle-agent");
    const scrape = YAML.parse(readFileSync(path.join(REPO_ROOT, "deploy", "prometheus", "prometheus.yml"), "utf8"));
    expect(scrape.scrape_configs.map((j: Obj) => j["job_name"])).toEqual(["trueidle-collector", "trueidle-agent"]);
    for (const e of pm["spec"].podMetricsEndpoints)
      expect(agentContainer()["ports"].map((p: Obj) => p["name"])).toContain(e.port);
    if (dir === OVERLAY) {
      for (const o of [sm, pm, find(objs, "PrometheusRule", "trueidle")])
        expect(o["metadata"].labels.release).toBe("kube-prometheus-stack");
    }
  });

  it("carries exactly the groups of deploy/prometheus's rule files in its PrometheusRule", () => {
    const groups = ["trueidle-rules.yml", "trueidle-alerts.yml"].flatMap(
      (f) => YAML.parse(readFileSync(path.join(REPO_ROOT, "deploy", "prometheus", f), "utf8")).groups,
    );
    expect(groups.length).toBeGreaterThan(0);
    expect(find(objs, "PrometheusRule", "trueidle")["spec"].groups).toEqual(groups);
  });
});

describe("deploy/kubernetes files", () => {
  const files = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? files(path.join(dir, e.name)) : e.name.endsWith(".yaml") ? [path.join(dir, e.name)] : [],
    );

  it("read the same as YAML 1.1 (kubectl) and YAML 1.2", () => {
    const all = files(K8S);
    expect(all.length).toBeGreaterThan(8);
    for (const f of all) {
      const text = readFileSync(f, "utf8");
      const as = (version: "1.1" | "1.2"): unknown[] => YAML.parseAllDocuments(text, { version }).map((d) => d.toJS());
      expect(as("1.1"), path.relative(REPO_ROOT, f)).toEqual(as("1.2"));
    }
  });

  it("include example Secrets that validate and are not applied by the base", () => {
    const secrets = secretObjects();
    expect(secrets.map((s) => s.metadata.name).sort()).toEqual([
      "trueidle-agent-tls",
      "trueidle-agent-token",
      "trueidle-collector-tls",
      "trueidle-collector-tokens",
      "trueidle-influx",
    ]);
    expect(unknownFields(secrets)).toEqual([]);
    for (const s of secrets) {
      expect(() => new Secret(s as never).validate(), s.metadata.name).not.toThrow();
      expect(s.metadata.namespace).toBe("trueidle");
      for (const v of Object.values((s as Obj)["stringData"] as Record<string, string>))
        expect(v).toMatch(/REPLACE|^trueidle$/);
    }
    for (const dir of [BASE, OVERLAY]) expect(renderKustomization(dir).filter((o) => o.kind === "Secret")).toEqual([]);
  });
});

describe("the example overlay's collector and agent, run as processes", () => {
  const procs: TrueidleProcess[] = [];
  let certs: TestCerts;
  let tmp: string;
  beforeAll(() => {
    certs = makeTestCerts();
    tmp = mkdtempSync(path.join(tmpdir(), "trueidle-k8s-"));
  });
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop("SIGTERM", 5_000)));
    certs?.cleanup();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  /**
   * A container's environment as the kubelet builds it: the ConfigMap, its values, the
   * example Secrets' keys and the node's name; files in Secret volumes swapped for test
   * files, volumes for folders under `tmp`, listen addresses for free loopback ports.
   */
  function podEnv(
    objs: K8sObject[],
    workload: Obj,
    container: Obj,
    files: Record<string, string>,
    ports: Record<string, string>,
  ): Record<string, string> {
    const secrets = secretObjects();
    const pod = workload["spec"].template.spec;
    const env: Record<string, string> = Object.fromEntries(settingsOf(objs, container));
    for (const e of container["env"] ?? []) {
      const ref = e.valueFrom?.secretKeyRef;
      if (ref) env[e.name] = find(secrets, "Secret", ref.name)["stringData"][ref.key];
      if (e.valueFrom?.fieldRef)
        env[e.name] = { "spec.nodeName": "gpu-node-1" }[e.valueFrom.fieldRef.fieldPath as string]!;
    }
    for (const [name, value] of Object.entries(env)) {
      const mount = (container["volumeMounts"] as Obj[]).find(
        (m) => value === m["mountPath"] || value.startsWith(`${m["mountPath"]}/`),
      );
      if (!mount) continue;
      const volume = (pod.volumes as Obj[]).find((v) => v["name"] === mount["name"])!;
      const rest = value.slice(mount["mountPath"].length);
      if (volume["secret"]) {
        const file = files[`${volume["secret"].secretName}${rest}`];
        if (file === undefined)
          throw new Error(
            `${name}=${value}: no test file for Secret ${volume["secret"].secretName} key ${rest.slice(1)}`,
          );
        env[name] = file;
      } else {
        env[name] = path.join(tmp, `${workload["kind"]}-${volume["name"]}${rest}`);
      }
    }
    return { ...env, ...ports };
  }

  // Both sources run this whole check: it is the one place the manifests' agent reads GPUs.
  it.each(GPU_SOURCES)(
    "connect over mutual TLS with the example's token, answer their probes and label the GPUs (auto source, finding $name)",
    async (kind) => {
      const objs = renderKustomization(OVERLAY);
      const collector = find(objs, "Deployment", "trueidle-collector");
      const agent = find(objs, "DaemonSet", "trueidle-agent");
      const [grpc, http, agentHttp, influx] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);

      const collectorEnv = podEnv(
        objs,
        collector,
        collector["spec"].template.spec.containers[0],
        {
          "trueidle-collector-tls/tls.crt": certs.serverCert,
          "trueidle-collector-tls/tls.key": certs.serverKey,
          "trueidle-collector-tls/ca.crt": certs.caCert,
        },
        {
          TRUEIDLE_GRPC_LISTEN: `127.0.0.1:${grpc}`,
          TRUEIDLE_HTTP_LISTEN: `127.0.0.1:${http}`,
          // No InfluxDB listens there: windows go to the spool, as while InfluxDB is away.
          TRUEIDLE_INFLUX_URL: `http://127.0.0.1:${influx}/trueidle`,
        },
      );
      expect(collectorEnv["TRUEIDLE_SPOOL_DIR"]).toContain(tmp);
      const c = startTrueidle(["collector"], collectorEnv);
      procs.push(c);
      await c.waitForOutput(/The collector is listening for agents/);

      const headless = find(objs, "Service", "trueidle-collector-headless");
      const agentEnv = podEnv(
        objs,
        agent,
        agent["spec"].template.spec.containers[0],
        {
          "trueidle-agent-tls/ca.crt": certs.caCert,
          "trueidle-agent-tls/tls.crt": certs.clientCert,
          "trueidle-agent-tls/tls.key": certs.clientKey,
        },
        { TRUEIDLE_HTTP_LISTEN: `127.0.0.1:${agentHttp}` },
      );
      // The base's headless Service name, resolved here as localhost (the test certificate's name).
      expect(agentEnv["TRUEIDLE_COLLECTOR"]).toBe(`dns:///${headless["metadata"].name}.trueidle.svc:9746`);
      agentEnv["TRUEIDLE_COLLECTOR"] = `dns:///localhost:${grpc}`;
      // nvidia-smi or libnvidia-ml.so.1 as the NVIDIA runtime would provide them (one of the two,
      // the other's path missing); short windows so the first comes soon.
      const src = kind.prepare(
        mkdtempSync(path.join(tmp, "source-")),
        path.join(REPO_ROOT, "demo", "scenarios", "gpu-c01.json"),
      );
      Object.assign(agentEnv, src.autoSettings, src.env);
      agentEnv["TRUEIDLE_WINDOW"] = "1s";
      expect(agentEnv["TRUEIDLE_STATE_DIR"]).toContain(tmp);
      const a = startTrueidle(["agent"], agentEnv);
      procs.push(a);
      // JSON log lines (TRUEIDLE_LOG_FORMAT=json in the ConfigMap).
      await a.waitForOutput(/"msg":"Connected to the collector\.".*"collector":"dns:\/\/\/localhost:\d+"/);
      await c.waitForOutput(/Agent on gpu-node-1 connected/);
      expect(a.output()).toMatch(src.autoChoice);

      let metrics = "";
      for (let i = 0; !/trueidle_gpu_up\{[^}]*host="gpu-node-1"[^}]*site="eu-west"[^}]*\} 1/.test(metrics); i++) {
        if (i > 120)
          throw new Error(
            `no GPU of gpu-node-1 with site="eu-west" in /metrics:\n${metrics.slice(0, 3000)}\n${a.output().slice(-3000)}`,
          );
        await new Promise((r) => setTimeout(r, 250));
        metrics = await fetch(`http://127.0.0.1:${http}/metrics`).then(
          (r) => r.text(),
          () => "",
        );
      }
      expect(pick(gpuStatesOf(parseExposition(metrics), "gpu-node-1"), GPU_C01_STEADY_STATES)).toEqual(
        GPU_C01_STEADY_STATES,
      );
      // The probes' requests, at the ports the manifests name.
      const probe = (o: Obj): string => o["spec"].template.spec.containers[0].readinessProbe.httpGet.path;
      expect((await fetch(`http://127.0.0.1:${http}${probe(collector)}`)).status).toBe(200);
      expect((await fetch(`http://127.0.0.1:${agentHttp}${probe(agent)}`)).status).toBe(200);

      expect(await a.stop("SIGTERM")).toBe(0);
      expect(await c.stop("SIGTERM")).toBe(0);
    },
  );
});
