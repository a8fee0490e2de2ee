import { describe, expect, it } from "vitest";
import { parseInfluxUrl, redactUrlCredentials } from "./url.js";

/** The message `parseInfluxUrl(text)` throws (it must throw). */
function refusal(text: string): string {
  try {
    parseInfluxUrl(text);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error(`${JSON.stringify(text)} was accepted`);
}

/** Substrings of `secret`, 3 characters or longer, found in `message` but not in `allowed`. */
function leaks(message: string, secret: string, allowed: string): string[] {
  const out = new Set<string>();
  for (let i = 0; i < secret.length; i++) {
    for (let j = i + 3; j <= secret.length; j++) {
      const sub = secret.slice(i, j);
      if (message.includes(sub) && !allowed.includes(sub)) out.add(sub);
    }
  }
  return [...out];
}

const USER = "dbadmin7";
const PASSWORDS = [
  "S3cret/Pass",
  "p@ss@w0rd",
  "pa:ss:wd:9",
  "pass#frag1",
  "pass?query1",
  "p%40ss%2Fwd",
  "pass word 42",
  `q"uo'te\`d`,
  "pässwörd✓日本",
  "line1\nline2",
  "tab\there",
  "back\\slash",
  "p/a@s#s?w%rd:x",
  "////",
  "@@@@",
  "]zq[<>{}|^",
];
/** How a URL can hold credentials: with and without a scheme, user only, encoded, odd slashes. */
const FORMS: Array<[string, (userinfo: string) => string]> = [
  ["http", (u) => `http://${u}@influx.example:8086/trueidle`],
  ["https without a port", (u) => `https://${u}@influx.example/trueidle`],
  ["upper-case scheme", (u) => `HTTP://${u}@influx.example:8086/trueidle`],
  ["no scheme", (u) => `${u}@influx.example:8086/trueidle`],
  ["scheme-relative", (u) => `//${u}@influx.example:8086/trueidle`],
  ["one slash", (u) => `http:/${u}@influx.example:8086`],
  ["backslashes", (u) => `http:\\\\${u}@influx.example:8086/trueidle`],
  ["another scheme", (u) => `ftp://${u}@influx.example/trueidle`],
  ["query and fragment", (u) => `http://${u}@influx.example:8086/trueidle?db=x#top`],
  ["spaces around", (u) => `  http://${u}@influx.example:8086/trueidle \n`],
  ["an @ in the path too", (u) => `http://${u}@influx.example:8086/a@b`],
];
const USERINFOS: Array<[string, (pw: string) => string]> = [
  ["user:password", (pw) => `${USER}:${pw}`],
  ["user only", (pw) => pw],
  ["percent-encoded", (pw) => `${encodeURIComponent(USER)}:${encodeURIComponent(pw)}`],
];

describe("parseInfluxUrl never echoes credentials", () => {
  const cases = FORMS.flatMap(([form, make]) =>
    USERINFOS.flatMap(([kind, info]) =>
      PASSWORDS.map((pw) => ({ name: `${form}, ${kind}, ${JSON.stringify(pw)}`, make, userinfo: info(pw), pw })),
    ),
  );

  it.each(cases)("$name", ({ make, userinfo, pw }) => {
    const message = refusal(make(userinfo));
    // The same URL with harmless credentials: the template and host part the message may show.
    const allowed = refusal(make("u"));
    expect(message).toMatch(/^--influx-url /);
    expect(message).not.toContain(pw);
    expect(leaks(message, userinfo, allowed)).toEqual([]);
    expect(leaks(message, pw, allowed)).toEqual([]);
    expect(leaks(message, USER, allowed)).toEqual([]);
  });

  it("shows neither InfluxDB's query credentials (?u=&p=) nor text that is no URL", () => {
    const forms = [
      (pw: string) => `http://influx.example:8086/trueidle?u=${USER}&p=${encodeURIComponent(pw)}`,
      (pw: string) => `http://influx.example:8086/trueidle#${pw}`,
      (pw: string) => pw,
      (pw: string) => `${USER}:${pw}`,
    ];
    for (const pw of PASSWORDS) {
      for (const make of forms) {
        const text = make(pw);
        if (text.includes("@")) continue; // the forms above
        const message = refusal(text);
        // What the message shows for a harmless value in the same place.
        const allowed = refusal(make("x y"));
        expect(leaks(message, pw, allowed)).toEqual([]);
        expect(message).not.toContain(USER);
      }
    }
  });

  it("names the fix and shows the host it was given", () => {
    expect(refusal("http://admin:S3cret/Pass@influx.example:8086/db")).toBe(
      '--influx-url "http://…@influx.example:8086/db" must not hold credentials; set TRUEIDLE_INFLUX_USERNAME and TRUEIDLE_INFLUX_PASSWORD or use --influx-credentials-file',
    );
    expect(refusal("admin:pw@influx.example")).toMatch(/^--influx-url "…@influx\.example" must not hold credentials/);
  });

  it("redacts generated userinfo of every awkward character", () => {
    let seed = 12345;
    const next = (n: number): number => {
      // mulberry32: a fixed seed, so every run goes through the same thousand cases.
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t ^= t + Math.imul(t ^ (t >>> 7), 61 | t);
      return Math.floor((((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * n);
    };
    const chars = [..."ab3/@:#?% \"'\\\n\t\u00e9\u202e\u{1f600}[]<>{}|^~=&;,."];
    for (let i = 0; i < 1000; i++) {
      const len = 3 + next(20);
      let secret = "";
      for (let k = 0; k < len; k++) secret += chars[next(chars.length)];
      for (const [, make] of FORMS) {
        const text = make(secret);
        const shown = redactUrlCredentials(text);
        expect(shown.endsWith(text.slice(text.lastIndexOf("@")))).toBe(true);
        // All that is left of the secret is what the host part shows anyway.
        expect(leaks(shown, secret, text.slice(text.lastIndexOf("@")) + make("u"))).toEqual([]);
      }
    }
  });

  it("leaves text without an @ as it is", () => {
    expect(redactUrlCredentials("http://influx.example:8086/trueidle")).toBe("http://influx.example:8086/trueidle");
    expect(redactUrlCredentials("not a url")).toBe("not a url");
    expect(redactUrlCredentials("http://@h")).toBe("http://…@h");
    expect(redactUrlCredentials("a//b:c@h")).toBe("…@h");
  });
});

describe("parseInfluxUrl", () => {
  it("takes the database from the path, trueidle when the path is empty", () => {
    expect(parseInfluxUrl("http://influx.example:8086/fleet")).toEqual({
      baseUrl: "http://influx.example:8086",
      database: "fleet",
    });
    expect(parseInfluxUrl(" https://influx.example/ ")).toEqual({
      baseUrl: "https://influx.example",
      database: "trueidle",
    });
    expect(parseInfluxUrl("http://[::1]:8086")).toEqual({ baseUrl: "http://[::1]:8086", database: "trueidle" });
    expect(parseInfluxUrl("http://127.0.0.1:8086")).toEqual({ baseUrl: "http://127.0.0.1:8086", database: "trueidle" });
    expect(parseInfluxUrl("http://h:8086/gpu_history-2/")).toEqual({
      baseUrl: "http://h:8086",
      database: "gpu_history-2",
    });
  });

  it("refuses credentials in the URL, naming where they go instead, and never echoes them", () => {
    for (const url of [
      "http://user:secret@h:8086/trueidle",
      "http://admin:S3cret/Pass@influx:8086/db",
      "http://admin:S3cret/Pass@influx:8086/a/b?x",
      "admin:S3cret/Pass@influx",
    ]) {
      const message = refusal(url);
      expect(message).toMatch(/must not hold credentials; set TRUEIDLE_INFLUX_USERNAME/);
      expect(message).not.toMatch(/secret|S3cret|Pass|admin|user/);
    }
    expect(refusal("ftp://h/trueidle")).toMatch(/must start with http:\/\/ or https:\/\//);
  });

  it.each([
    ["not a url", /^--influx-url is not a URL \(9 characters, not shown\); use the form/],
    ["influx:8086/trueidle", /^--influx-url must start with http:\/\/ or https:\/\/; use the form/],
    ["influx://h:8086/trueidle", /^--influx-url must start with http:\/\/ or https:\/\/; use the form/],
    ["http://h:8086/trueidle?u=x", /^--influx-url "http:\/\/h:8086\/trueidle\?…" must not have a query or fragment/],
    ["http://h:8086/a/b", /^--influx-url path "\/a\/b" must be a single database name/],
    ["http://h:8086/bad%20name", /database name "bad name" must start with a letter/],
    ["http://h:8086/%zz", /database name "%zz" must start with a letter/],
    ["http://h:8086/a%40b", /database name "a@b" must start with a letter/],
  ])("refuses %s, saying why", (text, message) => {
    expect(refusal(text)).toMatch(message);
  });
});
