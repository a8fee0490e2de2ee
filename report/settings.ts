/**
 * The report's settings (common/settings.ts): the defaults buildReport and its InfluxDB
 * client fall back to, and the defaults and bounds of `trueidle report`'s flags
 * (cli/report-command.ts builds them from here).
 */
import { DEFAULT_QUERY_TIMEOUT_MS } from "../common/influx/client.js";
import { DEFAULT_INFLUX_DATABASE } from "../common/influx/url.js";
import type { Setting } from "../common/settings.js";
import type { Measurement } from "./capacity.js";

const MEASUREMENTS = ["auto", "fleet_hour", "gpu_hour", "gpu_window"] as const satisfies readonly (
  | Measurement
  | "auto"
)[];

export const REPORT_SETTINGS = {
  influxUrl: {
    kind: "text",
    default: `http://localhost:8086/${DEFAULT_INFLUX_DATABASE}`,
    meaning: "InfluxDB 1.x base URL; the path is the database.",
  },
  since: {
    kind: "text",
    default: "30d",
    meaning: "Start of the range: a duration ago or an RFC 3339 time, rounded down to the hour.",
  },
  by: { kind: "text", default: "model", meaning: "Comma-separated tag keys to group by." },
  format: {
    kind: "text",
    default: "table",
    choices: ["table", "csv", "json", "html"] as const,
    meaning: "Output format.",
  },
  measurement: {
    kind: "text",
    default: "auto" as const,
    choices: MEASUREMENTS,
    meaning:
      "Read the fleet-hour roll-ups (fleet_hour), the GPU-hour roll-ups (gpu_hour) or the raw windows (gpu_window); auto picks by the range and the --by keys.",
  },
  pricePerGpuHour: { kind: "number", min: 0, meaning: "Price of a GPU-hour, for the idle cost." },
  queryTimeoutMs: {
    kind: "duration",
    default: DEFAULT_QUERY_TIMEOUT_MS,
    min: 1000,
    meaning: "How long one InfluxDB query may take.",
  },
} satisfies Record<string, Setting>;
