import bcrypt from "bcryptjs";
import { describe, expect, it } from "vitest";
import { BcryptUsers, FAILURE_TTL_MS, MAX_WAITING, SUCCESS_TTL_MS } from "./bcrypt-users.js";

const PASSWORD = "scrape-pass-never-logged";
/**
 * bcrypt hashes of PASSWORD (cost 4) and of "s3cret-for-bob" (cost 5) made by another
 * implementation, libxcrypt's crypt(3) on Debian 12, in each prefix the format allows.
 */
const LIBXCRYPT = {
  "2y": "$2y$04$abcdefghijklmnopqrstuuAIsR6NxYTXFIBQ7GAxd1JdUzdtHZYRy",
  "2a": "$2a$04$abcdefghijklmnopqrstuuAIsR6NxYTXFIBQ7GAxd1JdUzdtHZYRy",
  "2b": "$2b$04$abcdefghijklmnopqrstuuAIsR6NxYTXFIBQ7GAxd1JdUzdtHZYRy",
  bob: "$2y$05$ZYXWVUTSRQPONMLKJIHGFesS9AwseuiiWQiJVbDdgPHRwALHmGjSu",
};
const basic = (user: string, pass: string): string => `Basic ${Buffer.from(`${user}:${pass}`).toString("base64")}`;

/** Users whose bcrypt comparisons are counted, on a clock the test moves. */
function counted(users: Record<string, string>): {
  users: BcryptUsers;
  calls: () => number;
  advance: (ms: number) => void;
} {
  let n = 0;
  let now = 0;
  const u = new BcryptUsers(new Map(Object.entries(users)), {
    clock: () => now,
    compare: (p, h) => {
      n++;
      return bcrypt.compare(p, h);
    },
  });
  return { users: u, calls: () => n, advance: (ms) => void (now += ms) };
}

describe("BcryptUsers", () => {
  it("verifies $2a$, $2b$ and $2y$ hashes made by libxcrypt, and refuses wrong or malformed credentials", async () => {
    const users = new BcryptUsers(
      new Map([
        ["a", LIBXCRYPT["2a"]],
        ["b", LIBXCRYPT["2b"]],
        ["y", LIBXCRYPT["2y"]],
        ["bob", LIBXCRYPT.bob],
      ]),
    );
    for (const user of ["a", "b", "y"]) expect(await users.authenticate(basic(user, PASSWORD))).toEqual({ user });
    expect(await users.authenticate(basic("bob", "s3cret-for-bob"))).toEqual({ user: "bob" });
    expect(await users.authenticate(basic("bob", PASSWORD))).toBe("denied");
    expect(await users.authenticate(basic("nobody", PASSWORD))).toBe("denied");
    expect(await users.authenticate(undefined)).toBe("denied");
    expect(await users.authenticate("Bearer abc")).toBe("denied");
    expect(await users.authenticate(`Basic ${Buffer.from("no-colon").toString("base64")}`)).toBe("denied");
    expect(users.size).toBe(4);
  });

  it("runs bcrypt once per login while it is remembered, for right and for repeated wrong credentials", async () => {
    const { users, calls, advance } = counted({ prometheus: LIBXCRYPT["2y"] });
    for (let i = 0; i < 5; i++)
      expect(await users.authenticate(basic("prometheus", PASSWORD))).toEqual({ user: "prometheus" });
    expect(calls()).toBe(1);
    for (let i = 0; i < 5; i++) expect(await users.authenticate(basic("prometheus", "wrong"))).toBe("denied");
    expect(calls()).toBe(2);
    // An unknown user costs a bcrypt too (so timing does not tell users apart), once.
    for (let i = 0; i < 3; i++) expect(await users.authenticate(basic("mallory", PASSWORD))).toBe("denied");
    expect(calls()).toBe(3);
    advance(FAILURE_TTL_MS + 1);
    expect(await users.authenticate(basic("prometheus", "wrong"))).toBe("denied");
    expect(await users.authenticate(basic("prometheus", PASSWORD))).toEqual({ user: "prometheus" });
    expect(calls()).toBe(4);
    advance(SUCCESS_TTL_MS - FAILURE_TTL_MS);
    expect(await users.authenticate(basic("prometheus", PASSWORD))).toEqual({ user: "prometheus" });
    expect(calls()).toBe(5);
  });

  it("checks one at a time and answers busy beyond the waiting bound", async () => {
    let running = 0;
    let most = 0;
    const users = new BcryptUsers(new Map([["p", LIBXCRYPT["2y"]]]), {
      compare: async (p, h) => {
        running++;
        most = Math.max(most, running);
        try {
          return await bcrypt.compare(p, h);
        } finally {
          running--;
        }
      },
    });
    const outcomes = await Promise.all(
      Array.from({ length: MAX_WAITING + 5 }, (_, i) => users.authenticate(basic("p", `guess-${i}`))),
    );
    expect(most).toBe(1);
    expect(outcomes.filter((o) => o === "busy")).toHaveLength(5);
    expect(outcomes.filter((o) => o === "denied")).toHaveLength(MAX_WAITING);
    expect(await users.authenticate(basic("p", PASSWORD))).toEqual({ user: "p" });
  });
});
