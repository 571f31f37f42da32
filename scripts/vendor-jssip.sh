#!/bin/sh
# Fetch JsSIP (the browser SIP stack the WebSocket tests drive in Chromium) from the npm
# registry, by name and pinned version, into tests/data/vendor/ with its licence. The result
# is checked in: the tests never touch the network. Run again only to change the version.
set -eu
VERSION=3.12.0  # the last release whose package ships the browser bundle (dist/)
cd "$(dirname "$0")/../tests/data/vendor"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "jssip@$VERSION" >/dev/null)
tar -xzf "$tmp/jssip-$VERSION.tgz" -C "$tmp"
cp "$tmp/package/dist/jssip.min.js" jssip.min.js
cp "$tmp/package/LICENSE" JSSIP-LICENSE
echo "jssip $VERSION from the npm registry (npm pack jssip@$VERSION); licence: JSSIP-LICENSE" > JSSIP-VERSION
