#!/usr/bin/env bash
# Copies the console's chart library from the npm registry into the package (committed), so the
# console works offline and `make up` needs no JavaScript build. Re-run after changing the pin:
#   scripts/vendor_console.sh
set -euo pipefail
cd "$(dirname "$0")/.."
UPLOT_VERSION=1.6.32
DEST=services/hybridinference/gateway/console/static/vendor/uplot
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "uplot@$UPLOT_VERSION" >/dev/null && tar -xzf "uplot-$UPLOT_VERSION.tgz")
rm -rf "$DEST"
mkdir -p "$DEST"
cp "$work/package/dist/uPlot.iife.min.js" "$work/package/dist/uPlot.min.css" \
  "$work/package/LICENSE" "$DEST/"
echo "uplot $UPLOT_VERSION (npm), dist/uPlot.iife.min.js and dist/uPlot.min.css" > "$DEST/VERSION"
