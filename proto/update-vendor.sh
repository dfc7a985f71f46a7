#!/bin/bash
# Refresh the vendored containerd protos from Debian's containerd sources.
#
# Pinned to containerd 1.6.20 (Debian bookworm: golang-github-containerd-containerd-dev
# 1.6.20~ds1-1+deb12u3), the containerd Augur is tested against. The wire protocol of
# snapshots v1 is unchanged in containerd 1.7 and 2.x, so the same server works with them; the
# content, images, leases and diff v1 services `augurctl` calls are likewise still served there.
#
#   bash proto/update-vendor.sh      # installs the source package if missing, copies, records versions
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=/usr/share/gocode/src
PKG=golang-github-containerd-containerd-dev
if ! dpkg -s "$PKG" >/dev/null 2>&1; then
  apt-get install -y --no-install-recommends "$PKG"
fi
copy() { # copy <path under $SRC> <path under vendor/>
  install -D -m 0644 "$SRC/$1" "$HERE/vendor/$2"
}
# snapshots: served by the daemon. content, images, leases, diff (and the snapshots client):
# what `augurctl image rpull` calls on containerd, as containerd's Go client does.
for svc in snapshots content images leases diff; do
  copy "github.com/containerd/containerd/api/services/$svc/v1/$svc.proto" \
       "github.com/containerd/containerd/api/services/$svc/v1/$svc.proto"
done
for t in mount descriptor; do
  copy "github.com/containerd/containerd/api/types/$t.proto" \
       "github.com/containerd/containerd/api/types/$t.proto"
done
copy github.com/gogo/protobuf/gogoproto/gogo.proto gogoproto/gogo.proto
{
  echo "# Written by update-vendor.sh; do not edit."
  echo "source_package: $PKG $(dpkg-query -W -f='${Version}' "$PKG")"
  echo "containerd: $(sed -n 's/.*Version = "\(.*\)"/\1/p' $SRC/github.com/containerd/containerd/version/version.go)"
  (cd "$HERE/vendor" && find . -name '*.proto' | sort | xargs sha256sum)
} > "$HERE/vendor/VERSION"
echo "vendored protos refreshed: $(sed -n 's/^containerd: //p' "$HERE/vendor/VERSION")"
