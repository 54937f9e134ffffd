# syntax=docker/dockerfile:1
# The aetherfs image: the one `aetherfs` binary (hub, agent sidecar, CLI) on
# Debian bookworm-slim with fuse3, running as uid/gid 65532 by default.
#
#   docker build -t aetherfs:dev \
#     --build-arg REVISION="$(git rev-parse HEAD)" --build-arg CREATED="$(date -u +%FT%TZ)" .
#
# No container engine runs in this project's CI: scripts/image-rootfs-check.sh
# proves the runtime stage by building the same root filesystem with
# debootstrap from scripts/image-packages.txt and running the binary in it.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# Caches for the registry and target dir live outside the image's layers.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p aetherfs \
 && install -D -m 0755 target/release/aetherfs /out/aetherfs

FROM debian:bookworm-slim
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="aetherfs" \
      org.opencontainers.image.description="AetherFS: versioned datasets, pushed and pulled by changed blocks; hub, sidecar agent and CLI" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="debian:bookworm-slim"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The package list and the user script are bind-mounted, not copied: they
# leave nothing behind in a layer.
RUN --mount=type=bind,source=scripts/image-packages.txt,target=/run/image-packages.txt \
    --mount=type=bind,source=scripts/image-user.sh,target=/run/image-user.sh \
    apt-get update \
 && grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' /run/image-packages.txt \
    | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* \
 && sh /run/image-user.sh
COPY --from=build /out/aetherfs /usr/local/bin/aetherfs
USER 65532:65532
WORKDIR /home/aetherfs
ENTRYPOINT ["/usr/local/bin/aetherfs"]
CMD ["--help"]
