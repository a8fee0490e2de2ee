#!/usr/bin/env bash
# Builds what scripts/gpu-truth/run.sh needs on a GPU machine that has no Node and no
# package registry, into one ignored folder (default .device/) that the device tool carries:
#   node-vX-linux-x64.tar.xz   this machine's Node 20 binary (x86-64 Linux, glibc 2.28+)
#   trueidle-app.tar.xz        a production install of this checkout: `npm pack`, then
#                              `npm install -g` of the tarball (no dev dependencies)
#   gpu-truth/loads.py, truth.py   from ../shared/gpu-truth/ (not part of the project)
#   MANIFEST                   versions, sizes and sha256 of the above
# The folder must stay under the device tool's 64 MiB carry limit together with the tree;
# this script fails when it does not.
#
#   scripts/gpu-truth/pack.sh [KIT_DIR]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

kit=${1:-$root/.device}
shared=${TRUEIDLE_GPU_TRUTH_SCRIPTS:-$root/../shared/gpu-truth}
limit=$((64 * 1024 * 1024))

say() { printf '==> %s\n' "$*"; }
die() { printf 'pack.sh: %s\n' "$*" >&2; exit 1; }

version=$(node -p process.version)
[[ $version == v20.* ]] || die "Node 20 is needed here (this is $version): the kit carries this machine's node binary"
[ "$(node -p "process.platform + '-' + process.arch")" = linux-x64 ] || die "the GPU machine is x86-64 Linux; pack on one"
for f in loads.py truth.py; do
  [ -f "$shared/$f" ] || die "$shared/$f not found (set TRUEIDLE_GPU_TRUTH_SCRIPTS to its folder)"
done

stage=$(mktemp -d "${TMPDIR:-/tmp}/trueidle-pack.XXXXXX")
trap 'rm -rf "$stage"' EXIT
rm -rf "$kit"
mkdir -p "$kit/gpu-truth"

name="node-$version-linux-x64"
say "Packing $(node -p process.execPath) as $name.tar.xz."
mkdir -p "$stage/$name/bin"
cp "$(node -p process.execPath)" "$stage/$name/bin/node"
# Node's license travels with its binary, where the machine has it.
for l in /usr/share/doc/nodejs/LICENSE "$(dirname "$(node -p process.execPath)")/../share/doc/node/LICENSE"; do
  if [ -f "$l" ]; then cp "$l" "$stage/$name/LICENSE"; break; fi
done
tar -C "$stage" -cf - "$name" | xz -T0 -6 >"$kit/$name.tar.xz"

say "Packing trueidle (npm pack builds dist/) and installing it for production."
tgz=$(npm pack --silent --pack-destination "$stage" | tail -n 1)
npm install -g --prefix "$stage/prefix" "$stage/$tgz" --omit=dev --no-audit --no-fund --prefer-offline --loglevel=error
app="$stage/prefix/lib/node_modules"
[ -f "$app/trueidle/bin/trueidle.js" ] || die "the install has no trueidle/bin/trueidle.js"
# koffi brings its native part for each platform as an optional package; npm installs the
# one for this machine only. Anything else native would be a surprise worth failing on.
extra=$(find "$app/trueidle/node_modules" -name '*.node' ! -path '*linux-x64*' | head -n 5)
[ -z "$extra" ] || die "native modules for other platforms in the install: $extra"
tar -C "$app" -cf - trueidle | xz -T0 -9 >"$kit/trueidle-app.tar.xz"

cp "$shared/loads.py" "$shared/truth.py" "$kit/gpu-truth/"

{
  printf 'node %s (%s)\n' "$version" "$(node -p process.execPath)"
  printf 'trueidle %s (%s)\n' "$(node -p "require('./package.json').version")" "$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  (cd "$kit" && find . -type f ! -name MANIFEST -printf '%P\n' | sort | while read -r f; do
    printf '%s  %s bytes  sha256 %s\n' "$f" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)"
  done)
} >"$kit/MANIFEST"

size=$(du -sb "$kit" | cut -f1)
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -n 1 | cut -f1)
cat "$kit/MANIFEST"
say "Kit: $((size / 1024 / 1024)) MiB in $kit; with the working tree ($((tree / 1024 / 1024)) MiB) $(((size + tree) / 1024 / 1024)) MiB of the 64 MiB the device tool carries."
[ $((size + tree)) -le "$limit" ] || die "too large for the device tool's 64 MiB"
