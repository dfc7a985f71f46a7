#!/bin/bash
# images.sh - build the Augur test images without Docker (umoci + debootstrap +
# skopeo) into cached OCI layouts, and push them to a registry.
#
# Usage:
#   integration-tests/scripts/images.sh [build [NAME...]]          build what is missing/stale
#   integration-tests/scripts/images.sh push HOST:PORT [NAME...]   build if needed, then push
#       -> docker://HOST:PORT/NAME:latest (plain HTTP: --dest-tls-verify=false)
#   NAME defaults to "busybox python" (what the test suite uses); python-big is built and
#   pushed only when named (the lazy-pull benchmark asks for it: ~220 MB more, ~2 min).
#
# Output (OCI image layouts, tag "latest"), under
#   ${AUGUR_CACHE:-/var/cache/augur-tests}/images/
#     busybox/          1 layer : busybox-static + applet symlinks, cmd /bin/sh
#     python/           2 layers: Debian bookworm minbase, then python3
#     python-big/       3 layers: python's two (same blobs), then python3-numpy,
#                       python3-scipy, python3-pandas (Debian's)
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

DEFAULT_IMAGES=(busybox python)

build() {  # build [NAME...]: the named images (default: DEFAULT_IMAGES) and what they need
  [ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mount)"
  local names=("$@")
  [ ${#names[@]} -gt 0 ] || names=("${DEFAULT_IMAGES[@]}")
  local t
  for t in umoci skopeo debootstrap jq chroot; do
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
      *) die "unknown image '$n' (busybox | python | python-big)" ;;
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
