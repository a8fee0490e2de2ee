/**
 * The part of Kustomize that deploy/kubernetes uses, so that its tests render the manifests
 * as `kubectl apply -k` would without kubectl: `resources` (files, and folders holding a
 * kustomization.yaml), `namespace`, `labels` (without selectors), `configMapGenerator` from
 * env files (create and merge, with Kustomize's name hash and the references to it updated),
 * `images` and inline JSON 6902 `patches`. Any other field of a kustomization, or any other
 * form of these, is an error: a manifest change that needs more must extend this first.
 *
 * The name hash is Kustomize's: sha256 of {"data":…,"kind":"ConfigMap","name":""} as Go's
 * JSON with sorted keys (Kustomize 5 hashes the generated object before it is named), its
 * first 10 hex digits with 0,1,3,a,e replaced by g,h,k,m,t; the rendered names equal
 * `kubectl kustomize`'s (checked against Kustomize v5.5.0).
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import * as path from "node:path";
import YAML from "yaml";

export type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; [k: string]: unknown };
  [k: string]: unknown;
};

const SUPPORTED = new Set([
  "apiVersion",
  "kind",
  "resources",
  "namespace",
  "labels",
  "configMapGenerator",
  "images",
  "patches",
]);
/** Kinds that live outside namespaces, among those the manifests use. */
const CLUSTER_SCOPED = new Set(["Namespace"]);

interface Generated {
  name: string;
  data: Record<string, string>;
}

interface Rendered {
  objects: K8sObject[];
  configMaps: Generated[];
}

/** Every YAML document of a file, without empty ones. */
export function loadYamlDocuments(file: string): K8sObject[] {
  return YAML.parseAllDocuments(readFileSync(file, "utf8")).flatMap((doc) => {
    if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join("; ")}`);
    const value = doc.toJS() as K8sObject | null;
    return value === null ? [] : [value];
  });
}

/** KEY=VALUE lines of a Kustomize env file (# comments and blank lines skipped). */
export function parseEnvFile(file: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of readFileSync(file, "utf8").split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) throw new Error(`${file}: "${line}" is not KEY=VALUE`);
    out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

/** Kustomize's name suffix for a generated ConfigMap. */
export function configMapHash(data: Record<string, string>): string {
  const sorted = Object.fromEntries(
    Object.keys(data)
      .sort()
      .map((k) => [k, data[k]]),
  );
  // Go's encoding/json escapes <, > and & in strings.
  const json = JSON.stringify({ data: sorted, kind: "ConfigMap", name: "" }).replace(
    /[<>&]/g,
    (c) => `\\u00${c.charCodeAt(0).toString(16)}`,
  );
  const hex = createHash("sha256").update(json).digest("hex").slice(0, 10);
  return hex.replace(/[013ae]/g, (c) => ({ "0": "g", "1": "h", "3": "k", a: "m", e: "t" })[c]!);
}

/** Renders the kustomization in `dir` into its objects, as `kubectl kustomize dir` does. */
export function renderKustomization(dir: string): K8sObject[] {
  const { objects, configMaps } = renderLayer(dir);
  const renamed = new Map<string, string>();
  const out = objects.map((o) => structuredClone(o));
  for (const cm of configMaps) {
    const name = `${cm.name}-${configMapHash(cm.data)}`;
    renamed.set(cm.name, name);
    out.unshift({ apiVersion: "v1", kind: "ConfigMap", metadata: { name }, data: cm.data });
  }
  const namespace = namespaceOf(dir);
  for (const o of out) {
    if (namespace !== undefined && !CLUSTER_SCOPED.has(o.kind)) o.metadata.namespace = namespace;
    for (const pod of podSpecs(o)) {
      for (const c of containersOf(pod)) {
        for (const e of (c["envFrom"] as Array<{ configMapRef?: { name: string } }> | undefined) ?? []) {
          if (e.configMapRef && renamed.has(e.configMapRef.name))
            e.configMapRef.name = renamed.get(e.configMapRef.name)!;
        }
        for (const e of (c["env"] as Array<{ valueFrom?: { configMapKeyRef?: { name: string } } }> | undefined) ?? []) {
          const ref = e.valueFrom?.configMapKeyRef;
          if (ref && renamed.has(ref.name)) ref.name = renamed.get(ref.name)!;
        }
      }
      for (const v of (pod["volumes"] as Array<{ configMap?: { name: string } }> | undefined) ?? []) {
        if (v.configMap && renamed.has(v.configMap.name)) v.configMap.name = renamed.get(v.configMap.name)!;
      }
    }
  }
  // Labels of every layer apply to the generated ConfigMaps too.
  applyLabelsDeep(
    dir,
    out.filter((o) => o.kind === "ConfigMap" && [...renamed.values()].includes(o.metadata.name)),
  );
  return out;
}

/** The namespace a layer sets, else the one its bases set (an outer layer's wins). */
function namespaceOf(dir: string): string | undefined {
  const k = readKustomization(dir);
  if (k["namespace"] !== undefined) return k["namespace"] as string;
  for (const r of (k["resources"] as string[] | undefined) ?? []) {
    const p = path.resolve(dir, r);
    if (statSync(p).isDirectory()) {
      const ns = namespaceOf(p);
      if (ns !== undefined) return ns;
    }
  }
  return undefined;
}

function readKustomization(dir: string): Record<string, unknown> {
  const file = path.join(dir, "kustomization.yaml");
  const k = YAML.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  for (const key of Object.keys(k))
    if (!SUPPORTED.has(key)) throw new Error(`${file}: field ${key} is not in the tested subset of Kustomize`);
  if (k["apiVersion"] !== "kustomize.config.k8s.io/v1beta1" || k["kind"] !== "Kustomization")
    throw new Error(`${file}: not a v1beta1 Kustomization`);
  return k;
}

function renderLayer(dir: string): Rendered {
  const k = readKustomization(dir);
  const objects: K8sObject[] = [];
  const configMaps: Generated[] = [];
  for (const r of (k["resources"] as string[] | undefined) ?? []) {
    const p = path.resolve(dir, r);
    if (statSync(p).isDirectory()) {
      if (!existsSync(path.join(p, "kustomization.yaml")))
        throw new Error(`${p}: a resource folder without kustomization.yaml`);
      const sub = renderLayer(p);
      objects.push(...sub.objects);
      configMaps.push(...sub.configMaps);
    } else {
      objects.push(...loadYamlDocuments(p));
    }
  }
  for (const g of (k["configMapGenerator"] as Array<Record<string, unknown>> | undefined) ?? []) {
    for (const key of Object.keys(g))
      if (!["name", "envs", "behavior"].includes(key))
        throw new Error(`${dir}: configMapGenerator field ${key} is not supported`);
    const data: Record<string, string> = {};
    for (const f of g["envs"] as string[]) Object.assign(data, parseEnvFile(path.resolve(dir, f)));
    const behavior = (g["behavior"] as string | undefined) ?? "create";
    const existing = configMaps.find((c) => c.name === g["name"]);
    if (behavior === "create") {
      if (existing) throw new Error(`${dir}: ConfigMap ${String(g["name"])} is generated twice`);
      configMaps.push({ name: g["name"] as string, data });
    } else if (behavior === "merge") {
      if (!existing) throw new Error(`${dir}: ConfigMap ${String(g["name"])} to merge is not generated below`);
      Object.assign(existing.data, data);
    } else {
      throw new Error(`${dir}: configMapGenerator behavior ${behavior} is not supported`);
    }
  }
  for (const img of (k["images"] as Array<Record<string, string>> | undefined) ?? []) {
    for (const o of objects) {
      for (const pod of podSpecs(o)) {
        for (const c of containersOf(pod)) {
          const image = c["image"] as string;
          const name = image.replace(/[:@].*$/, "");
          if (name !== img["name"]) continue;
          c["image"] =
            `${img["newName"] ?? name}${img["newTag"] !== undefined ? `:${img["newTag"]}` : image.slice(name.length)}`;
        }
      }
    }
  }
  for (const p of (k["patches"] as Array<Record<string, unknown>> | undefined) ?? []) {
    const target = p["target"] as Record<string, string>;
    const ops = YAML.parse(p["patch"] as string) as Array<{ op: string; path: string; value?: unknown }>;
    if (!Array.isArray(ops)) throw new Error(`${dir}: only JSON 6902 patches (a list of operations) are supported`);
    const matched = objects.filter((o) => matchesTarget(o, target));
    if (matched.length === 0) throw new Error(`${dir}: patch target ${JSON.stringify(target)} matches nothing`);
    for (const o of matched) for (const op of ops) applyJsonPatch(o, op);
  }
  applyLabels(k, objects);
  return { objects, configMaps };
}

function applyLabels(k: Record<string, unknown>, objects: K8sObject[]): void {
  for (const l of (k["labels"] as Array<Record<string, unknown>> | undefined) ?? []) {
    if (l["includeSelectors"] !== false) throw new Error("labels with includeSelectors are not supported");
    const pairs = l["pairs"] as Record<string, string>;
    for (const o of objects) {
      o.metadata.labels = { ...o.metadata.labels, ...pairs };
      if (l["includeTemplates"] === true) {
        const tmpl = (o["spec"] as { template?: { metadata?: { labels?: Record<string, string> } } } | undefined)
          ?.template;
        if (tmpl) tmpl.metadata = { ...tmpl.metadata, labels: { ...tmpl.metadata?.labels, ...pairs } };
      }
    }
  }
}

function applyLabelsDeep(dir: string, objects: K8sObject[]): void {
  const k = readKustomization(dir);
  for (const r of (k["resources"] as string[] | undefined) ?? []) {
    const p = path.resolve(dir, r);
    if (statSync(p).isDirectory()) applyLabelsDeep(p, objects);
  }
  applyLabels(k, objects);
}

function matchesTarget(o: K8sObject, t: Record<string, string>): boolean {
  for (const key of Object.keys(t))
    if (!["group", "version", "kind", "name"].includes(key))
      throw new Error(`patch target field ${key} is not supported`);
  const [group, version] = o.apiVersion.includes("/") ? o.apiVersion.split("/") : ["", o.apiVersion];
  return (
    (t["group"] === undefined || t["group"] === group) &&
    (t["version"] === undefined || t["version"] === version) &&
    (t["kind"] === undefined || t["kind"] === o.kind) &&
    (t["name"] === undefined || t["name"] === o.metadata.name)
  );
}

function applyJsonPatch(o: K8sObject, op: { op: string; path: string; value?: unknown }): void {
  const parts = op.path
    .split("/")
    .slice(1)
    .map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
  const last = parts.pop();
  if (last === undefined) throw new Error(`patch path ${op.path} is empty`);
  let node: Record<string, unknown> = o;
  for (const part of parts) {
    let next = node[part] as Record<string, unknown> | undefined;
    if (next === undefined && op.op === "add") next = node[part] = {};
    if (next === undefined || typeof next !== "object")
      throw new Error(`patch path ${op.path}: ${part} is missing in ${o.kind}/${o.metadata.name}`);
    node = next;
  }
  if (op.op === "add") node[last] = op.value;
  else if (op.op === "replace") {
    if (!(last in node)) throw new Error(`patch path ${op.path}: nothing to replace in ${o.kind}/${o.metadata.name}`);
    node[last] = op.value;
  } else if (op.op === "remove") delete node[last];
  else throw new Error(`patch operation ${op.op} is not supported`);
}

type Obj = Record<string, unknown>;

/** The pod specs of a workload (its template's spec). */
export function podSpecs(o: K8sObject): Obj[] {
  const spec = (o["spec"] as { template?: { spec?: Obj } } | undefined)?.template?.spec;
  return spec ? [spec] : [];
}

/** Init containers and containers of a pod spec. */
export function containersOf(pod: Obj): Obj[] {
  return [...((pod["initContainers"] as Obj[] | undefined) ?? []), ...((pod["containers"] as Obj[] | undefined) ?? [])];
}
