#!/usr/bin/env bash
# Installs the trueidle agent on a bare-metal GPU node from a release (`npm run release`:
# trueidle-VERSION-linux-x64.tar.xz, which carries its own Node.js, so the node needs none):
# checks the node (root, x86-64 with a glibc the release loads on, the NVIDIA driver: a
# working nvidia-smi, or its NVML library), checks the release (its SHA-256 where one is
# given or beside it), unpacks it as /opt/trueidle-VERSION and points the link /opt/trueidle at
# it, creates the trueidle user and /etc/trueidle, installs the systemd unit and the env file
# (an existing env file is kept), and enables and (re)starts the service when systemd runs.
# `--help` for the options.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The directories systemd searches for commands in a unit (its default PATH).
systemd_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Releases live in $opt_dir/trueidle-VERSION; $opt_dir/trueidle links to the one in use.
opt_dir=/opt
bin=$opt_dir/trueidle/bin/trueidle

usage() {
  cat <<'USAGE'
Usage: install-agent.sh [--tarball FILE|URL [--sha256 HEX|FILE|URL]] [--env-file FILE] [--nvml-lib FILE]
                        [--job-mapping-dir DIR [--create-job-mapping-dir]] [--root DIR] [--dry-run]

Installs the trueidle agent as the systemd service trueidle-agent on this GPU node, from a
trueidle release: trueidle-VERSION-linux-x64.tar.xz (from `npm run release`), which holds
its own Node.js, so nothing else needs installing. Without --tarball it installs the
release this script is part of (run from an unpacked release's deploy/ folder).
  1. checks: root, an x86-64 node with glibc as recent as the release needs, the NVIDIA
     driver (nvidia-smi on PATH and working, or, with no nvidia-smi, its NVML library
     libnvidia-ml.so.1, which the agent reads GPUs through), /dev/nvidiactl, and the release:
     downloaded when a URL, its SHA-256 against --sha256 or the .sha256 file beside it
     (FILE.sha256, URL.sha256); every problem is listed with how to fix it, and nothing is
     installed while one remains;
  2. unpacks it as /opt/trueidle-VERSION (a reinstall of a version replaces it) and checks
     that its bin/trueidle runs here;
  3. creates the system user trueidle (group trueidle, also in group video) and
     /etc/trueidle (root:trueidle, 0750);
  4. installs /etc/systemd/system/trueidle-agent.service with
     ExecStart=/opt/trueidle/bin/trueidle agent ...;
  5. installs /etc/trueidle/agent.env (0600, read by systemd) from --env-file or
     agent.env.example; an existing one is kept as it is; with --create-job-mapping-dir,
     creates the job mapping directory now and, through /etc/tmpfiles.d, at every boot;
  6. points /opt/trueidle at /opt/trueidle-VERSION in one rename (the previous version is
     kept for a rollback, older ones are removed) and links /usr/local/bin/trueidle to
     /opt/trueidle/bin/trueidle;
  7. when systemd runs: daemon-reload, enable, and (re)start unless the env file is a fresh
     copy of the example, which needs the collector's address first. Otherwise it prints
     the commands left to run.

Options:
  --tarball FILE|URL a release tarball, trueidle-VERSION-linux-x64.tar.xz, or its http(s)
                     URL (downloaded with curl or wget into a temp folder)
  --sha256 HEX|FILE|URL
                     the tarball's SHA-256: the digest, or a file (or URL) in sha256sum's
                     format [default: FILE.sha256 or URL.sha256 where there is one]
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
  --dry-run          check and print every step without changing anything (a URL is
                     still downloaded, into a temp folder, to be checked)
  --help             show this help

Roll back to the previous version: ln -sfn trueidle-OLD /opt/trueidle, then
systemctl restart trueidle-agent.

Exit status: 0 installed (or would be, with --dry-run); 1 a check failed or a step failed;
2 bad usage.
USAGE
}

die_usage() {
  printf 'install-agent.sh: %s\nRun "install-agent.sh --help" for the options.\n' "$1" >&2
  exit 2
}

tarball=""
sha_arg=""
env_file=""
nvml_lib=""
job_dir=""
create_job_dir=0
root=""
dry_run=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --tarball) [ "$#" -ge 2 ] || die_usage "--tarball needs a FILE or URL"; tarball=$2; shift 2 ;;
    --tarball=*) tarball=${1#*=}; shift ;;
    --sha256) [ "$#" -ge 2 ] || die_usage "--sha256 needs a HEX digest, FILE or URL"; sha_arg=$2; shift 2 ;;
    --sha256=*) sha_arg=${1#*=}; shift ;;
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
is_url() {
  case "$1" in http://* | https://*) return 0 ;; *) return 1 ;; esac
}
# The release: a tarball (a file or a URL), else the unpacked release this script is in.
release_dir=""
if [ -n "$tarball" ]; then
  is_url "$tarball" || case "$tarball" in /*) ;; *) tarball="$PWD/$tarball" ;; esac
elif [ -f "$here/../RELEASE" ]; then
  release_dir=$(cd "$here/.." && pwd)
  [ -z "$sha_arg" ] || die_usage "--sha256 checks a --tarball; this installs the unpacked release $release_dir"
else
  die_usage "give --tarball FILE|URL: a release, trueidle-VERSION-linux-x64.tar.xz from \`npm run release\` (or run the install-agent.sh in an unpacked release's deploy/ folder)"
fi
if [ -n "$sha_arg" ] && ! [[ "$sha_arg" =~ ^[0-9a-fA-F]{64}$ ]] && ! is_url "$sha_arg"; then
  case "$sha_arg" in /*) ;; *) sha_arg="$PWD/$sha_arg" ;; esac
fi

# Downloads, the temp folder and a half-unpacked release go on every exit.
work=$(mktemp -d "${TMPDIR:-/tmp}/trueidle-install.XXXXXX")
staging=""
cleanup() {
  rm -rf "$work"
  [ -z "$staging" ] || rm -rf "$staging"
}
trap cleanup EXIT

# ---- checks --------------------------------------------------------------------------

problems=0
ok() { printf '  ok       %s\n' "$1"; }
note() { printf '  note     %s\n' "$1"; }
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
# fetch URL FILE: curl, else wget.
fetch() {
  if command -v curl >/dev/null; then
    curl -fsSL --retry 2 -o "$2" "$1"
  else
    wget -q -O "$2" "$1"
  fi
}
# The value of KEY in a RELEASE file given on stdin.
release_value() {
  sed -n "s/^$1=//p" | head -n 1
}
# The first version is at least the second (dotted numbers).
version_ge() {
  [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" = "$2" ]
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

# The release: where it comes from, that it is whole, what it holds.
release_text=""
url=""
if [ -n "$tarball" ]; then
  tools_ok=1
  for tool in tar xz sha256sum; do
    if ! command -v "$tool" >/dev/null; then
      tools_ok=0
      missing "$tool: not on PATH; it unpacks (or checks) the release." \
        "Install it: Debian and Ubuntu: apt install tar xz-utils coreutils; RHEL: dnf install tar xz coreutils."
    fi
  done
  source_ok=1
  if is_url "$tarball"; then
    if ! command -v curl >/dev/null && ! command -v wget >/dev/null; then
      source_ok=0
      missing "curl or wget: neither is on PATH, and --tarball is a URL." \
        "Install one (apt install curl; dnf install curl), or download the release elsewhere and give --tarball its path."
    else
      url=$tarball
      tarball="$work/$(basename "${url%%[?#]*}")"
      if fetch "$url" "$tarball"; then
        ok "downloaded $url"
      else
        source_ok=0
        missing "release $url: the download failed (above)." "Check the URL and this node's access to it."
      fi
    fi
  elif [ ! -f "$tarball" ]; then
    source_ok=0
    missing "release $tarball: no such file." "Build one with \`npm run release\` (release/trueidle-VERSION-linux-x64.tar.xz)."
  fi
  if [ "$source_ok" -eq 1 ] && [ "$tools_ok" -eq 1 ]; then
    # The expected digest: --sha256 (a digest, a file or a URL), else FILE.sha256 / URL.sha256.
    expected=""
    sha_from=""
    sha_file=""
    if [[ "$sha_arg" =~ ^[0-9a-fA-F]{64}$ ]]; then
      expected=$sha_arg
      sha_from="--sha256"
    elif [ -n "$sha_arg" ] && is_url "$sha_arg"; then
      sha_from=$sha_arg
      sha_file="$work/sha256"
      fetch "$sha_arg" "$sha_file" || missing "--sha256 $sha_arg: the download failed." "Check the URL, or give the digest itself."
    elif [ -n "$sha_arg" ]; then
      sha_from=$sha_arg
      sha_file=$sha_arg
      [ -f "$sha_file" ] || missing "--sha256 $sha_arg: no such file." "Give the .sha256 file, its URL, or the digest itself."
    elif [ -n "$url" ]; then
      if fetch "$url.sha256" "$work/sha256" 2>/dev/null; then
        sha_from="$url.sha256"
        sha_file="$work/sha256"
      fi
    elif [ -f "$tarball.sha256" ]; then
      sha_from="$tarball.sha256"
      sha_file="$tarball.sha256"
    fi
    if [ -n "$sha_file" ] && [ -f "$sha_file" ]; then
      # sha256sum's format: the line naming the tarball, else the first line.
      expected=$(awk -v n="$(basename "$tarball")" '$2 == n || $2 == "*" n { print $1; found = 1; exit }
        NR == 1 { first = $1 } END { if (!found) print first }' "$sha_file")
      [[ "$expected" =~ ^[0-9a-fA-F]{64}$ ]] ||
        missing "$sha_from holds no SHA-256 digest." "It should read as \`sha256sum\` writes it: the digest, two spaces, the file name."
    fi
    actual=$(sha256sum "$tarball" | awk '{ print $1 }')
    if [[ "$expected" =~ ^[0-9a-fA-F]{64}$ ]]; then
      if [ "$actual" = "$(printf '%s' "$expected" | tr 'A-F' 'a-f')" ]; then
        ok "SHA-256 $actual matches $sha_from"
      else
        missing "SHA-256 of $(basename "$tarball") is $actual; $sha_from says $expected." \
          "The tarball is damaged or not the one the digest is for: fetch both again."
      fi
    elif [ -z "$sha_from" ]; then
      note "SHA-256 $actual not checked: no $(basename "$tarball").sha256 beside it (--sha256 checks it)"
    fi
    # One folder, trueidle-VERSION-PLATFORM/, with the RELEASE file and what this installs.
    if ! tar -tf "$tarball" >"$work/list" 2>"$work/tar.err"; then
      missing "release $tarball: tar cannot list it: $(head -n 1 "$work/tar.err")" "Download it again, or build it again with \`npm run release\`."
    else
      top=$(sed -n '1{s#/.*##;p}' "$work/list")
      contents_ok=0
      if [[ "$top" =~ ^trueidle-[A-Za-z0-9._+-]+$ ]] && ! grep -qv "^$top\(/\|$\)" "$work/list"; then
        contents_ok=1
        for f in RELEASE bin/trueidle node/bin/node deploy/systemd/trueidle-agent.service deploy/agent.env.example; do
          grep -qxF "$top/$f" "$work/list" || contents_ok=0
        done
      fi
      if [ "$contents_ok" -eq 1 ]; then
        release_text=$(tar -xOf "$tarball" "$top/RELEASE")
      else
        missing "release $tarball: not a trueidle release (one folder trueidle-VERSION-linux-x64/ with RELEASE, bin/trueidle, node/ and deploy/)." \
          "Give the .tar.xz that \`npm run release\` builds (not the npm package from \`npm pack\`)."
      fi
    fi
  fi
  release_from=$tarball
else
  release_text=$(cat "$release_dir/RELEASE")
  release_from=$release_dir
fi

version=""
if [ -n "$release_text" ]; then
  version=$(release_value TRUEIDLE_VERSION <<<"$release_text")
  platform=$(release_value TRUEIDLE_PLATFORM <<<"$release_text")
  node_version=$(release_value NODE_VERSION <<<"$release_text")
  glibc_min=$(release_value GLIBC_MINIMUM <<<"$release_text")
  if ! [[ "$version" =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]]; then
    missing "release $release_from: its RELEASE file names no usable TRUEIDLE_VERSION ('$version')." "Build it again with \`npm run release\`."
    version=""
  else
    ok "release trueidle $version ($platform, Node.js $node_version) from $release_from"
  fi
  machine=$(uname -m)
  if [ "$platform" != linux-x64 ] || [ "$machine" != x86_64 ]; then
    missing "a release for this node: it is $platform, this node is $(uname -s) $machine." "Build the release on a machine like this node (npm run release bundles the Node.js that runs it)."
  fi
  libc=$(getconf GNU_LIBC_VERSION 2>/dev/null || true)
  if [ -z "$glibc_min" ]; then
    :
  elif [ -z "$libc" ]; then
    missing "glibc $glibc_min or later: this node's C library is not glibc (getconf GNU_LIBC_VERSION answers nothing)." \
      "The release's Node.js is built for glibc: use the container image on this node instead."
  elif version_ge "${libc#glibc }" "$glibc_min"; then
    ok "$libc (the release needs $glibc_min or later)"
  else
    missing "glibc $glibc_min or later: this node has $libc, too old for the release's Node.js $node_version." \
      "Upgrade the distribution (Debian 10, Ubuntu 20.04 and RHEL 8 have glibc 2.28), or use the container image."
  fi
fi
link="$root$opt_dir/trueidle"
if [ -e "$link" ] && [ ! -L "$link" ]; then
  missing "$link exists and is not a link; this install makes it a link to $opt_dir/trueidle-VERSION." \
    "Move it away (mv $link $link.old), then run this again."
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
umask 022
dest="$opt_dir/trueidle-$version"
previous=""
if [ -L "$link" ]; then
  previous=$(readlink "$link")
  previous=${previous%/}
  previous=${previous##*/}
fi
if [ -n "$release_dir" ] && [ "$release_dir" -ef "$root$dest" ]; then
  echo "  $release_dir is the installed $dest: nothing to unpack"
else
  # Unpacked beside its place, checked, then renamed into it: a release that does not run
  # here (or a failed unpack) leaves the installed ones as they were.
  unpacked="$root$opt_dir/.trueidle-$version.partial"
  # Removed on exit unless renamed into place.
  [ "$dry_run" -eq 1 ] || staging=$unpacked
  run install -d -m 0755 "$root$opt_dir"
  run rm -rf "$unpacked"
  run install -d -m 0755 "$unpacked"
  if [ -n "$tarball" ]; then
    run tar -xf "$tarball" -C "$unpacked" --strip-components=1 --no-same-owner
  else
    run cp -R "$release_dir/." "$unpacked/"
  fi
  printf '  + %s --version\n' "$unpacked/bin/trueidle"
  if [ "$dry_run" -eq 0 ]; then
    if ! runs=$("$unpacked/bin/trueidle" --version 2>&1); then
      printf '%s\n' "$runs" | sed 's/^/    /' >&2
      echo "The release's bin/trueidle does not run on this node (above); nothing was switched: $link is as it was." >&2
      exit 1
    fi
    printf '    %s\n' "$runs"
  fi
  if [ -e "$root$dest" ]; then
    run mv -T "$root$dest" "$root$opt_dir/.trueidle-$version.replaced"
    run mv -T "$unpacked" "$root$dest"
    run rm -rf "$root$opt_dir/.trueidle-$version.replaced"
  else
    run mv -T "$unpacked" "$root$dest"
  fi
  staging=""
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

unit_src="$root$dest/deploy/systemd/trueidle-agent.service"
env_src="$root$dest/deploy/agent.env.example"
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

# The switch: a new link renamed over the old one, so /opt/trueidle always names a release.
run ln -sfn "trueidle-$version" "$root$opt_dir/.trueidle.link"
run mv -T "$root$opt_dir/.trueidle.link" "$link"
# Relative, so that it holds inside --root too.
bin_link="$root/usr/local/bin/trueidle"
if [ -e "$bin_link" ] && [ ! -L "$bin_link" ]; then
  echo "  $bin_link is a file, not a link: kept as it is (the service runs $bin)"
else
  [ ! -L "$bin_link" ] || [ "$(readlink "$bin_link")" = ../../../opt/trueidle/bin/trueidle ] ||
    echo "  $bin_link links to $(readlink "$bin_link"): replaced"
  run install -d -m 0755 "$root/usr/local/bin"
  run ln -sfn ../../../opt/trueidle/bin/trueidle "$bin_link"
fi
# On a switch to another version the previous one stays for a rollback, and older ones that
# this script installed go; a reinstall of the same version removes none.
[ "$previous" != "trueidle-$version" ] || previous=""
if [ -n "$previous" ]; then
  for old in "$root$opt_dir"/trueidle-*; do
    if [ -d "$old" ] && [ ! -L "$old" ] && [ -f "$old/RELEASE" ]; then
      case "${old##*/}" in "trueidle-$version" | "$previous") ;; *) run rm -rf "$old" ;; esac
    fi
  done
  echo "  $opt_dir/$previous is kept: roll back with ln -sfn $previous $opt_dir/trueidle && systemctl restart trueidle-agent"
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
