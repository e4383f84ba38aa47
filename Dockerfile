# syntax=docker/dockerfile:1
#
# inducer-serve image: builds the TypeScript sources, keeps only production dependencies and
# runs `inducer serve` as a non-root user.
#
# Build arguments:
#   ONNXRUNTIME_CUDA=0  (default) CPU only: onnxruntime-node's install script skips the CUDA
#                       provider download (ONNXRUNTIME_NODE_INSTALL=skip).
#   ONNXRUNTIME_CUDA=1  also download onnxruntime-node's CUDA 12 execution provider
#                       (ONNXRUNTIME_NODE_INSTALL=cuda12, linux/x64 only). The runtime then
#                       needs the CUDA 12 and cuDNN 9 libraries and an NVIDIA container runtime
#                       (docker run --gpus all); node:20-slim contains neither library.
#
#   docker build -t inducer-serve .
#   docker build --build-arg ONNXRUNTIME_CUDA=1 -t inducer-serve:cuda .
# The image binds 0.0.0.0, which the server allows only with --api-keys:
#   docker run -p 8000:8000 -v $PWD/models:/app/models -v $PWD/adapters-store:/app/adapters-store \
#     -v $PWD/keys.json:/app/keys.json:ro inducer-serve --api-keys /app/keys.json

ARG NODE_IMAGE=node:20-slim

FROM ${NODE_IMAGE} AS build
ARG ONNXRUNTIME_CUDA=0
WORKDIR /app
COPY package.json package-lock.json ./
RUN if [ "$ONNXRUNTIME_CUDA" = "1" ]; then export ONNXRUNTIME_NODE_INSTALL=cuda12; else export ONNXRUNTIME_NODE_INSTALL=skip; fi \
 && npm ci --ignore-scripts \
 && npm rebuild onnxruntime-node
COPY tsconfig.json ./
COPY src ./src
COPY test ./test
COPY bench ./bench
COPY examples ./examples
RUN npx tsc -p tsconfig.json \
 && npm prune --omit=dev

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    INDUCER_HOST=0.0.0.0 \
    INDUCER_PORT=8000 \
    INDUCER_MODELS_DIR=/app/models \
    INDUCER_STORE=/app/adapters-store \
    INDUCER_CACHE_DIR=/tmp/inducer-cache
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
RUN groupadd --system inducer \
 && useradd --system --gid inducer --home-dir /app --no-create-home inducer \
 && mkdir -p /app/models /app/adapters-store \
 && chown inducer:inducer /app/models /app/adapters-store
USER inducer
VOLUME ["/app/models", "/app/adapters-store"]
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.INDUCER_PORT||8000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["node", "dist/src/cli.js", "serve"]
