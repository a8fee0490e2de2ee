#!/usr/bin/env bash
# trueidle against a real GPU: runs `trueidle agent --watch` with --source nvml and with
# --source nvidia-smi beside loads.py (loads of known shape) and truth.py (NVML and GPM
# read directly), then compare.mjs writes the table. See scripts/gpu-truth/README.md.
#
#   scripts/gpu-truth/run.sh [--seconds 30] [--settle-s 5] [--interval-ms 1000] [--gpu 0]
#                            [--cpu-s 60] [--cpu-warmup-s S] [--kit DIR] [--out DIR] [--dry-run]
#
# On the GPU machine: Node and trueidle come from the kit that pack.sh made (--kit, default
# .device/), loads.py and truth.py from DIR/gpu-truth/; PyTorch and nvidia-ml-py must be
# there. Writes into --out (default $OUT): gpu-truth.md (the table), gpu-truth.json,
# phases.jsonl, truth.csv, nvml.jsonl, smi.jsonl and logs.txt; agent-cpu.md and .json (the
# agents' whole-process CPU beside a bare nvidia-smi loop, agent-cpu.mjs: started with the
# loads, measured for --cpu-s after --cpu-warmup-s, by default the loads' length, so that V8
# has compiled the agents' code; --cpu-s 0 skips it) and nvml-probe.txt (each NVML call's
# cost and the driver's sample buffers, nvml-probe.py).
#
# --dry-run: no GPU. The stub libnvidia-ml.so stands in for the driver, the fake nvidia-smi
# for nvidia-smi, and scripts/gpu-truth/dry-run.ts for loads.py and truth.py, all driven
# by one scenario with loads.py's phases. Needs this checkout's node_modules and dist/
# (npm run build); uses the kit too when --kit is given.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

seconds=30
settle=5
interval_ms=1000
gpu=0
cpu_s=60
cpu_warmup_s=""
kit=""
out="${OUT:-}"
dry=0

die() { printf 'run.sh: %s\n' "$*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=${2:?--seconds needs a value}; shift 2 ;;
    --settle-s) settle=${2:?--settle-s needs a value}; shift 2 ;;
    --interval-ms) interval_ms=${2:?--interval-ms needs a value}; shift 2 ;;
    --gpu) gpu=${2:?--gpu needs a value}; shift 2 ;;
    --cpu-s) cpu_s=${2:?--cpu-s needs a value}; shift 2 ;;
    --cpu-warmup-s) cpu_warmup_s=${2:?--cpu-warmup-s needs a value}; shift 2 ;;
    --kit) kit=${2:?--kit needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ -n "$out" ] || die "no output folder: set OUT or give --out DIR"
[[ $seconds =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--seconds takes a number"
[[ $settle =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--settle-s takes a number"
[[ $interval_ms =~ ^[0-9]+$ ]] || die "--interval-ms takes whole milliseconds"
[[ $gpu =~ ^[0-9]+$ ]] || die "--gpu takes a GPU index"
[[ $cpu_s =~ ^[0-9]+$ ]] || die "--cpu-s takes whole seconds"
# By default the measurement starts when the loads end: seven phases and PyTorch's start.
[ -n "$cpu_warmup_s" ] || cpu_warmup_s=$(awk -v s="$seconds" 'BEGIN { printf "%d", 7 * s + 30 }')
[[ $cpu_warmup_s =~ ^[0-9]+$ ]] || die "--cpu-warmup-s takes whole seconds"
if [ "$dry" = 0 ] && [ -z "$kit" ]; then kit="$root/.device"; fi
mkdir -p "$out"
out=$(cd "$out" && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/trueidle-gpu-truth.XXXXXX")
pids=()
cleanup() {
  local p
  # TERM first: agent-cpu.mjs stops the agents and the collector it started.
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  if [ "${#pids[@]}" -gt 0 ]; then sleep 1; fi
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '==> %s\n' "$*" | tee -a "$work/run.log"; }

# Stops a background process by its id: SIGTERM, then SIGKILL after 10 s.
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# ---- Node and trueidle ------------------------------------------------------------------

# tar's -J needs the xz program; Python's tarfile reads .tar.xz without it.
untar_xz() {
  if command -v xz >/dev/null; then
    tar -xJf "$1" -C "$2"
  else
    python3 -c 'import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    t.extractall(sys.argv[2], **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))' "$1" "$2"
  fi
}

if [ -n "$kit" ]; then
  node_tar=$(find "$kit" -maxdepth 1 -name 'node-v*-linux-x64.tar.xz' | head -n 1)
  [ -n "$node_tar" ] || die "no node-v*-linux-x64.tar.xz in $kit: run scripts/gpu-truth/pack.sh first"
  [ -f "$kit/trueidle-app.tar.xz" ] || die "no trueidle-app.tar.xz in $kit: run scripts/gpu-truth/pack.sh first"
  mkdir -p "$work/node" "$work/app"
  untar_xz "$node_tar" "$work/node"
  untar_xz "$kit/trueidle-app.tar.xz" "$work/app"
  node=$(find "$work/node" -mindepth 3 -maxdepth 3 -path '*/bin/node' -type f | head -n 1)
  [ -n "$node" ] || die "no bin/node in $node_tar"
  trueidle="$work/app/trueidle/bin/trueidle.js"
  say "Unpacked Node $("$node" --version) and trueidle from $kit."
else
  node=$(command -v node) || die "node not found"
  trueidle="$root/bin/trueidle.js"
  [ -f "$root/dist/cli/main.js" ] || die "dist/ is missing: npm run build first"
fi

# ---- what runs: the real GPU, or the stand-ins ------------------------------------------

interval_s=$(awk -v ms="$interval_ms" 'BEGIN { printf "%g", ms / 1000 }')
nvml_args=()
smi_args=()
if [ "$dry" = 1 ]; then
  stand_in=("$(command -v node)" --import tsx "$here/dry-run.ts")
  "${stand_in[@]}" prepare --dir "$work" --seconds "$seconds"
  # shellcheck source=/dev/null
  source "$work/dry-run.env"
  nvml_args=(--nvml-lib "$NVML_LIB")
  smi_args=(--nvidia-smi "$NVIDIA_SMI")
  loads_cmd=("${stand_in[@]}" loads --dir "$work")
  truth_cmd=("${stand_in[@]}" truth --dir "$work" --interval-ms "$interval_ms")
  facts="DRY RUN, no GPU: the stub libnvidia-ml.so and the fake nvidia-smi stand in for the driver, driven by a scenario with loads.py's phases (scripts/gpu-truth/dry-run.ts)."
else
  command -v python3 >/dev/null || die "python3 not found"
  if [ ! -f "$kit/gpu-truth/loads.py" ] || [ ! -f "$kit/gpu-truth/truth.py" ]; then
    die "no gpu-truth/loads.py and truth.py in $kit: run scripts/gpu-truth/pack.sh"
  fi
  smi=$(command -v nvidia-smi || true)
  for c in /usr/local/nvidia/bin/nvidia-smi /usr/bin/nvidia-smi; do
    if [ -z "$smi" ] && [ -x "$c" ]; then smi=$c; fi
  done
  [ -n "$smi" ] || die "nvidia-smi not found"
  smi_args=(--nvidia-smi "$smi")
  # The agent loads libnvidia-ml.so.1 through the loader's path; a driver mounted elsewhere
  # (a container's /usr/local/nvidia) is named to it, and to truth.py, explicitly.
  if ! ldconfig -p 2>/dev/null | grep -q 'libnvidia-ml\.so\.1 '; then
    for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/cuda/compat; do
      if [ -e "$d/libnvidia-ml.so.1" ]; then
        nvml_args=(--nvml-lib "$d/libnvidia-ml.so.1")
        export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        break
      fi
    done
  fi
  total_s=$(awk -v s="$seconds" 'BEGIN { printf "%d", 7 * s + 300 }')
  loads_cmd=(python3 -u "$kit/gpu-truth/loads.py" --seconds "$seconds" --device "$gpu")
  truth_cmd=(python3 -u "$kit/gpu-truth/truth.py" --interval "$interval_s" --seconds "$total_s")
  gpu_facts=$("$smi" --query-gpu=name,driver_version,memory.total,power.limit --format=csv,noheader -i "$gpu" 2>&1 | head -n 1) || true
  torch_facts=$(python3 -c 'import torch; print("PyTorch", torch.__version__)' 2>&1 | tail -n 1) || true
  facts="$gpu_facts; kernel $(uname -r); $torch_facts"
fi
say "Machine: $facts"
version=$("$node" "$trueidle" --version 2>/dev/null || echo "trueidle ?")

# ---- run ---------------------------------------------------------------------------------

say "Starting the truth reader and the two agents."
"${truth_cmd[@]}" >"$out/truth.csv" 2>"$work/truth.log" &
truth_pid=$!
pids+=("$truth_pid")
"$node" "$trueidle" agent --watch --source nvml "${nvml_args[@]}" --interval "${interval_ms}ms" >"$out/nvml.jsonl" 2>"$work/nvml.log" &
nvml_pid=$!
pids+=("$nvml_pid")
"$node" "$trueidle" agent --watch --source nvidia-smi "${smi_args[@]}" --interval "${interval_ms}ms" >"$out/smi.jsonl" 2>"$work/smi.log" &
smi_pid=$!
pids+=("$smi_pid")

# Both agents print a first line before the loads begin; one that failed is left out of
# the table (its log says why) and the other still counts.
for ((i = 0; i < 300; i++)); do
  nvml_ok=0 smi_ok=0
  if [ -s "$out/nvml.jsonl" ] || ! kill -0 "$nvml_pid" 2>/dev/null; then nvml_ok=1; fi
  if [ -s "$out/smi.jsonl" ] || ! kill -0 "$smi_pid" 2>/dev/null; then smi_ok=1; fi
  if [ "$nvml_ok" = 1 ] && [ "$smi_ok" = 1 ]; then break; fi
  sleep 0.2
done
for s in nvml smi; do
  if [ ! -s "$out/$s.jsonl" ]; then say "The $s agent printed nothing; see logs.txt."; fi
done
if [ "$dry" = 1 ] && [ "$(date +%s%3N)" -gt "$ORIGIN_MS" ]; then
  say "The agents started after the first phase began; its first seconds are missing."
fi

cpu_pid=""
if [ "$cpu_s" != 0 ]; then
  say "Starting the agents' CPU measurement beside a bare nvidia-smi loop: $cpu_s s after $cpu_warmup_s s of warm-up."
  "$node" "$here/agent-cpu.mjs" --trueidle "$trueidle" "${smi_args[@]}" "${nvml_args[@]}" --interval-ms "$interval_ms" \
    --warmup-s "$cpu_warmup_s" --seconds "$cpu_s" --out "$out" >/dev/null 2>"$work/cpu.log" &
  cpu_pid=$!
  pids+=("$cpu_pid")
fi

say "Running the loads: 7 phases of $seconds s."
loads_rc=0
"${loads_cmd[@]}" >"$out/phases.jsonl" 2>"$work/loads.log" || loads_rc=$?
if [ "$loads_rc" != 0 ]; then say "The loads exited $loads_rc; the table covers the phases that finished."; fi

say "Stopping the agents and the truth reader."
stop_pid "$nvml_pid"
stop_pid "$smi_pid"
stop_pid "$truth_pid"
pids=()
[ -z "$cpu_pid" ] || pids+=("$cpu_pid")

# ---- the table ----------------------------------------------------------------------------

compare_rc=0
{
  printf '# trueidle against a real GPU\n\n'
  printf -- '- Run: %s UTC; loads.py phases of %s s; agents sample every %s ms; each phase counts from %s s after it began.\n' \
    "$(date -u '+%Y-%m-%d %H:%M')" "$seconds" "$interval_ms" "$settle"
  printf -- '- Machine: %s\n' "$facts"
  # shellcheck disable=SC2016 # the backquotes are Markdown
  printf -- '- %s on Node %s: `agent --watch --source nvml` (NVML) and `--source nvidia-smi`.\n\n' "$version" "$("$node" --version)"
  "$node" "$here/compare.mjs" --phases "$out/phases.jsonl" --truth "$out/truth.csv" \
    --source "NVML=$out/nvml.jsonl" --source "nvidia-smi=$out/smi.jsonl" \
    --gpu "$gpu" --settle-s "$settle" --json "$out/gpu-truth.json" 2>>"$work/run.log"
} >"$out/gpu-truth.md" || compare_rc=$?

if [ "$compare_rc" != 0 ]; then
  say "No table: compare.mjs exited $compare_rc (logs.txt says why)."
else
  cat "$out/gpu-truth.md"
  say "Wrote $out/gpu-truth.md."
fi

# ---- what the agent costs, and what each driver call costs --------------------------------

if [ -n "$cpu_pid" ]; then
  say "Waiting for the CPU measurement."
  if wait "$cpu_pid"; then cat "$out/agent-cpu.md"; else say "agent-cpu.mjs failed (logs.txt says why)."; fi
  pids=()
fi
if command -v python3 >/dev/null; then
  say "Timing each NVML call the agent makes, and reading the driver's sample buffers."
  python3 "$here/nvml-probe.py" --lib "${nvml_args[1]:-libnvidia-ml.so.1}" --gpu "$gpu" --out "$out/nvml-probe.txt" 2>>"$work/run.log" ||
    say "nvml-probe.py failed (logs.txt says why)."
fi

for f in run truth nvml smi loads cpu; do
  printf '===== %s.log =====\n' "$f"
  cat "$work/$f.log" 2>/dev/null || true
done >"$out/logs.txt"
[ "$compare_rc" = 0 ] || exit 1
