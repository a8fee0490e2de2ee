#!/usr/bin/env bash
# Installs the trueidle agent on a bare-metal GPU node: checks the node (root, Node.js 20 or
# later, the NVIDIA driver: a working nvidia-smi, or its NVML library), installs the npm
# package, creates the trueidle user and /etc/trueidle, installs the systemd unit and the env
# file (an existing env file is kept), and enables and starts the service when systemd runs.
# `--help` for the options.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
unit_src="$here/systemd/trueidle-agent.service"
env_src="$here/agent.env.example"
# The directories systemd searches for commands in a unit (its default PATH).
systemd_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

usage() {
  cat <<'EOF'
Usage: install-agent.sh [--tarball FILE | --version VERSION] [--env-file FILE] [--nvml-lib FILE]
                        [--job-mapping-dir DIR [--create-job-mapping-dir]] [--root DIR] [--dry-run]

Installs the trueidle agent as the systemd service trueidle-agent on this GPU node:
  1. checks: root, Node.js >= 20 and npm, the NVIDIA driver (nvidia-smi on PATH and working,
     or, with no nvidia-smi, its NVML library libnvidia-ml.so.1, which the agent reads GPUs
     through), /dev/nvidiactl; every problem is listed with how to fix it, and nothing is
     installed while one remains;
  2. npm install -g the package (from --tarball, else trueidle@VERSION from the registry);
  3. creates the system user trueidle (group trueidle, also in group video) and
     /etc/trueidle (root:trueidle, 0750);
  4. installs /etc/systemd/system/trueidle-agent.service, with ExecStart pointing where npm
     put the binary;
  5. installs /etc/trueidle/agent.env (0600, read by systemd) from --env-file or
     agent.env.example; an existing one is kept as it is; with --create-job-mapping-dir,
     creates the job mapping directory now and, through /etc/tmpfiles.d, at every boot;
  6. when systemd runs: daemon-reload, enable, and (re)start unless the env file is a fresh
     copy of the example, which needs the collector's address first. Otherwise it prints
     the commands left to run.

Options:
  --tarball FILE     install this package tarball (from `npm pack`)
  --version VERSION  install trueidle@VERSION from the npm registry [default: latest]
  --env-file FILE    settings to install as /etc/trueidle/agent.env when there is none
  --nvml-lib FILE    the driver's libnvidia-ml.so.1 where the dynamic loader does not find it;
                     written into a new env file as TRUEIDLE_NVML_LIB
  --job-mapping-dir DIR
                     where the batch system's prolog and epilog keep one file per GPU naming
                     the job it is given to (deploy/slurm/ writes /run/trueidle-jobs): the
                     agent reports those jobs as the GPUs' owners. Written into a new env
                     file as TRUEIDLE_JOB_MAPPING_DIR; an absolute path the service can see
                     (not under /tmp, /var/tmp, /home or /root)
  --create-job-mapping-dir
                     also create DIR (root:root, 0755: the prolog writes it as root, the
                     agent only reads it) now and, by /etc/tmpfiles.d/trueidle-agent.conf,
                     at every boot (/run is emptied on reboot)
  --root DIR         install into DIR as if it were / (images, tests): no user is created
                     and systemctl is not run; the commands for them are printed instead
  --dry-run          check and print every step without changing anything
  --help             show this help

Exit status: 0 installed (or would be, with --dry-run); 1 a check failed or a step failed;
2 bad usage.
EOF
}

die_usage() {
  printf 'install-agent.sh: %s\nRun "install-agent.sh --help" for the options.\n' "$1" >&2
  exit 2
}

tarball=""
version=""
env_file=""
nvml_lib=""
job_dir=""
create_job_dir=0
root=""
dry_run=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --tarball) [ "$#" -ge 2 ] || die_usage "--tarball needs a FILE"; tarball=$2; shift 2 ;;
    --tarball=*) tarball=${1#*=}; shift ;;
    --version) [ "$#" -ge 2 ] || die_usage "--version needs a VERSION"; version=$2; shift 2 ;;
    --version=*) version=${1#*=}; shift ;;
    --env-file) [ "$#" -ge 2 ] || die_usage "--env-file needs a FILE"; env_file=$2; shift 2 ;;
    --env-file=*) env_file=${1#*=}; shift ;;
    --nvml-lib) [ "$#" -ge 2 ] || die_usage "--nvml-lib needs a FILE"; nvml_lib=$2; shift 2 ;;
    --nvml-lib=*) nvml_lib=${1#*=}; shift ;;
    --job-mapping-dir) [ "$#" -ge 2 ] || die_usage "--job-mapping-dir needs a DIR"; job_dir=$2; shift 2 ;;
    --job-mapping-dir=*) job_dir=${1#*=}; shift ;;
    --create-job-mapping-dir) create_job_dir=1; shift ;;
    --root) [ "$#" -ge 2 ] || die_usage "--root needs a DIR"; root=$2; shift 2 ;;
    --root=*) root=${1#*=}; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die_usage "unknown argument: $1" ;;
  esac
done
[ -z "$tarball" ] || [ -z "$version" ] || die_usage "give --tarball or --version, not both"
if [ -n "$root" ]; then
  [ -d "$root" ] || die_usage "--root $root is not a directory"
  root=$(cd "$root" && pwd)
  [ "$root" != / ] || root=""
fi
if [ -n "$nvml_lib" ]; then
  case "$nvml_lib" in /*) ;; *) nvml_lib="$PWD/$nvml_lib" ;; esac
fi
if [ -n "$job_dir" ]; then
  # It goes unquoted into the env file and tmpfiles.d: plain characters only.
  [[ "$job_dir" =~ ^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]/?$ ]] ||
    die_usage "--job-mapping-dir $job_dir: give an absolute path of letters, digits and . _ - /"
  job_dir=${job_dir%/}
elif [ "$create_job_dir" -eq 1 ]; then
  die_usage "--create-job-mapping-dir needs --job-mapping-dir DIR"
fi
if [ -n "$tarball" ]; then
  case "$tarball" in /*) ;; *) tarball="$PWD/$tarball" ;; esac
  package=$tarball
else
  package="trueidle@${version:-latest}"
fi

# ---- checks --------------------------------------------------------------------------

problems=0
ok() { printf '  ok       %s\n' "$1"; }
missing() {
  problems=$((problems + 1))
  printf '  MISSING  %s\n' "$1"
  shift
  local line
  for line in "$@"; do printf '           %s\n' "$line"; done
}
in_systemd_path() {
  case ":$systemd_path:" in *":$(dirname "$1"):"*) return 0 ;; *) return 1 ;; esac
}

if [ "$dry_run" -eq 1 ]; then
  echo "trueidle agent install, dry run: nothing is changed."
else
  echo "trueidle agent install."
fi
[ -z "$root" ] || echo "Installing into $root as if it were /."
echo "Checks:"

if [ -n "$root" ]; then
  ok "installing into $root: root is not needed"
elif [ "$(id -u)" -eq 0 ]; then
  ok "running as root"
else
  missing "root: this installs a system service." "Run it with sudo."
fi

if ! node=$(command -v node); then
  missing "Node.js: node is not on PATH." \
    "Install Node.js 20 or later system-wide (your distribution's nodejs package, or NodeSource's)."
else
  node_version=$(node -e 'process.stdout.write(process.versions.node)' 2>/dev/null || echo "?")
  if [ "${node_version%%.*}" -ge 20 ] 2>/dev/null; then
    if in_systemd_path "$node"; then
      ok "Node.js $node_version ($node)"
    else
      missing "Node.js: $node is not in systemd's PATH ($systemd_path)." \
        "The service cannot start it there (and ProtectHome= hides home folders): install Node.js 20 or" \
        "later system-wide (your distribution's nodejs package, or NodeSource's)."
    fi
  else
    missing "Node.js 20 or later: $node is version $node_version." \
      "Install Node.js 20 or later system-wide (your distribution's nodejs package, or NodeSource's)."
  fi
fi
if command -v npm >/dev/null; then
  ok "npm $(npm --version 2>/dev/null || echo "?")"
else
  missing "npm: not on PATH." "Install npm (it comes with Node.js; on Debian and Ubuntu it is the npm package)."
fi

# The agent reads GPUs through NVML where libnvidia-ml.so.1 loads, else with nvidia-smi:
# either will do. The library: --nvml-lib, else where the dynamic loader finds it.
nvml_found=""
if [ -n "$nvml_lib" ]; then
  if [ -f "$nvml_lib" ]; then
    nvml_found=$nvml_lib
  else
    missing "--nvml-lib $nvml_lib: no such file." "Give the path of the driver's libnvidia-ml.so.1."
  fi
elif ldconfig=$(command -v ldconfig || command -v /sbin/ldconfig); then
  # 64-bit first: a node may carry the 32-bit library too.
  nvml_found=$("$ldconfig" -p 2>/dev/null |
    awk '$1 == "libnvidia-ml.so.1" { if (!first) first = $NF; if (!wide && $0 ~ /64/) wide = $NF }
      END { print (wide ? wide : first) }' || true)
fi
if ! nvidia_smi=$(command -v nvidia-smi); then
  nvidia_smi=""
  if [ -n "$nvml_found" ]; then
    ok "NVML ($nvml_found): nvidia-smi is not on PATH, so the agent reads the GPUs through NVML"
  elif [ -z "$nvml_lib" ]; then
    missing "nvidia-smi: not on PATH, and no libnvidia-ml.so.1 where the loader looks, so the NVIDIA driver is not installed." \
      "Install the NVIDIA driver with its utilities: Debian: apt install nvidia-driver (non-free);" \
      "Ubuntu: ubuntu-drivers install; RHEL: dnf module install nvidia-driver. Then reboot, or" \
      "modprobe nvidia, and check that \`nvidia-smi\` lists the GPUs. A driver in another place:" \
      "--nvml-lib FILE names its libnvidia-ml.so.1."
  fi
else
  set +e
  smi_out=$(timeout 30 "$nvidia_smi" --query-gpu=index,name,driver_version --format=csv,noheader 2>&1)
  smi_rc=$?
  set -e
  gpus=$(printf '%s\n' "$smi_out" | grep -c '^[0-9]' || true)
  if [ "$smi_rc" -ne 0 ]; then
    missing "a working NVIDIA driver: \`$nvidia_smi\` failed (exit $smi_rc):" \
      "$(printf '%s\n' "$smi_out" | head -n 1)" \
      "Is the kernel module loaded (lsmod | grep nvidia; modprobe nvidia)? After a driver upgrade" \
      "the module and the utilities must match: reboot. \`nvidia-smi\` must work before the agent can."
  elif [ "$gpus" -eq 0 ]; then
    missing "GPUs: \`$nvidia_smi\` works but lists none." \
      "Check that the GPUs are seen on the PCI bus (lspci | grep -i nvidia) and not bound to another driver."
  else
    driver=$(printf '%s\n' "$smi_out" | grep -m 1 '^[0-9]' | awk -F', ' '{print $NF}')
    ok "nvidia-smi ($nvidia_smi): $gpus GPU(s), driver $driver"
    [ -z "$nvml_found" ] || ok "NVML ($nvml_found)"
  fi
fi
if [ -e "$root/dev/nvidiactl" ]; then
  ok "$root/dev/nvidiactl"
else
  missing "$root/dev/nvidiactl: the NVIDIA kernel module has not created its devices." \
    "Load the module (modprobe nvidia) and enable nvidia-persistenced so that it stays loaded" \
    "(systemctl enable --now nvidia-persistenced)."
fi

if [ -n "$job_dir" ]; then
  case "$job_dir/" in
    /tmp/* | /var/tmp/* | /home/* | /root/* | /run/user/*)
      missing "--job-mapping-dir $job_dir: the service cannot see it (the unit's PrivateTmp= and ProtectHome= hide /tmp, /var/tmp, /home, /root and /run/user)." \
        "Use a directory such as /run/trueidle-jobs (the default of deploy/slurm/prolog.sh), and the same in the prolog and epilog." ;;
    *)
      if [ -e "$root$job_dir" ] && [ ! -d "$root$job_dir" ]; then
        missing "--job-mapping-dir $root$job_dir: exists and is not a directory." "Remove it or choose another path."
      elif [ -d "$root$job_dir" ]; then
        read -r job_dir_mode job_dir_group < <(stat -c '%a %G' "$root$job_dir")
        if [ "$create_job_dir" -eq 1 ] || [ $((0$job_dir_mode & 05)) -eq $((05)) ] ||
          { [ "$job_dir_group" = trueidle ] && [ $((0$job_dir_mode & 050)) -eq $((050)) ]; }; then
          ok "job mapping directory $root$job_dir"
        else
          missing "job mapping directory $root$job_dir (mode $job_dir_mode, group $job_dir_group): the agent (user trueidle) cannot read it." \
            "chmod 0755 $root$job_dir (its files name jobs and users, no secrets), or run again with --create-job-mapping-dir."
        fi
      elif [ "$create_job_dir" -eq 1 ]; then
        ok "job mapping directory $root$job_dir: created below"
      else
        ok "job mapping directory $root$job_dir: not there yet; the agent sees no job until the prolog creates it"
      fi ;;
  esac
fi

if [ -n "$tarball" ]; then
  if [ -f "$tarball" ]; then ok "package $tarball"; else missing "package $tarball: no such file." "Make it with \`npm pack\`."; fi
fi
if [ ! -f "$unit_src" ] || [ ! -f "$env_src" ]; then
  missing "$unit_src and $env_src: run this script from the deploy/ folder of the trueidle package or repository."
fi

if [ "$problems" -gt 0 ]; then
  echo "$problems problem(s) above; nothing was installed."
  exit 1
fi

# ---- steps ---------------------------------------------------------------------------

systemd_running=0
[ -n "$root" ] || [ ! -d /run/systemd/system ] || systemd_running=1
next_steps=()

# Prints a command, then runs it unless this is a dry run.
run() {
  printf '  + %s\n' "$*"
  [ "$dry_run" -eq 1 ] || "$@"
}

echo "Steps:"
global_prefix=$(npm prefix -g)
bin="$global_prefix/bin/trueidle"
if [ -n "$root" ]; then
  run npm install -g --prefix "$root$global_prefix" --no-audit --no-fund "$package"
else
  run npm install -g --no-audit --no-fund "$package"
fi
if [ "$dry_run" -eq 0 ] && [ ! -x "$root$bin" ]; then
  echo "npm installed the package, but $root$bin is not there; is npm's global prefix ($global_prefix) the one the service will use?" >&2
  exit 1
fi

if [ -n "$root" ]; then
  next_steps+=("getent group video >/dev/null || groupadd --system video"
    "id trueidle >/dev/null 2>&1 || useradd --system --user-group --groups video --home-dir /var/lib/trueidle --no-create-home --shell /usr/sbin/nologin trueidle"
    "chown root:trueidle /etc/trueidle")
  run install -d -m 0750 "$root/etc/trueidle"
else
  getent group video >/dev/null || run groupadd --system video
  if id trueidle >/dev/null 2>&1; then
    echo "  user trueidle exists"
    id -nG trueidle | grep -qw video || run usermod -a -G video trueidle
  else
    run useradd --system --user-group --groups video --home-dir /var/lib/trueidle --no-create-home \
      --shell /usr/sbin/nologin trueidle
  fi
  run install -d -m 0750 -o root -g trueidle /etc/trueidle
fi
# /var/lib/trueidle is the unit's StateDirectory=: systemd creates it owned by trueidle.

unit_dst="$root/etc/systemd/system/trueidle-agent.service"
printf '  + install %s as %s with ExecStart=%s agent ...\n' "$unit_src" "$unit_dst" "$bin"
if [ "$dry_run" -eq 0 ]; then
  install -d -m 0755 "$(dirname "$unit_dst")"
  sed "s#^ExecStart=/usr/local/bin/trueidle #ExecStart=$bin #" "$unit_src" >"$unit_dst.tmp"
  chmod 0644 "$unit_dst.tmp"
  mv "$unit_dst.tmp" "$unit_dst"
fi

env_dst="$root/etc/trueidle/agent.env"
env_fresh=0
if [ -e "$env_dst" ]; then
  echo "  $env_dst exists: kept as it is (compare it with $env_src for new settings)"
else
  [ -n "$env_file" ] || env_fresh=1
  # systemd reads it as root; the service does not, so it may hold TRUEIDLE_TOKEN.
  run install -m 0600 "${env_file:-$env_src}" "$env_dst"
  # The service looks for nvidia-smi in systemd's PATH; one elsewhere is named in the env.
  if [ -z "$env_file" ] && [ -n "$nvidia_smi" ] && ! in_systemd_path "$nvidia_smi"; then
    printf '  + echo TRUEIDLE_NVIDIA_SMI=%s >> %s\n' "$nvidia_smi" "$env_dst"
    [ "$dry_run" -eq 1 ] || printf '\n# nvidia-smi is not in systemd'"'"'s PATH on this node.\nTRUEIDLE_NVIDIA_SMI=%s\n' "$nvidia_smi" >>"$env_dst"
  fi
  # So is an NVML library the loader does not find.
  if [ -z "$env_file" ] && [ -n "$nvml_lib" ]; then
    printf '  + echo TRUEIDLE_NVML_LIB=%s >> %s\n' "$nvml_lib" "$env_dst"
    [ "$dry_run" -eq 1 ] || printf '\n# The NVIDIA driver'"'"'s NVML library on this node.\nTRUEIDLE_NVML_LIB=%s\n' "$nvml_lib" >>"$env_dst"
  fi
  # Asked for by name, so into --env-file's copy too (a later line wins in an env file).
  if [ -n "$job_dir" ]; then
    printf '  + echo TRUEIDLE_JOB_MAPPING_DIR=%s >> %s\n' "$job_dir" "$env_dst"
    [ "$dry_run" -eq 1 ] || printf '\n# The batch system'"'"'s job mapping directory (see deploy/slurm/).\nTRUEIDLE_JOB_MAPPING_DIR=%s\n' "$job_dir" >>"$env_dst"
  fi
fi
if [ -n "$job_dir" ] && [ "$env_fresh" -eq 0 ] && [ -e "$env_dst" ] && ! grep -qx "TRUEIDLE_JOB_MAPPING_DIR=$job_dir" "$env_dst"; then
  next_steps+=("Set TRUEIDLE_JOB_MAPPING_DIR=$job_dir in /etc/trueidle/agent.env (kept as it was), then: systemctl restart trueidle-agent")
fi

if [ "$create_job_dir" -eq 1 ]; then
  # The prolog (root) writes the directory and the agent only reads it; /run is a tmpfs, so
  # systemd-tmpfiles makes it again at boot.
  if [ -n "$root" ]; then
    run install -d -m 0755 "$root$job_dir"
  else
    run install -d -m 0755 -o root -g root "$job_dir"
  fi
  tmpfiles_dst="$root/etc/tmpfiles.d/trueidle-agent.conf"
  printf '  + install %s: d %s 0755 root root -\n' "$tmpfiles_dst" "$job_dir"
  if [ "$dry_run" -eq 0 ]; then
    install -d -m 0755 "$(dirname "$tmpfiles_dst")"
    printf '# trueidle agent: the job mapping directory, made at boot (install-agent.sh --create-job-mapping-dir).\nd %s 0755 root root -\n' \
      "$job_dir" >"$tmpfiles_dst.tmp"
    chmod 0644 "$tmpfiles_dst.tmp"
    mv "$tmpfiles_dst.tmp" "$tmpfiles_dst"
  fi
fi
if [ -n "$job_dir" ] && [ "$job_dir" != /run/trueidle-jobs ]; then
  next_steps+=("Give the batch system's prolog and epilog TRUEIDLE_JOB_MAPPING_DIR=$job_dir (deploy/slurm/*.sh write /run/trueidle-jobs otherwise)")
fi

if [ "$env_fresh" -eq 1 ]; then
  edit="Edit /etc/trueidle/agent.env: the collector's address, TLS or plaintext, the token, labels."
else
  edit=""
fi
if [ "$systemd_running" -eq 1 ]; then
  run systemctl daemon-reload
  run systemctl enable trueidle-agent.service
  if [ "$env_fresh" -eq 1 ]; then
    next_steps+=("$edit" "systemctl start trueidle-agent")
  else
    run systemctl restart trueidle-agent.service
  fi
else
  [ -n "$root" ] || echo "  systemd is not running here: the service is not enabled or started."
  [ -z "$edit" ] || next_steps+=("$edit")
  next_steps+=("systemctl daemon-reload" "systemctl enable --now trueidle-agent")
fi
next_steps+=("journalctl -u trueidle-agent -f    # the agent's log" "$bin agent --once    # what the agent sees on this node")

if [ "$dry_run" -eq 1 ]; then echo "Dry run: nothing was changed."; else echo "Installed."; fi
echo "Next:"
for step in "${next_steps[@]}"; do printf '  %s\n' "$step"; done
