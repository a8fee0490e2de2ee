#!/usr/bin/env bash
# The whole test run (`npm test`): dependencies, build, lint and format check, typecheck, then vitest.
# Made for a fresh Debian 12 machine with Node 20, run as root, without systemd; it also
# runs as a user with sudo. Exits non-zero on the first failure; ends with vitest's summary.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*"; }

# npm ci writes node_modules/.package-lock.json; older than package-lock.json means the
# installed tree may not match the lock file (bash -ot is also true when it is missing).
if [ ! -d node_modules ] || [ node_modules/.package-lock.json -ot package-lock.json ]; then
  say "Installing npm dependencies (npm ci)."
  npm ci --no-audit --no-fund
else
  say "npm dependencies are up to date."
fi

# Integration tests run the real servers: Prometheus (and promtool) and InfluxDB 1.x.
missing=()
[ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] || missing+=(prometheus)
[ -x /usr/bin/influxd ] || missing+=(influxdb)
# The TLS tests make their certificates with the openssl command.
[ -x /usr/bin/openssl ] || missing+=(openssl)
# The deploy tests check the install script with shellcheck and the units with systemd-analyze.
[ -x /usr/bin/shellcheck ] || missing+=(shellcheck)
[ -x /usr/bin/systemd-analyze ] || missing+=(systemd)
# The fleet page is tested in headless Chromium.
[ -x /usr/bin/chromium ] || missing+=(chromium)
# The NVML tests build a stub libnvidia-ml.so with gcc; its C headers are only a
# recommendation of gcc, which --no-install-recommends leaves out.
[ -x /usr/bin/gcc ] || missing+=(gcc)
[ -f /usr/include/stdio.h ] || missing+=(libc6-dev)
# The release test packs and unpacks .tar.xz (objdump, which it also runs, comes with gcc).
[ -x /usr/bin/xz ] || missing+=(xz-utils)
# install-agent.sh downloads a release from a URL with curl (or wget).
[ -x /usr/bin/curl ] || [ -x /usr/bin/wget ] || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
  say "Installing Debian packages: ${missing[*]}."
  # No service may start: there is no systemd, and tests start their own servers on free
  # ports. A policy-rc.d that exits 101 makes invoke-rc.d refuse every start; one already
  # there is set aside and put back afterwards.
  policy=/usr/sbin/policy-rc.d
  saved="$policy.trueidle-saved"
  restore_policy() {
    "${sudo[@]}" rm -f "$policy"
    if [ -e "$saved" ]; then "${sudo[@]}" mv "$saved" "$policy"; fi
  }
  if [ -e "$policy" ]; then "${sudo[@]}" mv "$policy" "$saved"; fi
  trap restore_policy EXIT
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  restore_policy
  trap - EXIT
else
  say "Debian packages prometheus, influxdb, openssl, shellcheck, systemd, chromium, gcc, libc6-dev, xz-utils and curl are installed."
fi

say "Building (npm run build)."
npm run --silent build

say "Linting and format check (biome ci; npm run format fixes the format)."
npx --no-install biome ci --colors=off .

say "Linting the protocol (buf lint)."
npx --no-install buf lint

say "Typechecking sources and tests (tsc --noEmit)."
npx --no-install tsc -p tsconfig.json --noEmit

say "Running the tests (vitest run)."
# dist/ was just built: the vitest globalSetup need not build it again.
export TRUEIDLE_TEST_BUILT=1
exec npx --no-install vitest run "$@"
