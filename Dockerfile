# istiod-vault-agent: built on a Node image, shipped FROM scratch. The runtime stage holds only the Node binary, the
# shared libraries it loads, a CA bundle, passwd/group entries and the CLI bundled with its production dependencies
# (dist/bundle: esbuild's output and source maps, no node_modules): no shell, no npm, no package manager, and no base
# image of its own (so there is no runtime base to pin or patch).
# Works with a read-only root filesystem: the agent writes only its socket directory and the cacerts volume.
#
# NODE_IMAGE is the build stage only. Its Node version is the one package.json's devDependency `node` pins (the tests
# run that same Node; a unit test fails when they drift). A release pins it by digest as well:
# scripts/pin-base-image.sh resolves the tag where the registry is reachable and rewrites this line to
# name:tag@sha256:... . The real-node tests pass a locally built equivalent (no registry there).
ARG NODE_IMAGE=node:24.21.0-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts/bundle.mjs ./scripts/
COPY src ./src
RUN node scripts/bundle.mjs
COPY vault-policies ./vault-policies

# V8's code cache for the bundle, made here because the image's root filesystem is read-only at run time. Node keys it
# by file path and content and keeps it in a directory named after the user id, so the bundle runs from
# /app/dist/bundle, where the image has it, as the image's user 65532 and with the ENTRYPOINT's flags. Every command's
# --help loads (and so compiles) that command's chunks and runs their top-level code; what a real start compiles
# beyond that is compiled as usual. A pod run as another user finds no cache and starts without one.
# bench/RESULTS.md §3 has what it saves.
ARG ENTRYPOINT_FLAGS="--enable-source-maps --max-semi-space-size=8 --max-old-space-size=128"
RUN set -eu; \
    mkdir -p /app/dist /app/compile-cache; cp -r dist/bundle /app/dist/bundle; rm /app/dist/bundle/meta.json; \
    cp package.json /app/; chown 65532:1337 /app/compile-cache; \
    ENTRYPOINT_FLAGS="$ENTRYPOINT_FLAGS" node -e ' \
      const { execFileSync } = require("node:child_process"); \
      process.setgid(1337); process.setuid(65532); \
      for (const c of ["sidecar", "init", "status", "doctor", "setup-vault", "relay", "inject"]) \
        execFileSync(process.execPath, [...process.env.ENTRYPOINT_FLAGS.split(" "), "/app/dist/bundle/main.js", c, "--help"], \
          { stdio: "ignore", env: { ...process.env, NODE_COMPILE_CACHE: "/app/compile-cache" } });'; \
    test -d /app/compile-cache/*-65532; chown -R 0:0 /app/compile-cache

# The runtime root filesystem, staged in /rootfs. Libraries are the ones ldd names for this very Node binary, copied
# to the paths the dynamic loader looks them up at. The CA bundle is Node's own (Mozilla) root store, so nothing the
# build machine trusts (a proxy's CA mounted for npm) can end up in the image. Everything is owned by root and
# read-only for the agent's user.
ARG REVISION=""
RUN set -eu; \
    r=/rootfs; \
    node=$(command -v node); \
    mkdir -p "$r/usr/local/bin" "$r/etc/ssl/certs" "$r/app/dist"; \
    cp "$node" "$r/usr/local/bin/node"; \
    for lib in $(ldd "$node" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do \
      mkdir -p "$r$(dirname "$lib")"; cp -L "$lib" "$r$lib"; \
    done; \
    node -e 'process.stdout.write(require("node:tls").rootCertificates.join("\n") + "\n")' \
      >"$r/etc/ssl/certs/ca-certificates.crt"; \
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
      'istiod-vault-agent:x:65532:1337:istiod-vault-agent:/nonexistent:/sbin/nologin' >"$r/etc/passwd"; \
    printf '%s\n' 'root:x:0:' 'istio-proxy:x:1337:' >"$r/etc/group"; \
    printf '%s\n' 'hosts: files dns' >"$r/etc/nsswitch.conf"; \
    cp -r package.json vault-policies /app/compile-cache "$r/app/"; \
    mkdir -p "$r/app/dist/bundle"; cp dist/bundle/*.js dist/bundle/*.js.map dist/bundle/*.txt "$r/app/dist/bundle/"; \
    REVISION="$REVISION" node -e 'const r = process.env.REVISION; \
      if (r && !/^[0-9A-Za-z._-]{1,64}$/.test(r)) throw new Error("REVISION: expected a commit id, got " + r); \
      process.stdout.write(JSON.stringify(r ? { commit: r } : {}) + "\n")' >"$r/app/build-info.json"; \
    chmod -R a+rX,go-w "$r"

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=""
ARG SOURCE=https://github.com/istiod-vault-agent/istiod-vault-agent
LABEL org.opencontainers.image.title="istiod-vault-agent" \
      org.opencontainers.image.description="Vault-backed intermediate CA sidecar for istiod" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /rootfs /
WORKDIR /app
ENV PATH=/usr/local/bin \
    NODE_ENV=production \
    NODE_COMPILE_CACHE=/app/compile-cache
# istiod (1337:1337) reads the cacerts files through group 1337; the agent's own user owns them.
USER 65532:1337
# Node's flags are the ENTRYPOINT's, not an image NODE_OPTIONS, which a pod's own NODE_OPTIONS (set for anything
# else) would replace wholesale; the pod's is added to these instead. ENTRYPOINT_FLAGS above must be the same flags.
# --enable-source-maps: stack traces name the TypeScript files (dist/bundle/*.js.map). The heap flags are chosen from
# measurements (bench/RESULTS.md §4): the semi-space cap bounds the young generation that bursts of short-lived
# requests grow, and the old-space cap keeps RSS under the manifests' memory limit.
ENTRYPOINT ["/usr/local/bin/node", "--enable-source-maps", "--max-semi-space-size=8", "--max-old-space-size=128", "/app/dist/bundle/main.js"]
CMD ["sidecar"]
