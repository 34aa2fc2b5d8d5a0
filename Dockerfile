# The tapedeck container image: every subcommand, as the examples in deploy/ run it.
#
#   docker build -t ghcr.io/example/tapedeck:0.1.0 .          # or podman build
#   docker run --rm --read-only --network none -v tapedeck-demo:/work ghcr.io/example/tapedeck:0.1.0 demo
#
# Stages: `build` compiles the release binary in the Rust image; `runtime-base` is Debian 12 slim
# with ca-certificates (upstream, target and object-store TLS use the system roots) and the user;
# `runtime` (the default target) adds the compiled binary as /usr/local/bin/tapedeck, the
# ENTRYPOINT. The base keeps its shell: Kubernetes Jobs use `sh -c`, and CI runners (GitLab's)
# need one to run a job's script in the image.
#
# It runs as user tapedeck, uid/gid 10001, and writes only where its command line says (the tape,
# --out, --report, --ticket, --runs; the demo's ./tapedeck-demo under the working directory
# /work), so it runs with a read-only root filesystem: put those paths on volumes. With an
# object-store URL (s3://, gs://, az://) it also stages files under /tmp (or $TMPDIR) and spools
# under $TAPEDECK_SPOOL_DIR (default /tmp/tapedeck-spool): give /tmp a tmpfs or emptyDir then.
#
# Build arguments RUST_IMAGE and RUNTIME_IMAGE name the base images (e.g. from a mirror). Keep both
# on one Debian release (the binary links the builder's glibc) and the Rust version at least the
# workspace's rust-version (tests/e2e/container.rs checks both).
#
# `--target prebuilt` packages an already built Linux binary instead of compiling: the build
# context is then a directory holding only `tapedeck` (built against Debian 12's glibc or older).
# CI builds the image this way around the binary it has just tested, and runs it read-only.
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit, podman/buildah); the binary is
# copied out of the cache mount, without its debug info (symbols stay, for backtraces).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eux; \
    cargo build --release --locked --bin tapedeck; \
    mkdir -p /out; \
    strip --strip-debug -o /out/tapedeck target/release/tapedeck

# Everything of the runtime but the binary: both targets below start here.
FROM ${RUNTIME_IMAGE} AS runtime-base
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --gid 10001 tapedeck; \
    useradd --uid 10001 --gid 10001 --home-dir /work --no-create-home \
        --shell /usr/sbin/nologin tapedeck; \
    install -d -m 0755 -o 10001 -g 10001 /work
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /work
ENTRYPOINT ["/usr/local/bin/tapedeck"]
CMD ["--help"]
LABEL org.opencontainers.image.title="tapedeck" \
      org.opencontainers.image.description="Record production HTTP traffic, replay it against a new build, and judge the difference." \
      org.opencontainers.image.licenses="Apache-2.0"

# `--target prebuilt`: the binary from the build context (no Rust image, no compiling).
FROM runtime-base AS prebuilt
COPY tapedeck /usr/local/bin/tapedeck

# The default target: the binary compiled above.
FROM runtime-base AS runtime
COPY --from=build /out/tapedeck /usr/local/bin/tapedeck
