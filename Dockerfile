# istiod-vault-agent: multi-stage build, Node 24 runtime, production dependencies only, non-root numeric user.
# Works with a read-only root filesystem: the agent writes only its socket directory and the cacerts volume.
# NODE_IMAGE: the public image by default; the real-node tests pass a locally built equivalent (no registry there).
ARG NODE_IMAGE=node:24-bookworm-slim
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY test ./test
COPY bench ./bench
RUN npx tsc -p tsconfig.json && npm prune --omit=dev

FROM ${NODE_IMAGE}
WORKDIR /app
ENV NODE_ENV=production
# A bounded heap keeps RSS well under the 256Mi limit the manifests set (V8 otherwise grows it lazily under load);
# the semi-space cap bounds the young generation, which bursts of short-lived requests grow (bench/RESULTS.md §4).
ENV NODE_OPTIONS="--max-old-space-size=128 --max-semi-space-size=8"
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY package.json ./
COPY vault-policies ./vault-policies
USER 65532:65532
ENTRYPOINT ["node", "/app/dist/src/main.js"]
CMD ["sidecar"]
