/**
 * Every metric the collector exposes, in one table: name, type, unit, scope, extra labels
 * and help. The renderer takes names and help from here only, so a name appears once.
 *
 * Scope says which labels a series carries besides `labels`:
 * - `gpu`: the per-GPU labels `host`, `gpu` (index), `uuid`, `model` and the host's
 *   configured labels;
 * - `board`: the same labels for a board in MIG mode, whose row (GpuWindow.mig_board) is not
 *   a GPU: its instances are the GPUs, with series of their own;
 * - `fleet`: `model` and the host's configured labels;
 * - `owner`: the owner fields `--owner-labels` names (namespace, pod, container, job, user);
 * - `self`: none.
 */
export type MetricType = "counter" | "gauge";
/** Base unit, which is also the name's suffix (before `_total` on counters); "" for none. */
export type MetricUnit = "seconds" | "watts" | "bytes" | "ratio" | "";
export type MetricScope = "gpu" | "board" | "fleet" | "owner" | "self";

export interface MetricDef {
  readonly name: string;
  readonly type: MetricType;
  readonly unit: MetricUnit;
  readonly scope: MetricScope;
  /** Labels beyond those of the scope. */
  readonly labels: readonly string[];
  readonly help: string;
}

function metric(
  name: string,
  type: MetricType,
  unit: MetricUnit,
  scope: MetricScope,
  labels: readonly string[],
  help: string,
): MetricDef {
  return Object.freeze({ name, type, unit, scope, labels: Object.freeze([...labels]), help });
}

export const METRICS = {
  gpuInfo: metric(
    "trueidle_gpu_info",
    "gauge",
    "",
    "gpu",
    ["driver"],
    "Always 1; the labels name the GPU, its host's configured labels and its driver version.",
  ),
  gpuUp: metric(
    "trueidle_gpu_up",
    "gauge",
    "",
    "gpu",
    [],
    "1 while fresh windows arrive for the GPU, 0 once three window lengths passed without one.",
  ),
  gpuObservedSeconds: metric(
    "trueidle_gpu_observed_seconds_total",
    "counter",
    "seconds",
    "gpu",
    [],
    "Seconds of the GPU covered by samples.",
  ),
  gpuStateSeconds: metric(
    "trueidle_gpu_state_seconds_total",
    "counter",
    "seconds",
    "gpu",
    ["state"],
    "Seconds the GPU spent in each idle-model state (unavailable, free_idle, active, busy_phantom, held_idle).",
  ),
  gpuReportedIdleSeconds: metric(
    "trueidle_gpu_reported_idle_seconds_total",
    "counter",
    "seconds",
    "gpu",
    [],
    "Seconds with utilization.gpu below the busy threshold U: what nvidia-smi based dashboards call idle.",
  ),
  gpuReportedBusySeconds: metric(
    "trueidle_gpu_reported_busy_seconds_total",
    "counter",
    "seconds",
    "gpu",
    [],
    "Sum of utilization.gpu/100 times seconds; its rate is the mean reported utilization.",
  ),
  gpuRealBusySeconds: metric(
    "trueidle_gpu_real_busy_seconds_total",
    "counter",
    "seconds",
    "gpu",
    [],
    "Sum of real utilization times seconds; its rate is the mean real utilization.",
  ),
  gpuState: metric(
    "trueidle_gpu_state",
    "gauge",
    "",
    "gpu",
    ["state"],
    "1 for the GPU's current idle-model state, 0 for the other four; a stale GPU is unavailable.",
  ),
  gpuIdleStreakSeconds: metric(
    "trueidle_gpu_idle_streak_seconds",
    "gauge",
    "seconds",
    "gpu",
    [],
    "Seconds since the GPU was last active, as of its last window.",
  ),
  gpuRealUtilization: metric(
    "trueidle_gpu_real_utilization_ratio",
    "gauge",
    "ratio",
    "gpu",
    ["source"],
    "Real utilization (0 to 1) of the GPU's last sample; source names the signal it came from.",
  ),
  gpuReportedUtilization: metric(
    "trueidle_gpu_reported_utilization_ratio",
    "gauge",
    "ratio",
    "gpu",
    [],
    "utilization.gpu/100 of the GPU's last sample; absent where the driver does not report it.",
  ),
  gpuProcesses: metric(
    "trueidle_gpu_processes",
    "gauge",
    "",
    "gpu",
    [],
    "Compute processes on the GPU in its last sample.",
  ),
  gpuPowerWatts: metric(
    "trueidle_gpu_power_watts",
    "gauge",
    "watts",
    "gpu",
    [],
    "Power draw of the GPU's last sample; absent where the driver does not report it.",
  ),
  gpuPowerFloorWatts: metric(
    "trueidle_gpu_power_floor_watts",
    "gauge",
    "watts",
    "gpu",
    [],
    "Idle power floor the agent uses for the GPU; absent where unknown.",
  ),
  gpuMemoryUsedBytes: metric(
    "trueidle_gpu_memory_used_bytes",
    "gauge",
    "bytes",
    "gpu",
    [],
    "GPU memory in use in the GPU's last sample; absent where the driver does not report it.",
  ),
  boardInfo: metric(
    "trueidle_mig_board_info",
    "gauge",
    "",
    "board",
    ["driver"],
    "Always 1, for each board in MIG mode; the labels name the board, its host's configured labels and its driver version. The trueidle_mig_board_* figures are the board's own; its MIG instances are the GPUs (trueidle_gpu_* with parent_uuid set to the board's uuid).",
  ),
  boardUp: metric(
    "trueidle_mig_board_up",
    "gauge",
    "",
    "board",
    [],
    "1 while fresh windows arrive for the board in MIG mode and the last reading of its newest window had no error; 0 once three window lengths passed without one, or while the board cannot be read. The board's own health: its MIG instances are the GPUs, each with its trueidle_gpu_up.",
  ),
  boardObservedSeconds: metric(
    "trueidle_mig_board_observed_seconds_total",
    "counter",
    "seconds",
    "board",
    [],
    "Seconds the board in MIG mode was sampled: the board's own figure, not GPU capacity (its MIG instances are the GPUs), so it is in no trueidle_gpu_* or trueidle_fleet_* series.",
  ),
  boardUnavailableSeconds: metric(
    "trueidle_mig_board_unavailable_seconds_total",
    "counter",
    "seconds",
    "board",
    [],
    "Seconds the board in MIG mode was sampled but could not be read: the board's own figure, not GPU capacity (its MIG instances are the GPUs).",
  ),
  boardPowerWatts: metric(
    "trueidle_mig_board_power_watts",
    "gauge",
    "watts",
    "board",
    [],
    "Power draw of the whole board in MIG mode in its last sample: the board's own figure, not shared out among its MIG instances, which are the GPUs. Absent where the driver does not report it.",
  ),
  boardPowerFloorWatts: metric(
    "trueidle_mig_board_power_floor_watts",
    "gauge",
    "watts",
    "board",
    [],
    "Idle power floor the agent uses for the whole board in MIG mode: the board's own figure, not shared out among its MIG instances, which are the GPUs. Absent where unknown.",
  ),
  boardPowerLimitWatts: metric(
    "trueidle_mig_board_power_limit_watts",
    "gauge",
    "watts",
    "board",
    [],
    "Power limit of the whole board in MIG mode, as of its newest window: the board's own figure, not shared out among its MIG instances, which are the GPUs. Absent where not reported.",
  ),
  boardInstances: metric(
    "trueidle_mig_board_instances",
    "gauge",
    "",
    "board",
    [],
    "MIG instances of the board that are up: the GPUs of its host whose parent_uuid is the board's uuid. The board's own figures are the trueidle_mig_board_* series; its instances are the GPUs.",
  ),
  fleetGpus: metric(
    "trueidle_fleet_gpus",
    "gauge",
    "",
    "fleet",
    ["state"],
    "GPUs in each current idle-model state, by model and configured labels; stale GPUs count as unavailable.",
  ),
  fleetStateSeconds: metric(
    "trueidle_fleet_state_seconds_total",
    "counter",
    "seconds",
    "fleet",
    ["state"],
    "Seconds GPUs spent in each idle-model state, by model and configured labels.",
  ),
  fleetObservedSeconds: metric(
    "trueidle_fleet_observed_seconds_total",
    "counter",
    "seconds",
    "fleet",
    [],
    "Seconds of GPUs covered by samples, by model and configured labels (the sum of trueidle_gpu_observed_seconds_total, kept when GPUs expire).",
  ),
  fleetReportedIdleSeconds: metric(
    "trueidle_fleet_reported_idle_seconds_total",
    "counter",
    "seconds",
    "fleet",
    [],
    "Seconds of GPUs with utilization.gpu below the busy threshold U, by model and configured labels.",
  ),
  fleetReportedBusySeconds: metric(
    "trueidle_fleet_reported_busy_seconds_total",
    "counter",
    "seconds",
    "fleet",
    [],
    "Sum of utilization.gpu/100 times seconds over GPUs, by model and configured labels.",
  ),
  fleetRealBusySeconds: metric(
    "trueidle_fleet_real_busy_seconds_total",
    "counter",
    "seconds",
    "fleet",
    [],
    "Sum of real utilization times seconds over GPUs, by model and configured labels.",
  ),
  gpuOwnerInfo: metric(
    "trueidle_gpu_owner_info",
    "gauge",
    "",
    "owner",
    ["host", "gpu", "uuid"],
    "Always 1, for each owner of a GPU held now (its newest window's pods, jobs and process owners); the owner fields are those --owner-labels names.",
  ),
  ownerStateSeconds: metric(
    "trueidle_owner_state_seconds_total",
    "counter",
    "seconds",
    "owner",
    ["state"],
    "Seconds GPUs were held by each owner, in each idle-model state; a second counts once per owner of the GPU.",
  ),
  agentsConnected: metric(
    "trueidle_agents_connected",
    "gauge",
    "",
    "self",
    [],
    "Agent streams that said Hello and are still open.",
  ),
  windowsReceived: metric(
    "trueidle_windows_received_total",
    "counter",
    "",
    "self",
    [],
    "GPU windows received from agents, accepted or not.",
  ),
  windowsRejected: metric(
    "trueidle_windows_rejected_total",
    "counter",
    "",
    "self",
    ["reason"],
    "GPU windows refused as invalid, by reason.",
  ),
  windowsReplayed: metric(
    "trueidle_windows_replayed_total",
    "counter",
    "",
    "self",
    [],
    "GPU windows acknowledged but not counted again, as their GPU's windows covered their time already (re-sent after a lost ack).",
  ),
  influxPointsWritten: metric(
    "trueidle_influx_points_written_total",
    "counter",
    "",
    "self",
    [],
    "Points written to InfluxDB.",
  ),
  influxWriteErrors: metric("trueidle_influx_write_errors_total", "counter", "", "self", [], "Failed InfluxDB writes."),
  spoolBytes: metric(
    "trueidle_spool_bytes",
    "gauge",
    "bytes",
    "self",
    [],
    "Bytes held in the collector's disk spool while InfluxDB is away.",
  ),
  spooledWindows: metric(
    "trueidle_spool_windows_total",
    "counter",
    "",
    "self",
    [],
    "Windows acknowledged once appended to the disk spool, while InfluxDB was away or slow.",
  ),
  streamsRefused: metric(
    "trueidle_streams_refused_total",
    "counter",
    "",
    "self",
    ["reason"],
    "Agent streams the collector refused or ended, by reason.",
  ),
  httpAuthFailures: metric(
    "trueidle_http_auth_failures_total",
    "counter",
    "",
    "self",
    [],
    "HTTP requests refused with 401 for missing or wrong basic-auth credentials.",
  ),
  httpRequestsRefused: metric(
    "trueidle_http_requests_refused_total",
    "counter",
    "",
    "self",
    ["reason"],
    "HTTP requests refused before being served, by reason: auth_throttled (429, too many failed logins from the address), scrapes_in_flight (503, too many /metrics answers in progress), bad_request, header_timeout (headers not complete in time).",
  ),
  scrapesAborted: metric(
    "trueidle_metrics_scrapes_aborted_total",
    "counter",
    "",
    "self",
    [],
    "/metrics answers cut short because the scraper stopped reading or went away.",
  ),
  metricsRenders: metric(
    "trueidle_metrics_renders_total",
    "counter",
    "",
    "self",
    [],
    "/metrics expositions rendered: scrapes that found no cached exposition young enough (--metrics-cache-max-age).",
  ),
  metricsCacheHits: metric(
    "trueidle_metrics_cache_hits_total",
    "counter",
    "",
    "self",
    [],
    "/metrics scrapes answered from an exposition already rendered (or being rendered) for an earlier scrape.",
  ),
  metricsRenderSeconds: metric(
    "trueidle_metrics_render_seconds",
    "gauge",
    "seconds",
    "self",
    [],
    "Time the last complete /metrics render took, compression included (0 before the first).",
  ),
  metricsExpositionBytes: metric(
    "trueidle_metrics_exposition_bytes",
    "gauge",
    "bytes",
    "self",
    ["encoding"],
    "Size of the last complete /metrics exposition: as text (identity) and as cached, gzip-compressed (gzip).",
  ),
  connectionsOpen: metric(
    "trueidle_connections_open",
    "gauge",
    "",
    "self",
    ["listener"],
    "Connections open on each listener (grpc, http).",
  ),
  connectionsRefused: metric(
    "trueidle_connections_refused_total",
    "counter",
    "",
    "self",
    ["listener", "reason"],
    "Connections a listener closed for its limits: max_connections, max_per_address, setup_timeout (no stream, or no request, in time), idle_timeout.",
  ),
} as const satisfies Record<string, MetricDef>;

export type MetricKey = keyof typeof METRICS;

/** The table in exposition order. */
export const METRIC_TABLE: readonly MetricDef[] = Object.freeze(Object.values(METRICS));
