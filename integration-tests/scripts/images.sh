#!/bin/bash
# images.sh - build the Augur test images without Docker (umoci + debootstrap +
# skopeo) into cached OCI layouts, and push them to a registry.
#
# Usage:
#   integration-tests/scripts/images.sh [build [NAME...]]          build what is missing/stale
#   integration-tests/scripts/images.sh push HOST:PORT [NAME...]   build if needed, then push
#       -> docker://HOST:PORT/NAME:latest (plain HTTP: --dest-tls-verify=false)
#   NAME defaults to "busybox python edgecases" (what the test suite uses); python-big and tools
#   are built and pushed only when named (the lazy-pull benchmark asks for python-big: ~220 MB
#   more, ~2 min; the trace recorder of onnx-models/ asks for tools: ~150 MB more, ~2 min).
#
# Output (OCI image layouts, tag "latest"), under
#   ${AUGUR_CACHE:-/var/cache/augur-tests}/images/
#     busybox/          1 layer : busybox-static + applet symlinks, cmd /bin/sh
#     python/           2 layers: Debian bookworm minbase, then python3
#     python-big/       3 layers: python's two (same blobs), then python3-numpy,
#                       python3-scipy, python3-pandas (Debian's)
#     tools/            3 layers: python's two (same blobs), then perl, gcc, libc6-dev, make,
#                       sqlite3, gawk (Debian's): real programs whose reads the predictor learns
#     edgecases/        3 layers of filesystem edge cases (whiteouts, opaque dirs, hard links,
#                       devices, xattrs, modes, owners, long names, chunked files): see
#                       build_edgecases
#     rootfs/bookworm-minbase/   cached debootstrap rootfs (input of python)
#     <name>.stamp      hash of the build recipe, written after a successful build
#
# Environment:
#   AUGUR_CACHE   cache root (default /var/cache/augur-tests)
#   MIRROR        Debian mirror (default http://deb.debian.org/debian)
#
# Caching: an image is rebuilt only if its stamp is missing or differs from the
# hash of its recipe (the bash functions below + mirror + suite + tool
# versions). Every build happens in a temporary directory next to the target
# and is renamed into place, so an interrupted build never leaves a half
# layout. /proc mounted inside the chroot is always unmounted (EXIT trap), and
# a lock serialises concurrent runs. Needs root and the packages from deps.sh.
#
# Gotcha (env.md §3): to get several layers out of one umoci bundle, every
# `umoci repack` but the last needs --refresh-bundle; without it the second
# repack diffs against the original empty image and yields one big layer.
set -euo pipefail

CACHE=${AUGUR_CACHE:-/var/cache/augur-tests}
IMG=$CACHE/images
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
ROOTFS=$IMG/rootfs/$SUITE-minbase

log() { echo "images: $*"; }
die() { echo "images: ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# cleanup: unmount whatever is still mounted under our temp dirs, remove them
# ---------------------------------------------------------------------------
TMPDIRS=()
unmount_under() {  # unmount_under DIR: lazily unmount every mount below DIR, deepest first
  local mp
  # field 5 of mountinfo is the mount point (octal escapes such as \040)
  while read -r mp; do
    mp=$(printf '%b' "$mp")
    log "cleanup: unmounting $mp"
    umount -l "$mp" 2>/dev/null || true
  done < <(awk -v p="$1/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r)
}
remove_tmp() {  # remove_tmp DIR: unmount, then delete (never crossing into a mount)
  unmount_under "$1"
  if [ -e "$1" ]; then rm -rf --one-file-system "$1"; fi
}
cleanup() {
  local rc=$? d
  trap - ERR
  for d in "${TMPDIRS[@]}"; do remove_tmp "$d"; done
  if [ $rc -ne 0 ] && [ ${#TMPDIRS[@]} -gt 0 ]; then log "FAILED (rc=$rc); partial build removed"; fi
  return $rc
}
trap cleanup EXIT
set -E                                   # the ERR trap also fires inside functions
trap 'log "error: line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

mktmp() {  # mktmp NAME: sets W to a new temp dir next to the target (same fs: rename works)
  W=$(mktemp -d "$IMG/.build-$1.XXXXXX")
  TMPDIRS+=("$W")
}

# ---------------------------------------------------------------------------
# recipes (their text is hashed into the stamps: edit them and images rebuild)
# ---------------------------------------------------------------------------

# build_rootfs DIR: debootstrap a minbase Debian into DIR
build_rootfs() {
  debootstrap --variant=minbase "$SUITE" "$1" "$MIRROR"
}

# chroot_apt ROOTFS PKG...: apt-get install inside ROOTFS, with host DNS and a
# throw-away /dev/null and /proc (unmounted again, also on failure via cleanup)
chroot_apt() {
  local r=$1; shift
  cp /etc/resolv.conf "$r/etc/resolv.conf"
  mknod -m 666 "$r/dev/null" c 1 3
  mount -t proc proc "$r/proc"
  # "E: Can not write log (Is /dev/pts mounted?)" from apt is harmless
  chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $* >/dev/null 2>&1 \
           && apt-get clean && rm -rf /var/lib/apt/lists/*"
  umount "$r/proc"
  rm -f "$r/dev/null" "$r/etc/resolv.conf"
  rm -rf "$r"/var/cache/debconf/*-old "$r/var/log/apt" "$r/var/log/dpkg.log"
}

# new_bundle WORK: an empty image WORK/layout:latest, unpacked into WORK/bundle
new_bundle() {
  umoci init --layout "$1/layout"
  umoci new --image "$1/layout:latest"
  umoci unpack --image "$1/layout:latest" "$1/bundle"
}

# build_busybox WORK: 1-layer busybox image in WORK/layout
build_busybox() {
  local w=$1 r
  new_bundle "$w"
  r=$w/bundle/rootfs
  mkdir -p "$r/bin" "$r/tmp" "$r/etc" "$r/proc" "$r/sys" "$r/dev" "$r/root"
  chmod 1777 "$r/tmp"
  cp /bin/busybox "$r/bin/busybox"                  # from busybox-static
  chroot "$r" /bin/busybox --install -s /bin        # applet symlinks
  umoci repack --image "$w/layout:latest" "$w/bundle"
  umoci config --image "$w/layout:latest" --os linux --architecture amd64 \
    --config.cmd /bin/sh --config.env PATH=/bin:/usr/bin
  umoci gc --layout "$w/layout"
}

# build_python WORK: 2-layer python image in WORK/layout (minbase, python3)
build_python() {
  local w=$1 r
  new_bundle "$w"
  r=$w/bundle/rootfs
  cp -a "$ROOTFS/." "$r/"
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* "$r/etc/resolv.conf"
  find "$r/dev" -mindepth 1 -delete                 # like official images: empty /dev
  log "python: layer 1 (minbase)"
  # --refresh-bundle: the next repack must diff against this layer (see header)
  umoci repack --refresh-bundle --image "$w/layout:latest" "$w/bundle"
  log "python: apt-get install python3 in chroot"
  chroot_apt "$r" python3
  log "python: layer 2 (python3)"
  umoci repack --image "$w/layout:latest" "$w/bundle"
  umoci config --image "$w/layout:latest" --os linux --architecture amd64 \
    --config.cmd python3 \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  umoci gc --layout "$w/layout"
}

# build_python_big WORK: python's two layers (the cached layout, same blobs) plus a third with
# Debian's scientific stack, in WORK/layout
build_python_big() {
  local w=$1 r
  cp -a "$IMG/python" "$w/layout"
  umoci unpack --image "$w/layout:latest" "$w/bundle"
  r=$w/bundle/rootfs
  log "python-big: apt-get install python3-numpy python3-scipy python3-pandas in chroot"
  chroot_apt "$r" python3-numpy python3-scipy python3-pandas
  log "python-big: layer 3 (numpy, scipy, pandas)"
  umoci repack --image "$w/layout:latest" "$w/bundle"
  umoci gc --layout "$w/layout"
}

# build_tools WORK: python's two layers (same blobs) plus a third with common tools from Debian,
# in WORK/layout: the programs whose access traces train the shipped model (onnx-models/)
build_tools() {
  local w=$1 r
  cp -a "$IMG/python" "$w/layout"
  umoci unpack --image "$w/layout:latest" "$w/bundle"
  r=$w/bundle/rootfs
  log "tools: apt-get install perl gcc libc6-dev make sqlite3 gawk in chroot"
  chroot_apt "$r" perl gcc libc6-dev make sqlite3 gawk
  log "tools: layer 3 (perl, gcc, make, sqlite3, gawk)"
  umoci repack --image "$w/layout:latest" "$w/bundle"
  umoci config --image "$w/layout:latest" --config.cmd /bin/sh
  umoci gc --layout "$w/layout"
}

# build_edgecases WORK: 3-layer image of filesystem edge cases in WORK/layout, for the lazy
# rootfs comparison (integration-tests/tests/lazy_rootfs.rs). Layers 1 and 2 come from umoci
# repack; layer 3 is a GNU tar added verbatim (umoci raw add-layer), because umoci writes a
# directory that was emptied and refilled as per-file whiteouts, never as an opaque marker.
build_edgecases() {
  local w=$1 r
  new_bundle "$w"
  r=$w/bundle/rootfs
  edge_layer1 "$r"
  log "edgecases: layer 1 (base)"
  umoci repack --refresh-bundle --image "$w/layout:latest" "$w/bundle"
  edge_layer2 "$r"
  log "edgecases: layer 2 (whiteouts, replacements, a hard link to a layer-1 file)"
  umoci repack --image "$w/layout:latest" "$w/bundle"
  edge_layer3 "$w/layer3"
  log "edgecases: layer 3 (opaque directories, GNU tar)"
  umoci raw add-layer --image "$w/layout:latest" "$w/layer3.tar"
  umoci config --image "$w/layout:latest" --os linux --architecture amd64 \
    --config.cmd /bin/sh --config.env PATH=/bin
  umoci gc --layout "$w/layout"
}

# edge_layer1 ROOTFS: every kind of entry, mode, owner, xattr and name the layer format carries
edge_layer1() {
  local r=$1 long i
  mkdir -p "$r"/{bin,big,data,links/sub,sym,dev,x/d,modes,own,names,opq/sub,opq2,times/dir}
  # the layer's `./` entry: containerd skips it, whatever it says
  chmod 0751 "$r"; setfattr -n user.root -v r "$r"
  cp /bin/busybox "$r/bin/busybox"                  # real binaries: busybox-static
  chroot "$r" /bin/busybox --install -s /bin        # absolute applet symlinks
  # chunked files (ctr-remote's default chunk: 4 MiB): 9 MiB + 12345 bytes = 3 chunks, and
  # exactly 8 MiB = 2 chunks ending on a boundary
  for i in 1 2 3 4 5 6; do cat /bin/busybox; done > "$r/big/blob"
  tail -c +7 "$r/big/blob" > "$r/big/exact8m"
  truncate -s 9449529 "$r/big/blob"; truncate -s 8388608 "$r/big/exact8m"
  echo keep > "$r/data/keep"
  touch -d '2001-02-03 04:05:06' "$r/data/keep"
  echo gone > "$r/data/gone"
  mkdir -p "$r/data/gonedir/sub" "$r/data/dir2file"
  echo a > "$r/data/gonedir/a"; echo b > "$r/data/gonedir/sub/b"
  echo phoenix-1 > "$r/data/phoenix"
  echo inner > "$r/data/dir2file/inner"
  echo file > "$r/data/file2dir"; echo file > "$r/data/file2sym"
  : > "$r/data/empty"
  # hard links inside the layer: three names, and two names one of which layer 2 deletes
  echo orig > "$r/links/orig"
  ln "$r/links/orig" "$r/links/hl1"; ln "$r/links/orig" "$r/links/sub/hl2"
  echo partial > "$r/links/partial"; ln "$r/links/partial" "$r/links/partial2"
  echo base > "$r/links/base"                       # layer 2 links to it
  ln -s ../data/keep "$r/sym/rel"; ln -s /data/keep "$r/sym/abs"
  ln -s /no/such/target "$r/sym/dangling"; ln -s ../data "$r/sym/dir"; ln -s self "$r/sym/self"
  ln -s keep "$r/sym/owned"; chown -h 42:43 "$r/sym/owned"
  touch -h -d '1999-09-09 09:09:09' "$r/sym/rel"
  mknod -m 666 "$r/dev/null" c 1 3
  mknod -m 660 "$r/dev/loop0" b 7 0; chown 0:6 "$r/dev/loop0"
  mknod -m 600 "$r/dev/bignum" c 511 65536         # major > 255, minor > 255
  mkfifo -m 620 "$r/dev/fifo"
  echo x > "$r/x/f"
  setfattr -n user.augur -v hello "$r/x/f"
  setfattr -n user.bin -v 0x00ff10e2809c0a "$r/x/f"
  setfattr -n trusted.augur -v t "$r/x/f"
  setfattr -n user.dir -v d "$r/x/d"
  cp /bin/busybox "$r/x/cap"; setcap cap_net_raw+ep "$r/x/cap"
  for m in 4755:setuid 2755:setgid 7777:all 0000:none 0421:odd 6711:both; do
    echo "${m#*:}" > "$r/modes/${m#*:}"; chmod "${m%%:*}" "$r/modes/${m#*:}"
  done
  mkdir -m 1777 "$r/modes/sticky"; mkdir -m 0700 "$r/modes/private"; mkdir -m 0555 "$r/modes/ro"
  echo u > "$r/own/u1000"; chown 1000:1000 "$r/own/u1000"
  echo n > "$r/own/nobody"; chown 65534:65534 "$r/own/nobody"
  echo b > "$r/own/big"; chown 100000:200000 "$r/own/big"
  mkdir "$r/own/dir"; chown 123:456 "$r/own/dir"
  echo u > "$r/names/héllo wörld ✓.txt"
  echo s > "$r/names/ leading space"; echo d > "$r/names/-dash"
  echo t > "$r/names/tab	in name"; echo q > "$r/names/quote\"back\\slash"
  long=$(printf 'é%.0s' $(seq 127))x                # 255 bytes: NAME_MAX
  echo long > "$r/names/$long"
  mkdir -p "$r/names/$(printf 'deep%.0s' $(seq 20))/$(printf 'er%.0s' $(seq 40))"
  echo deep > "$r/names/$(printf 'deep%.0s' $(seq 20))/$(printf 'er%.0s' $(seq 40))/file"
  echo old1 > "$r/opq/old1"; echo old3 > "$r/opq/sub/old3"
  echo a > "$r/opq2/a"; chmod 0711 "$r/opq2"; chown 5:6 "$r/opq2"
  setfattr -n user.tag -v opq2 "$r/opq2"
  touch -d '2010-10-10 10:10:10' "$r/opq2"
  echo old > "$r/times/old"; touch -d '1980-01-01 00:00:00' "$r/times/old"
  echo fut > "$r/times/future"; touch -d '2099-12-31 23:59:59' "$r/times/future"
  touch -d '2005-05-05 05:05:05' "$r/times/dir"
}

# edge_layer2 ROOTFS: deletions (whiteouts), type changes, metadata-only changes, and a hard
# link to a layer-1 file (umoci re-emits the target, whose link count changed, with the link).
# A directory replaced by a file is in layer 3: umoci 0.4.7 writes the file *and* whiteouts
# below it, which containerd refuses (ENOTDIR).
edge_layer2() {
  local r=$1
  rm "$r/data/gone" "$r/data/phoenix"; rm -r "$r/data/gonedir"
  rm "$r/data/file2dir"; mkdir "$r/data/file2dir"; echo inner > "$r/data/file2dir/inner"
  rm "$r/data/file2sym"; ln -s keep "$r/data/file2sym"
  ln "$r/links/base" "$r/links/cross"
  rm "$r/links/partial2"
  echo l2 > "$r/opq/l2"
  chmod 0750 "$r/own/dir"; chown 321:654 "$r/data/keep"
  setfattr -n user.added -v l2 "$r/x/d"
  setfattr -x user.bin "$r/x/f"
  # umoci compares whole-second mtimes: pin the changed directories' so they are always in the
  # layer; x/ and own/ (nothing added or removed) stay implicit
  touch -d '2002-02-02 02:02:02' "$r/data" "$r/links" "$r/opq"
}

# edge_layer3 DIR: DIR/../layer3.tar (uncompressed), a layer umoci cannot write: opq/ emptied
# and refilled under its own entry, opq2/ refilled with no entry of its own (containerd then
# copies its attributes from layer 1), a file recreated after layer 2 deleted it, a directory
# replaced by a file, and an odd `./` entry on top
edge_layer3() {
  local s=$1
  mkdir -p "$s/opq/sub" "$s/opq2" "$s/data"
  : > "$s/opq/.wh..wh..opq"; : > "$s/opq2/.wh..wh..opq"
  echo fresh > "$s/opq/fresh"; echo new3 > "$s/opq/sub/new3"
  echo c > "$s/opq2/c"; echo phoenix-3 > "$s/data/phoenix"; echo now-a-file > "$s/data/dir2file"
  chmod 0750 "$s/opq"; chown 7:8 "$s/opq"
  touch -d '2020-02-02 02:02:02' "$s/opq/fresh" "$s/opq/sub/new3" "$s/opq/sub" "$s/opq"
  chmod 0750 "$s"; touch -d '2003-03-03 03:03:03' "$s"      # `./`, which containerd skips
  tar -C "$s" --format=gnu --numeric-owner --sort=name -cf "$s/../layer3.tar" --no-recursion . \
    --recursion opq --no-recursion opq2/.wh..wh..opq opq2/c data/phoenix data/dir2file
}

# ---------------------------------------------------------------------------
# stamps
# ---------------------------------------------------------------------------
pkgver() { dpkg-query -W -f='${Package}=${Version}\n' "$@" 2>/dev/null || true; }

recipe_hash() {  # recipe_hash NAME -> sha256 of everything that defines the output
  {
    echo "name=$1 suite=$SUITE mirror=$MIRROR"
    case $1 in
      rootfs)  declare -f build_rootfs; pkgver debootstrap ;;
      busybox) declare -f build_busybox new_bundle; pkgver umoci busybox-static ;;
      python)  declare -f build_python new_bundle chroot_apt; pkgver umoci
               cat "$IMG/rootfs.stamp" 2>/dev/null || echo "no rootfs" ;;  # new rootfs -> new python
      python-big) declare -f build_python_big chroot_apt; pkgver umoci
               cat "$IMG/python.stamp" 2>/dev/null || echo "no python" ;;  # new python -> new big
      tools)   declare -f build_tools chroot_apt; pkgver umoci
               cat "$IMG/python.stamp" 2>/dev/null || echo "no python" ;;
      edgecases) declare -f build_edgecases edge_layer1 edge_layer2 edge_layer3 new_bundle
               pkgver umoci busybox-static attr libcap2-bin tar ;;
    esac
  } | sha256sum | cut -d' ' -f1
}

is_fresh() {  # is_fresh NAME TARGET_DIR
  [ -f "$IMG/$1.stamp" ] && [ -d "$2" ] && [ "$(cat "$IMG/$1.stamp")" = "$(recipe_hash "$1")" ]
}

# install_result NAME SRC TARGET: replace TARGET by SRC (rename), then stamp it
install_result() {
  local name=$1 src=$2 target=$3 h
  h=$(recipe_hash "$name")
  rm -f "$IMG/$name.stamp"
  rm -rf --one-file-system "$target"
  mkdir -p "$(dirname "$target")"
  mv -T "$src" "$target"
  echo "$h" > "$IMG/$name.stamp.tmp"
  mv -f "$IMG/$name.stamp.tmp" "$IMG/$name.stamp"
}

layout_ok() {  # layout_ok DIR: the OCI layout has an index and tag latest
  [ -f "$1/oci-layout" ] && [ -f "$1/index.json" ] && umoci ls --layout "$1" 2>/dev/null | grep -qx latest
}

# ---------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------
ensure_rootfs() {
  if is_fresh rootfs "$ROOTFS"; then
    log "rootfs: cached ($ROOTFS)"; return
  fi
  local w s
  mktmp rootfs; w=$W; s=$SECONDS
  log "rootfs: debootstrap --variant=minbase $SUITE from $MIRROR (about 30-80 s)"
  build_rootfs "$w/rootfs" > "$w/debootstrap.log" 2>&1 || {
    tail -n 30 "$w/debootstrap.log" >&2; die "debootstrap failed"; }
  install_result rootfs "$w/rootfs" "$ROOTFS"
  log "rootfs: done in $((SECONDS - s)) s"
}

ensure_image() {  # ensure_image NAME
  local name=$1 target=$IMG/$1 w s
  if is_fresh "$name" "$target" && layout_ok "$target"; then
    log "$name: cached ($target)"; return
  fi
  mktmp "$name"; w=$W; s=$SECONDS
  log "$name: building in $w"
  "build_${name//-/_}" "$w"
  layout_ok "$w/layout" || die "$name: built layout is incomplete"
  install_result "$name" "$w/layout" "$target"
  log "$name: done in $((SECONDS - s)) s -> oci:$target:latest ($(layers "$target") layers)"
}

layers() {  # number of layers of oci:DIR:latest
  local m
  m=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="latest") | .digest' "$1/index.json")
  jq '.layers | length' "$1/blobs/${m%%:*}/${m#*:}"
}

DEFAULT_IMAGES=(busybox python edgecases)

build() {  # build [NAME...]: the named images (default: DEFAULT_IMAGES) and what they need
  [ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mount)"
  local names=("$@")
  [ ${#names[@]} -gt 0 ] || names=("${DEFAULT_IMAGES[@]}")
  local t
  for t in umoci skopeo debootstrap jq chroot setfattr setcap; do
    command -v "$t" >/dev/null || die "$t not found: run integration-tests/scripts/deps.sh"
  done
  [ -x /bin/busybox ] || die "/bin/busybox missing: run integration-tests/scripts/deps.sh"
  mkdir -p "$IMG"
  exec 9>"$IMG/.lock"
  flock 9                                   # one builder at a time
  # leftovers of a SIGKILLed run (a clean failure removes its own): unmount + remove
  local d
  for d in "$IMG"/.build-*; do
    [ -e "$d" ] || continue
    log "removing stale build dir $d"
    remove_tmp "$d"
  done
  local n
  for n in "${names[@]}"; do
    case $n in
      busybox) ensure_image busybox ;;
      python) ensure_python ;;
      python-big) ensure_python; ensure_image python-big ;;
      tools) ensure_python; ensure_image tools ;;
      edgecases) ensure_image edgecases ;;
      *) die "unknown image '$n' (busybox | python | python-big | tools | edgecases)" ;;
    esac
  done
}

ensure_python() {
  if ! is_fresh python "$IMG/python" || ! layout_ok "$IMG/python"; then
    ensure_rootfs
  fi
  ensure_image python
}

push() {  # push HOST:PORT [NAME...]
  local reg=$1 name policy=()
  shift
  local names=("$@")
  [ ${#names[@]} -gt 0 ] || names=("${DEFAULT_IMAGES[@]}")
  build "${names[@]}"
  [ -f /etc/containers/policy.json ] || policy=(--insecure-policy)
  for name in "${names[@]}"; do
    log "push oci:$IMG/$name:latest -> docker://$reg/$name:latest"
    skopeo "${policy[@]}" copy --quiet --dest-tls-verify=false \
      "oci:$IMG/$name:latest" "docker://$reg/$name:latest"
  done
  log "pushed to $reg"
}

case "${1:-build}" in
  build) shift || true; build "$@"; log "ready under $IMG (oci layouts, tag latest)" ;;
  push)  [ $# -ge 2 ] || die "usage: $0 push HOST:PORT [NAME...]"; shift; push "$@" ;;
  -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (build [NAME...] | push HOST:PORT [NAME...])" ;;
esac
