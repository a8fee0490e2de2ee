/**
 * The Kubernetes install commands of the docs, run against what they apply.
 *
 * A Markdown file of the repository (outside node_modules, dist, release and dot folders)
 * carries them as the ```sh block right after a line `<!-- kubernetes-install: … -->`;
 * README.md and deploy/kubernetes/README.md must. Each block is read as the script a user
 * pastes in a checkout, from its root: `cd`, `cp -r` of an overlay, `$EDITOR`, and kubectl's
 * `create namespace`, `create secret tls|generic`, `apply -k`, `rollout status` and `logs`.
 * Any other command, subcommand or flag fails the test naming its line: a change to the block
 * extends this reader first.
 *
 * The overlay a block applies is rendered with test/helpers/kustomize.ts (a `cp -r` copy
 * renders as its source, whose relative resources must still resolve from the copy), and:
 *
 * - every `secretKeyRef` of a container, and every setting (its env values, and the data of
 *   the ConfigMaps it loads with envFrom) naming a file in a Secret volume, finds a Secret the
 *   block creates in the pod's namespace, with that key. Optional or not: a pod whose Secret
 *   lacks a file starts, and its binary exits naming the file;
 * - every Secret the block creates is used by the overlay, and every key it gives is read;
 * - a kubernetes.io/tls Secret has tls.crt and tls.key; each namespace exists before Secrets
 *   go into it and is one the overlay uses; `rollout status` and `logs` name a workload
 *   applied before them; the files opened with `$EDITOR` exist;
 * - deploy/kubernetes/secrets/*.example.yaml show the same Secrets, types and keys.
 *
 * The block as it was before mutual TLS was added to it (its Secrets lacked the keys the
 * overlay mounts, and the collectors crash-looped) and some edits of the current block go
 * through the same checks, which must name what each gets wrong.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import YAML from "yaml";
import {
  containersOf,
  loadYamlDocuments,
  podSpecs,
  renderKustomization,
  type K8sObject,
} from "../helpers/kustomize.js";
import { REPO_ROOT } from "../helpers/trueidle-process.js";

// biome-ignore lint/suspicious/noExplicitAny: rendered manifests are walked by path, as kubectl does
type Obj = Record<string, any>;

const MARKER = /^<!--\s*kubernetes-install\b.*-->$/;
const SKIPPED_FOLDERS = new Set(["node_modules", "dist", "release"]);
const TLS_TYPE = "kubernetes.io/tls";
const THIS_TEST = "test/deploy/kubernetes-install.test.ts";
const rel = (p: string): string => path.relative(REPO_ROOT, p);

// ---------------------------------------------------------------------------------------
// The blocks and their commands.

interface Block {
  /** Where the block is, for messages: a path relative to the repository root. */
  where: string;
  /** The Markdown line of the block's first script line. */
  line: number;
  text: string;
}

function markdownFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    if (e.name.startsWith(".")) return [];
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return SKIPPED_FOLDERS.has(e.name) ? [] : markdownFiles(p);
    return e.isFile() && e.name.endsWith(".md") ? [p] : [];
  });
}

/** The ```sh blocks that follow a kubernetes-install marker; a marker without one throws. */
function installBlocks(where: string, markdown: string): Block[] {
  const lines = markdown.split("\n");
  const out: Block[] = [];
  lines.forEach((marker, i) => {
    if (!MARKER.test(marker.trim())) return;
    let open = i + 1;
    while (open < lines.length && lines[open]!.trim() === "") open++;
    if (lines[open]?.trim() !== "```sh")
      throw new Error(`${where}:${i + 1}: the kubernetes-install marker is not followed by a \`\`\`sh block`);
    const close = lines.findIndex((l, k) => k > open && l.trim() === "```");
    if (close < 0) throw new Error(`${where}:${open + 1}: the install block is not closed`);
    out.push({ where, line: open + 2, text: lines.slice(open + 1, close).join("\n") });
  });
  return out;
}

interface ShellCommand {
  line: number;
  words: string[];
}

/**
 * The simple commands of a script, as the shell splits them: quotes removed, `\`-newline
 * joined, comments dropped. `$(…)` and `$VAR` stay as written: here they are values, never
 * names or keys. Pipes, lists, redirections and backquotes are refused.
 */
function shellCommands(script: string, where: string, firstLine: number): ShellCommand[] {
  const out: ShellCommand[] = [];
  let words: string[] = [];
  let word = "";
  let inWord = false;
  let line = firstLine;
  let start = firstLine;
  const fail = (what: string): never => {
    throw new Error(`${where}:${line}: ${what}: extend ${THIS_TEST} to read it`);
  };
  const begin = (): void => {
    if (!inWord && words.length === 0) start = line;
    inWord = true;
  };
  const endWord = (): void => {
    if (inWord) words.push(word);
    word = "";
    inWord = false;
  };
  /** Copies a `$(…)` starting at i verbatim; returns the index of its `)`. */
  const substitution = (i: number): number => {
    let depth = 0;
    for (let j = i + 1; j < script.length; j++) {
      const c = script[j]!;
      if (c === "\n") line++;
      if (c === "(") depth++;
      if (c === ")" && --depth === 0) {
        word += script.slice(i, j + 1);
        return j;
      }
    }
    return fail("an unclosed $(");
  };
  for (let i = 0; i < script.length; i++) {
    const c = script[i]!;
    if (c === "\n") {
      endWord();
      if (words.length > 0) out.push({ line: start, words });
      words = [];
      line++;
    } else if (c === " " || c === "\t") {
      endWord();
    } else if (c === "#" && !inWord) {
      while (i + 1 < script.length && script[i + 1] !== "\n") i++;
    } else if (c === "\\") {
      if (script[i + 1] === "\n") {
        line++;
      } else {
        begin();
        word += script[i + 1] ?? "";
      }
      i++;
    } else if (c === "'") {
      begin();
      const end = script.indexOf("'", i + 1);
      if (end < 0) fail("an unclosed '");
      word += script.slice(i + 1, end);
      line += script.slice(i + 1, end).split("\n").length - 1;
      i = end;
    } else if (c === '"') {
      begin();
      for (i++; script[i] !== '"'; i++) {
        if (i >= script.length) fail('an unclosed "');
        const d = script[i]!;
        if (d === "\\" && '"\\$`\n'.includes(script[i + 1] ?? "")) {
          if (script[i + 1] !== "\n") word += script[i + 1];
          else line++;
          i++;
        } else if (d === "$" && script[i + 1] === "(") {
          i = substitution(i);
        } else if (d === "`") {
          fail("a backquote substitution");
        } else {
          if (d === "\n") line++;
          word += d;
        }
      }
    } else if (c === "$" && script[i + 1] === "(") {
      begin();
      i = substitution(i);
    } else if ("|&;<>()`".includes(c)) {
      fail(`the shell operator ${c}`);
    } else {
      begin();
      word += c;
    }
  }
  endWord();
  if (words.length > 0) out.push({ line: start, words });
  return out;
}

// ---------------------------------------------------------------------------------------
// What a block does.

interface CreatedSecret {
  line: number;
  /** undefined: no -n, so the current context's namespace. */
  namespace: string | undefined;
  name: string;
  type: string;
  /** In the order given; a key given twice appears twice. */
  keys: string[];
}

interface InstallPlan {
  where: string;
  namespaces: Array<{ line: number; name: string }>;
  secrets: CreatedSecret[];
  /** `dir` is what renders: the source of a copy; `typed` is the folder as given. */
  applied: Array<{ line: number; dir: string; typed: string; copy?: { from: string; to: string } }>;
  /** `rollout status` and `logs`: they need the workload. */
  shown: Array<{ line: number; command: string; namespace: string | undefined; kind: string; name: string }>;
  edited: Array<{ line: number; typed: string; file: string }>;
}

const WORKLOAD_KINDS: Record<string, string> = {
  daemonset: "DaemonSet",
  daemonsets: "DaemonSet",
  ds: "DaemonSet",
  deployment: "Deployment",
  deployments: "Deployment",
  deploy: "Deployment",
  statefulset: "StatefulSet",
  statefulsets: "StatefulSet",
  sts: "StatefulSet",
};

/** Reads a block into what it does, from the repository root; a command it does not know throws. */
function readInstallBlock(block: Block): InstallPlan {
  const plan: InstallPlan = { where: block.where, namespaces: [], secrets: [], applied: [], shown: [], edited: [] };
  let cwd = REPO_ROOT;
  /** Copies made with cp -r: destination → source, both absolute. */
  const copies = new Map<string, string>();
  const resolve = (p: string): { path: string; copy?: { from: string; to: string } } => {
    const abs = path.resolve(cwd, p);
    for (const [to, from] of copies) {
      if (abs === to || abs.startsWith(`${to}${path.sep}`))
        return { path: from + abs.slice(to.length), copy: { from, to } };
    }
    return { path: abs };
  };
  for (const cmd of shellCommands(block.text, block.where, block.line)) {
    const unknown = (why: string): Error =>
      new Error(`${block.where}:${cmd.line}: \`${cmd.words.join(" ")}\`: ${why}: extend ${THIS_TEST} to read it`);
    const [name, ...args] = cmd.words;
    if (name === "cd") {
      if (args.length !== 1) throw unknown("cd takes one folder here");
      cwd = path.resolve(cwd, args[0]!);
    } else if (name === "cp") {
      if (args.length !== 3 || !["-r", "-R"].includes(args[0]!)) throw unknown("only cp -r SOURCE DEST is read");
      copies.set(path.resolve(cwd, args[2]!), resolve(args[1]!).path);
    } else if (name === "$EDITOR") {
      for (const typed of args) plan.edited.push({ line: cmd.line, typed, file: resolve(typed).path });
    } else if (name === "kubectl") {
      readKubectl(args, cmd.line, plan, resolve, unknown);
    } else {
      throw unknown(`${name} is not a command this test reads`);
    }
  }
  return plan;
}

/** Flags (all of which take a value here) by spelling → name; any other flag throws. */
function parseFlags(
  args: string[],
  known: Record<string, string>,
  unknown: (why: string) => Error,
): { positional: string[]; flags: Map<string, string[]> } {
  const positional: string[] = [];
  const flags = new Map<string, string[]>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith("-")) {
      positional.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const spelling = eq > 0 && a.startsWith("--") ? a.slice(0, eq) : a;
    const flag = known[spelling];
    if (flag === undefined) throw unknown(`the flag ${spelling} is not read here`);
    const value = spelling === a ? args[++i] : a.slice(eq + 1);
    if (value === undefined) throw unknown(`${spelling} has no value`);
    flags.set(flag, [...(flags.get(flag) ?? []), value]);
  }
  return { positional, flags };
}

function readKubectl(
  all: string[],
  line: number,
  plan: InstallPlan,
  resolve: (p: string) => { path: string; copy?: { from: string; to: string } },
  unknown: (why: string) => Error,
): void {
  // -n/--namespace may stand anywhere.
  let namespace: string | undefined;
  const args: string[] = [];
  for (let i = 0; i < all.length; i++) {
    const a = all[i]!;
    if (a === "-n" || a === "--namespace") namespace = all[++i];
    else if (a.startsWith("--namespace=")) namespace = a.slice("--namespace=".length);
    else if (/^-n[^-]/.test(a)) namespace = a.slice(2);
    else args.push(a);
  }
  const one = (flags: Map<string, string[]>, name: string): string => {
    const v = flags.get(name);
    if (v?.length !== 1) throw unknown(`it needs --${name} once`);
    return v[0]!;
  };
  const [verb, ...rest] = args;
  if (verb === "create" && (rest[0] === "namespace" || rest[0] === "ns")) {
    const { positional, flags } = parseFlags(rest.slice(1), {}, unknown);
    if (positional.length !== 1 || flags.size > 0) throw unknown("create namespace takes one name");
    plan.namespaces.push({ line, name: positional[0]! });
  } else if (verb === "create" && rest[0] === "secret" && rest[1] === "tls") {
    const { positional, flags } = parseFlags(rest.slice(2), { "--cert": "cert", "--key": "key" }, unknown);
    if (positional.length !== 1) throw unknown("create secret tls takes one name");
    one(flags, "cert");
    one(flags, "key");
    plan.secrets.push({ line, namespace, name: positional[0]!, type: TLS_TYPE, keys: ["tls.crt", "tls.key"] });
  } else if (verb === "create" && rest[0] === "secret" && rest[1] === "generic") {
    const { positional, flags } = parseFlags(
      rest.slice(2),
      { "--type": "type", "--from-file": "from-file", "--from-literal": "from-literal" },
      unknown,
    );
    if (positional.length !== 1) throw unknown("create secret generic takes one name");
    const keys = [
      // KEY=PATH, or PATH whose file name is the key.
      ...(flags.get("from-file") ?? []).map((f) => (f.includes("=") ? f.slice(0, f.indexOf("=")) : path.basename(f))),
      ...(flags.get("from-literal") ?? []).map((l) => {
        if (!l.includes("=")) throw unknown(`--from-literal=${l} is not KEY=VALUE`);
        return l.slice(0, l.indexOf("="));
      }),
    ];
    const type = flags.has("type") ? one(flags, "type") : "Opaque";
    plan.secrets.push({ line, namespace, name: positional[0]!, type, keys });
  } else if (verb === "apply") {
    const { positional, flags } = parseFlags(rest, { "-k": "kustomize", "--kustomize": "kustomize" }, unknown);
    if (positional.length > 0) throw unknown("apply takes -k DIR alone");
    const typed = one(flags, "kustomize");
    const target = resolve(typed);
    plan.applied.push({ line, dir: target.path, typed, ...(target.copy ? { copy: target.copy } : {}) });
  } else if ((verb === "rollout" && rest[0] === "status") || verb === "logs") {
    const command = verb === "logs" ? "logs" : "rollout status";
    const { positional, flags } = parseFlags(
      verb === "logs" ? rest : rest.slice(1),
      verb === "logs" ? {} : { "--timeout": "timeout" },
      unknown,
    );
    const m = positional.length === 1 ? /^([a-z]+)\/(.+)$/.exec(positional[0]!) : null;
    const kind = m ? WORKLOAD_KINDS[m[1]!] : undefined;
    if (!m || kind === undefined || flags.size > (flags.has("timeout") ? 1 : 0))
      throw unknown(`${command} takes one KIND/NAME of a workload`);
    plan.shown.push({ line, command, namespace, kind, name: m[2]! });
  } else {
    throw unknown(`kubectl ${args.slice(0, 2).join(" ")} is not a subcommand this test reads`);
  }
}

// ---------------------------------------------------------------------------------------
// What the rendered objects read from Secrets.

interface SecretRef {
  namespace: string;
  secret: string;
  /** undefined: the Secret as a whole (a volume, envFrom, an image pull secret). */
  key: string | undefined;
  /** Whether the reference reads the key (or, without one, every key). */
  reads: boolean;
  /** A whole-Secret reference that Kubernetes lets be missing. */
  optional: boolean;
  by: string;
}

function secretReferences(objs: K8sObject[]): { refs: SecretRef[]; problems: string[] } {
  const refs: SecretRef[] = [];
  const problems: string[] = [];
  for (const o of objs) {
    for (const pod of podSpecs(o) as Obj[]) {
      const namespace = o.metadata.namespace ?? "default";
      const workload = `${o.kind}/${o.metadata.name}`;
      const volumes = new Map<string, Obj>(
        ((pod["volumes"] as Obj[] | undefined) ?? []).map((v) => [v["name"] as string, v]),
      );
      for (const s of (pod["imagePullSecrets"] as Obj[] | undefined) ?? []) {
        refs.push({
          namespace,
          secret: s["name"],
          key: undefined,
          reads: true,
          optional: false,
          by: `${workload} imagePullSecrets`,
        });
      }
      for (const v of volumes.values()) {
        if (v["secret"])
          refs.push({
            namespace,
            secret: v["secret"].secretName,
            key: undefined,
            reads: false,
            optional: v["secret"].optional === true,
            by: `${workload} volume ${v["name"]}`,
          });
      }
      for (const c of containersOf(pod) as Obj[]) {
        const by = `${workload} container ${c["name"]}`;
        const settings = new Map<string, string>();
        for (const e of (c["envFrom"] as Obj[] | undefined) ?? []) {
          const prefix: string = e["prefix"] ?? "";
          if (e["secretRef"]) {
            refs.push({
              namespace,
              secret: e["secretRef"].name,
              key: undefined,
              reads: true,
              optional: e["secretRef"].optional === true,
              by: `${by} envFrom`,
            });
          } else if (e["configMapRef"]) {
            const cm = objs.find(
              (x) =>
                x.kind === "ConfigMap" &&
                x.metadata.name === e["configMapRef"].name &&
                (x.metadata.namespace ?? "default") === namespace,
            );
            if (!cm)
              problems.push(`${by} loads ConfigMap ${e["configMapRef"].name}, which the overlay does not render`);
            for (const [k, v] of Object.entries((cm?.["data"] as Record<string, string> | undefined) ?? {}))
              settings.set(prefix + k, v);
          }
        }
        for (const e of (c["env"] as Obj[] | undefined) ?? []) {
          const ref = e["valueFrom"]?.secretKeyRef;
          if (ref)
            refs.push({
              namespace,
              secret: ref.name,
              key: ref.key,
              reads: true,
              optional: false,
              by: `${by} as ${e["name"]}`,
            });
          if (e["value"] !== undefined) settings.set(e["name"], String(e["value"]));
        }
        const mounts = (c["volumeMounts"] as Obj[] | undefined) ?? [];
        for (const [name, value] of settings) {
          if (!value.startsWith("/")) continue;
          const mount = mounts
            .filter(
              (m) => value === m["mountPath"] || value.startsWith(`${String(m["mountPath"]).replace(/\/$/, "")}/`),
            )
            .sort((a, b) => b["mountPath"].length - a["mountPath"].length)[0];
          const secret = mount ? volumes.get(mount["name"])?.["secret"] : undefined;
          if (!mount || !secret) continue;
          const file = [mount["subPath"], value.slice(String(mount["mountPath"]).length).replace(/^\//, "")]
            .filter((s) => s)
            .join("/");
          // A setting naming the folder itself reads no one key.
          if (file === "") continue;
          const setting = `${by} as ${name}=${value}`;
          let key: string | undefined = file;
          if (secret.items) {
            key = (secret.items as Obj[]).find((it) => it["path"] === file)?.["key"];
            if (key === undefined)
              problems.push(
                `${setting}: volume ${mount["name"]} projects only ${(secret.items as Obj[]).map((it) => it["path"]).join(", ")} of Secret ${secret.secretName}`,
              );
          } else if (file.includes("/")) {
            problems.push(
              `${setting}: Secret ${secret.secretName}'s keys are files at the top of ${mount["mountPath"]}, not ${file}`,
            );
            key = undefined;
          }
          if (key !== undefined)
            refs.push({ namespace, secret: secret.secretName, key, reads: true, optional: false, by: setting });
        }
      }
    }
  }
  return { refs, problems };
}

// ---------------------------------------------------------------------------------------
// The checks: everything wrong with a block, as sentences naming its lines.

function checkInstall(plan: InstallPlan): string[] {
  const problems: string[] = [];
  const at = (line: number): string => `${plan.where}:${line}`;
  const applied: Array<{ line: number; objs: K8sObject[] }> = [];
  if (plan.applied.length === 0) problems.push(`${plan.where}: the block applies nothing (no kubectl apply -k)`);
  for (const a of plan.applied) {
    const file = path.join(a.dir, "kustomization.yaml");
    if (!existsSync(file)) {
      problems.push(`${at(a.line)}: kubectl apply -k ${a.typed}: ${rel(a.dir)} holds no kustomization.yaml`);
      continue;
    }
    if (a.copy) {
      // The copy renders as its source only if its relative resources reach the same files.
      const inCopy = a.copy.to + a.dir.slice(a.copy.from.length);
      for (const r of ((YAML.parse(readFileSync(file, "utf8")) as Obj)["resources"] as string[] | undefined) ?? []) {
        if (path.resolve(inCopy, r) !== path.resolve(a.dir, r)) {
          problems.push(
            `${at(a.line)}: kubectl apply -k ${a.typed}: resource ${r} of the copy is ${rel(path.resolve(inCopy, r))}, not ${rel(path.resolve(a.dir, r))}`,
          );
        }
      }
    }
    applied.push({ line: a.line, objs: renderKustomization(a.dir) });
  }
  for (const e of plan.edited)
    if (!existsSync(e.file)) problems.push(`${at(e.line)}: $EDITOR ${e.typed}: ${rel(e.file)} does not exist`);
  // Without an overlay there is nothing to hold the rest against.
  if (applied.length === 0) return problems;
  const objs = applied.flatMap((a) => a.objs);
  const used = [...new Set(objs.flatMap((o) => (o.metadata.namespace === undefined ? [] : [o.metadata.namespace])))];
  const existsBefore = (ns: string, line: number): boolean =>
    plan.namespaces.some((n) => n.name === ns && n.line < line) ||
    applied.some((a) => a.line < line && a.objs.some((o) => o.kind === "Namespace" && o.metadata.name === ns));

  for (const n of plan.namespaces) {
    if (!used.includes(n.name))
      problems.push(`${at(n.line)}: namespace ${n.name} is one the overlay does not use (it uses ${used.join(", ")})`);
    if (existsBefore(n.name, n.line))
      problems.push(`${at(n.line)}: namespace ${n.name} exists already there: kubectl create fails`);
  }

  const created = new Map<string, CreatedSecret>();
  for (const s of plan.secrets) {
    const id = `${s.namespace ?? "(current namespace)"}/${s.name}`;
    if (s.namespace === undefined)
      problems.push(
        `${at(s.line)}: Secret ${s.name} is created without -n, in the current context's namespace (the overlay uses ${used.join(", ")})`,
      );
    else if (!existsBefore(s.namespace, s.line))
      problems.push(`${at(s.line)}: Secret ${id} is created before namespace ${s.namespace} exists`);
    const first = created.get(id);
    if (first)
      problems.push(
        `${at(s.line)}: Secret ${id} is created again (first at line ${first.line}): kubectl fails with AlreadyExists`,
      );
    else created.set(id, s);
    for (const [i, k] of s.keys.entries()) {
      if (s.keys.indexOf(k) !== i) problems.push(`${at(s.line)}: Secret ${id} gets key ${k} twice: kubectl refuses it`);
      if (!/^[-._a-zA-Z0-9]+$/.test(k))
        problems.push(`${at(s.line)}: Secret ${id} key ${JSON.stringify(k)} is not a valid key`);
    }
    if (s.type === TLS_TYPE) {
      for (const k of ["tls.crt", "tls.key"])
        if (!s.keys.includes(k))
          problems.push(`${at(s.line)}: Secret ${id} of type ${TLS_TYPE} has no ${k}: the API server refuses it`);
    }
  }

  const { refs, problems: refProblems } = secretReferences(objs);
  problems.push(...refProblems);
  for (const r of refs) {
    const s = created.get(`${r.namespace}/${r.secret}`);
    if (r.key === undefined) {
      if (!s && !r.optional) problems.push(`Secret ${r.namespace}/${r.secret} is not created: ${r.by} needs it`);
    } else if (!s) {
      problems.push(`Secret ${r.namespace}/${r.secret} is not created: ${r.by} reads its key ${r.key}`);
    } else if (!s.keys.includes(r.key)) {
      problems.push(`${at(s.line)}: Secret ${r.namespace}/${r.secret} has no key ${r.key}: ${r.by} reads it`);
    }
  }
  for (const [id, s] of created) {
    const mine = refs.filter((r) => `${r.namespace}/${r.secret}` === id);
    if (mine.length === 0) {
      problems.push(`${at(s.line)}: Secret ${id} is not used by the overlay`);
      continue;
    }
    for (const k of new Set(s.keys)) {
      const required = s.type === TLS_TYPE && (k === "tls.crt" || k === "tls.key");
      if (!required && !mine.some((r) => r.reads && (r.key === undefined || r.key === k)))
        problems.push(`${at(s.line)}: Secret ${id} key ${k} is read by nothing in the overlay`);
    }
  }

  for (const w of plan.shown) {
    const there = applied.some(
      (a) =>
        a.line < w.line &&
        a.objs.some((o) => o.kind === w.kind && o.metadata.name === w.name && o.metadata.namespace === w.namespace),
    );
    if (!there)
      problems.push(
        `${at(w.line)}: kubectl ${w.command}: no ${w.kind} ${w.name} in namespace ${w.namespace ?? "(none given)"} is applied before this line`,
      );
  }
  return problems;
}

// ---------------------------------------------------------------------------------------

const K8S_README = "deploy/kubernetes/README.md";
const blocks = markdownFiles(REPO_ROOT).flatMap((f) => installBlocks(rel(f), readFileSync(f, "utf8")));

function exampleSecrets(): CreatedSecret[] {
  const dir = path.join(REPO_ROOT, "deploy", "kubernetes", "secrets");
  return readdirSync(dir)
    .filter((f) => f.endsWith(".example.yaml"))
    .flatMap((f) => loadYamlDocuments(path.join(dir, f)))
    .map((s) => ({
      line: 0,
      namespace: s.metadata.namespace,
      name: s.metadata.name,
      type: (s["type"] as string | undefined) ?? "Opaque",
      keys: [
        ...Object.keys((s["stringData"] as Obj | undefined) ?? {}),
        ...Object.keys((s["data"] as Obj | undefined) ?? {}),
      ],
    }));
}

/** namespace/name → "type: keys", for comparing sets of Secrets. */
const secretTable = (secrets: CreatedSecret[]): Record<string, string> =>
  Object.fromEntries(
    secrets.map((s) => [`${s.namespace}/${s.name}`, `${s.type}: ${[...new Set(s.keys)].sort().join(", ")}`]),
  );

describe("the Kubernetes install blocks", () => {
  it("are carried by at least one Markdown file", () => {
    expect(
      blocks.length,
      "no Markdown file has a <!-- kubernetes-install: … --> line before a ```sh block",
    ).toBeGreaterThan(0);
  });

  it.each(["README.md", K8S_README])("include one in %s", (file) => {
    expect(
      blocks.map((b) => b.where),
      `${file} carries the install block after <!-- kubernetes-install: … -->`,
    ).toContain(file);
  });
});

describe.each(blocks.map((b) => [`${b.where}:${b.line}`, b] as const))("the install block at %s", (_where, block) => {
  it("reads as commands this test knows", () => {
    const plan = readInstallBlock(block);
    expect(plan.applied.length).toBeGreaterThan(0);
    expect(plan.secrets.length).toBeGreaterThan(0);
  });

  it("creates, in the overlay's namespace, every Secret and key the overlay it applies reads, and no other", () => {
    expect(checkInstall(readInstallBlock(block))).toEqual([]);
  });

  it("creates the Secrets, types and keys that deploy/kubernetes/secrets/*.example.yaml show", () => {
    expect(secretTable(exampleSecrets()), "the example Secrets (left) against the block's").toEqual(
      secretTable(readInstallBlock(block).secrets),
    );
  });
});

describe("the install checks", () => {
  // The block before mutual TLS was added to it: Secrets without the collectors' client CA
  // and the agents' client certificate and key, which the example overlay mounts.
  const OLD_BLOCK = [
    "cd deploy/kubernetes",
    "cp -r overlays/example overlays/my-site    # elsewhere: point its resources at this base",
    "$EDITOR overlays/my-site/kustomization.yaml overlays/my-site/agent.env overlays/my-site/collector.env",
    "kubectl create namespace trueidle          # the base labels it for Pod Security",
    "# Secrets, from files (secrets/*.example.yaml list every one and its keys):",
    "kubectl -n trueidle create secret tls trueidle-collector-tls --cert=collector.crt --key=collector.key",
    "kubectl -n trueidle create secret generic trueidle-agent-tls --from-file=ca.crt=ca.crt",
    "kubectl apply -k overlays/my-site",
    "kubectl -n trueidle rollout status daemonset/trueidle-agent",
    "kubectl -n trueidle logs daemonset/trueidle-agent",
  ].join("\n");

  it("name the mutual TLS keys the earlier block left out", () => {
    const problems = checkInstall(readInstallBlock({ where: "old-block", line: 1, text: OLD_BLOCK }));
    expect(problems).toEqual(
      expect.arrayContaining([
        "old-block:6: Secret trueidle/trueidle-collector-tls has no key ca.crt: Deployment/trueidle-collector container collector as TRUEIDLE_TLS_CLIENT_CA=/etc/trueidle/tls/ca.crt reads it",
        "old-block:7: Secret trueidle/trueidle-agent-tls has no key tls.crt: DaemonSet/trueidle-agent container agent as TRUEIDLE_TLS_CERT=/etc/trueidle/tls/tls.crt reads it",
        "old-block:7: Secret trueidle/trueidle-agent-tls has no key tls.key: DaemonSet/trueidle-agent container agent as TRUEIDLE_TLS_KEY=/etc/trueidle/tls/tls.key reads it",
        // Its other Secrets were in a comment elsewhere, not in the block.
        "Secret trueidle/trueidle-collector-tokens is not created: Deployment/trueidle-collector container collector as TRUEIDLE_AGENT_TOKENS reads its key tokens",
        "Secret trueidle/trueidle-influx is not created: Deployment/trueidle-collector container collector as TRUEIDLE_INFLUX_PASSWORD reads its key password",
        "Secret trueidle/trueidle-agent-token is not created: DaemonSet/trueidle-agent container agent as TRUEIDLE_TOKEN reads its key token",
      ]),
    );
    // The Secrets it does create are used, in the right namespace.
    expect(problems.filter((p) => /not used|namespace|read by nothing/.test(p))).toEqual([]);
  });

  const current = (): Block => {
    const b = blocks.find((x) => x.where === K8S_README);
    if (!b) throw new Error(`${K8S_README} has no install block`);
    return b;
  };
  /** The current block with `from` replaced by `to`; `from` must be in it. */
  const edited = (from: string, to: string): Block => {
    const b = current();
    if (!b.text.includes(from))
      throw new Error(`the install block no longer contains ${JSON.stringify(from)}: update this edit`);
    return { ...b, text: b.text.replace(from, to) };
  };
  const lineOf = (b: Block, text: string): number => b.line + b.text.split("\n").findIndex((l) => l.includes(text));

  it.each([
    {
      edit: "the collectors' Secret without ca.crt",
      block: () =>
        edited("--from-file=tls.key=collector.key --from-file=ca.crt=ca.crt", "--from-file=tls.key=collector.key"),
      expected: [/Secret trueidle\/trueidle-collector-tls has no key ca\.crt: .* TRUEIDLE_TLS_CLIENT_CA=/],
    },
    {
      edit: "the collectors' Secret without tls.key",
      block: () => edited("--from-file=tls.key=collector.key ", ""),
      expected: [
        /has no key tls\.key: .* TRUEIDLE_TLS_KEY=/,
        /trueidle-collector-tls of type kubernetes\.io\/tls has no tls\.key/,
      ],
    },
    {
      edit: "a Secret in another namespace",
      block: () =>
        edited(
          "-n trueidle create secret generic trueidle-agent-token",
          "-n default create secret generic trueidle-agent-token",
        ),
      expected: [
        /Secret trueidle\/trueidle-agent-token is not created: .* TRUEIDLE_TOKEN/,
        /Secret default\/trueidle-agent-token is created before namespace default exists/,
        /Secret default\/trueidle-agent-token is not used/,
      ],
    },
    {
      edit: "a Secret without -n",
      block: () =>
        edited("-n trueidle create secret generic trueidle-agent-token", "create secret generic trueidle-agent-token"),
      expected: [/Secret trueidle-agent-token is created without -n/, /trueidle\/trueidle-agent-token is not created/],
    },
    {
      edit: "a Secret nothing uses",
      block: () =>
        edited(
          "kubectl apply -k",
          "kubectl -n trueidle create secret generic trueidle-extra --from-literal=a=b\nkubectl apply -k",
        ),
      expected: [/Secret trueidle\/trueidle-extra is not used by the overlay/],
    },
    {
      edit: "a key nothing reads",
      block: () => edited("--from-file=token=agent.token", "--from-file=token=agent.token --from-literal=org=x"),
      expected: [/Secret trueidle\/trueidle-agent-token key org is read by nothing/],
    },
    {
      edit: "no namespace before the Secrets",
      block: () => edited("kubectl create namespace trueidle", ""),
      expected: [/Secret trueidle\/trueidle-collector-tls is created before namespace trueidle exists/],
    },
    {
      edit: "a copy one folder up, where ../../base is not the base",
      block: () => edited("cp -r overlays/example overlays/my-site", "cp -r overlays/example my-site"),
      expected: [
        /kubectl apply -k overlays\/my-site: .*no kustomization\.yaml/,
        /\$EDITOR overlays\/my-site\/agent\.env: .* does not exist/,
      ],
    },
  ])("name what is wrong with $edit", ({ block, expected }) => {
    const problems = checkInstall(readInstallBlock(block()));
    for (const e of expected) expect(problems, String(e)).toEqual(expect.arrayContaining([expect.stringMatching(e)]));
  });

  it("find a copy whose resources no longer reach the base", () => {
    const b = edited("cp -r overlays/example overlays/my-site", "cp -r overlays/example my-site");
    const moved = { ...b, text: b.text.replace(/overlays\/my-site/g, "my-site") };
    expect(checkInstall(readInstallBlock(moved))).toEqual(
      expect.arrayContaining([
        expect.stringMatching(
          /kubectl apply -k my-site: resource \.\.\/\.\.\/base of the copy is deploy\/base, not deploy\/kubernetes\/base/,
        ),
      ]),
    );
  });

  it.each([
    [
      "an unknown kubectl subcommand",
      "kubectl -n trueidle annotate secret trueidle-influx a=b",
      /kubectl annotate secret is not a subcommand this test reads/,
    ],
    [
      "an unknown kind of Secret",
      "kubectl -n trueidle create secret docker-registry pull --docker-server=r",
      /kubectl create secret is not a subcommand/,
    ],
    [
      "an unknown flag",
      "kubectl -n trueidle create secret generic x --from-env-file=x.env",
      /the flag --from-env-file is not read here/,
    ],
    ["another command", "helm install trueidle ./chart", /helm is not a command this test reads/],
    ["a pipe", "kubectl -n trueidle get pods | head", /the shell operator \|/],
  ])("refuse %s, naming its line", (_what, added, message) => {
    const b = current();
    const block = { ...b, text: `${b.text}\n${added}` };
    const line = lineOf(block, added);
    expect(() => readInstallBlock(block)).toThrow(message);
    expect(() => readInstallBlock(block)).toThrow(`${K8S_README}:${line}:`);
  });

  it("read a continuation broken by a space after its backslash as the shell does", () => {
    // `\ ` is an escaped space: the command ends at that line with an extra argument " ".
    const b = edited("--type=kubernetes.io/tls \\\n", "--type=kubernetes.io/tls \\ \n");
    const line = lineOf(b, "create secret generic trueidle-collector-tls");
    expect(() => readInstallBlock(b)).toThrow(
      `${K8S_README}:${line}: \`kubectl -n trueidle create secret generic trueidle-collector-tls --type=kubernetes.io/tls  \`: create secret generic takes one name`,
    );
  });
});
