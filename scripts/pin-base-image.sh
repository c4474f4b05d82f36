#!/usr/bin/env bash
# Pins the Dockerfile's build base by digest, for a release: resolves the tag in `ARG NODE_IMAGE=name:tag` to the
# digest the registry serves for it now and rewrites the line to `name:tag@sha256:...` (the tag stays for readers; the
# digest is what a build pulls). Run it where the registry is reachable, review the diff, commit it.
#   scripts/pin-base-image.sh            pin (or re-pin) the current tag
#   scripts/pin-base-image.sh --check    exit 1 unless the line is pinned and the tag still resolves to that digest
# Needs one of crane, regctl or skopeo. The digest is the one of what the tag names (the multi-platform index), so
# every platform's build uses the image the registry published under it. Only the build stage uses this image: the
# shipped stage is FROM scratch. DOCKERFILE overrides the file (tests use a copy).
set -euo pipefail

dockerfile=${DOCKERFILE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/Dockerfile}
check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

line=$(grep -E '^ARG NODE_IMAGE=' "$dockerfile" || true)
[ "$(printf '%s\n' "$line" | grep -c .)" = 1 ] || { echo "$dockerfile: expected exactly one 'ARG NODE_IMAGE=name:tag' line" >&2; exit 1; }
current=${line#ARG NODE_IMAGE=}
ref=${current%@*} # name:tag, without a digest pinned earlier
pinned=
[ "$ref" = "$current" ] || pinned=${current#*@}
case "$ref" in
  *:*) ;;
  *) echo "$dockerfile: NODE_IMAGE '$ref' has no tag: pin an exact version tag first (e.g. node:24.21.0-bookworm-slim)" >&2; exit 1 ;;
esac

# The fully qualified name registry tools expect (Docker Hub's short names are library/ images).
qualified=$ref
first=${ref%%/*}
if [ "$first" = "$ref" ]; then qualified=docker.io/library/$ref
elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then qualified=docker.io/$ref
fi

if command -v crane >/dev/null; then
  digest=$(crane digest "$qualified")
elif command -v regctl >/dev/null; then
  digest=$(regctl image digest "$qualified")
elif command -v skopeo >/dev/null; then
  # the digest of the manifest bytes as served (the index for a multi-platform tag), not of one platform's image
  digest=sha256:$(skopeo inspect --raw "docker://$qualified" | sha256sum | cut -d' ' -f1)
else
  echo "$0: needs crane, regctl or skopeo on PATH to resolve $ref" >&2
  exit 1
fi
[[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "$0: '$ref' resolved to '$digest', not a sha256 digest" >&2; exit 1; }

if $check; then
  if [ -z "$pinned" ]; then echo "$dockerfile: NODE_IMAGE $ref is not pinned by digest" >&2; exit 1; fi
  if [ "$pinned" != "$digest" ]; then echo "$dockerfile: $ref is pinned to $pinned but now resolves to $digest" >&2; exit 1; fi
  echo "NODE_IMAGE $ref@$digest is current"
  exit 0
fi

tmp=$(mktemp "$dockerfile.XXXXXX")
awk -v repl="ARG NODE_IMAGE=$ref@$digest" '/^ARG NODE_IMAGE=/ { print repl; next } { print }' "$dockerfile" >"$tmp"
chmod --reference="$dockerfile" "$tmp"
mv -f "$tmp" "$dockerfile"
echo "NODE_IMAGE=$ref@$digest"
