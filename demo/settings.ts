/**
 * The demo's settings (common/settings.ts): the simulated fleet history's seed, which the
 * history model and the backfill fall back to and `trueidle demo --seed` defaults to.
 */
import type { Setting } from "../common/settings.js";

export const DEMO_SETTINGS = {
  seed: {
    kind: "integer",
    default: 1,
    min: 0,
    max: 4_294_967_295,
    meaning: "Seed of the simulated history: the same seed, range and fleet give the same readings.",
  },
} satisfies Record<string, Setting>;
