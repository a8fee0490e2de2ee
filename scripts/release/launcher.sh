#!/bin/sh
# bin/trueidle of a release (scripts/release/build.mjs puts it there): runs the release's own
# Node.js on its bin/trueidle.js, so a node needs no Node.js installed. Links to it are
# followed to the release folder, so /usr/local/bin/trueidle -> /opt/trueidle/bin/trueidle
# (with /opt/trueidle -> trueidle-VERSION) runs the version the links name at start; a
# running process keeps its files when the links are switched to another version.
self=$(readlink -f -- "$0") || {
  echo "trueidle: cannot resolve $0 to the release folder." >&2
  exit 70
}
bin=${self%/*}
release=${bin%/*}
node="$release/node/bin/node"
if [ ! -x "$node" ]; then
  echo "trueidle: $node is missing: this launcher runs the Node.js of a trueidle release (npm run release)." >&2
  exit 70
fi
exec "$node" "$release/bin/trueidle.js" "$@"
