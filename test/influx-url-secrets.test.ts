/**
 * A password typed into `--influx-url` (or TRUEIDLE_INFLUX_URL) never comes back in what the
 * real binary prints, whatever it holds: the command refuses the URL, names the fix and shows
 * the URL with its credentials cut out.
 */
import { describe, expect, it } from "vitest";
import { runTrueidle } from "./helpers/trueidle-process.js";

const PASSWORD = "S3cret/Pa@ss#word?%2F";
const URLS = [
  `http://dbadmin:${PASSWORD}@influx.example:8086/trueidle`,
  `dbadmin:${PASSWORD}@influx.example:8086/trueidle`,
  `https://${PASSWORD}@influx.example/trueidle`,
];
/** Pieces of the credentials that must not appear anywhere in the output. */
const SECRET_PIECES = ["dbadmin", "S3cret", "Pa@ss", "word?", "%2F"];

// The collector refuses it as a usage error (exit 2) before it starts anything; the report as a
// configuration error (exit 1) before it reaches InfluxDB.
const COMMANDS: Array<[string, string[], number]> = [
  ["collector", ["collector", "--plaintext"], 2],
  ["report", ["report", "--since", "1d"], 1],
];

describe("--influx-url with credentials", () => {
  const cases = COMMANDS.flatMap(([name, args, code]) =>
    URLS.flatMap((url) => [
      { how: `${name} --influx-url ${JSON.stringify(url)}`, args: [...args, "--influx-url", url], env: {}, code },
      { how: `${name} with TRUEIDLE_INFLUX_URL=${JSON.stringify(url)}`, args, env: { TRUEIDLE_INFLUX_URL: url }, code },
    ]),
  );

  it.each(cases)("$how is refused without echoing the password", async ({ args, env, code }) => {
    const r = await runTrueidle(args, { TRUEIDLE_INFLUX_USERNAME: "", TRUEIDLE_INFLUX_PASSWORD: "", ...env });
    expect(r.code).toBe(code);
    expect(r.output).toMatch(
      /--influx-url "(https?:\/\/)?…@influx\.example[^"]*" must not hold credentials; set TRUEIDLE_INFLUX_USERNAME/,
    );
    for (const piece of SECRET_PIECES) expect(r.output).not.toContain(piece);
  });

  it("does not echo a URL given without its flag either", async () => {
    const r = await runTrueidle(["report", URLS[0]!]);
    expect(r.code).toBe(2);
    expect(r.output).toContain('unexpected argument "http://…@influx.example:8086/trueidle"');
    for (const piece of SECRET_PIECES) expect(r.output).not.toContain(piece);
  });
});
