#!/usr/bin/env bash
# Fetch the dashboard's front-end libraries once from the npm registry (pinned versions) and keep
# only their distribution files and licence under src/sipqualify/api/static/vendor/. The result
# is checked in: installing or running sipqualify needs neither npm nor Node nor a network.
# Re-run after changing a version below; review the diff like any other change.
set -euo pipefail
cd "$(dirname "$0")/.."
UPLOT=1.6.32
DEST=src/sipqualify/api/static/vendor
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent "uplot@$UPLOT" >/dev/null && tar -xzf "uplot-$UPLOT.tgz")
rm -rf "$DEST/uplot"
mkdir -p "$DEST/uplot"
cp "$TMP/package/dist/uPlot.iife.min.js" "$TMP/package/dist/uPlot.min.css" "$TMP/package/LICENSE" "$DEST/uplot/"
echo "uplot $UPLOT" > "$DEST/uplot/VERSION"
ls -l "$DEST/uplot"
