# Herald's container image.
#
#   docker build -t herald .
#   docker run --rm herald --help
#
# Builder: a release build with the vendored librdkafka (built from source with OpenSSL and
# zlib, hence the -dev packages; no cmake needed). Runtime: Debian slim with only the shared
# libraries the binary links, running as uid/gid 10001 and writing nothing to its filesystem,
# so it runs with a read-only root filesystem.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
# Unpinned on purpose (DL3008): bookworm's point releases replace versions, a pin breaks the build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev perl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# Dependencies first, in their own layer: a change to Herald's sources does not rebuild
# librdkafka and the other crates. Cargo wants every workspace member's manifest and every
# declared target's file (benches/) to exist; stub main.rs and lib.rs stand in for the sources.
COPY Cargo.toml Cargo.lock ./
COPY crates/herald-sandbox/Cargo.toml ./crates/herald-sandbox/
COPY benches ./benches
RUN mkdir -p src crates/herald-sandbox/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs crates/herald-sandbox/src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src crates/herald-sandbox/src

# The sources: Herald's and the destination simulators' (`herald sandbox`). `include_str!`
# pulls in schemas/ and examples/ at compile time.
COPY src ./src
COPY crates ./crates
COPY schemas ./schemas
COPY examples ./examples
# The stubs' build is newer than the copied files' timestamps: touch so cargo rebuilds both.
RUN touch src/main.rs src/lib.rs crates/herald-sandbox/src/lib.rs \
    && cargo build --release --locked \
    && ./target/release/herald --version

FROM ${RUNTIME_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 herald \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin herald
COPY --from=builder /src/target/release/herald /usr/local/bin/herald
# The example workspaces, for docker-compose.yml (`herald workspace apply /etc/herald/examples/…`).
COPY examples /etc/herald/examples
# `herald` reads ./herald.toml when present; mount one here or pass `--config FILE`.
WORKDIR /etc/herald
USER 10001:10001
# `http.listen` (`/healthz`, `/readyz`, `/metrics`).
EXPOSE 8080
# The image has no curl: `herald healthcheck` asks `/healthz` at `http.listen` and exits 0 or 1.
# Containers of this image that run another command (`herald sandbox`, one-shot commands) set
# their own health check or disable it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["herald", "healthcheck"]
ENTRYPOINT ["herald"]
CMD ["run"]
