# Sluice container image: build stage, then a minimal non-root runtime.
# Not built on the development machines (no container engine there); built by release CI.
#
#   docker build -t sluice .
#   docker run -p 8080:8080 -v sluice-data:/var/lib/sluice sluice
#
# Configuration as everywhere else: SLUICE_* variables or a mounted file (--config / SLUICE_CONFIG).

FROM rust:1.95-bookworm AS build
WORKDIR /src
# librdkafka (built from source by rdkafka-sys) needs make and a C toolchain, which the image
# has; aws-lc-sys and the bundled SQLite build with the same compiler. Kafka's TLS and SASL
# come from an OpenSSL built from source too (rdkafka's ssl-vendored, which needs perl, also in
# the image) and linked statically: the runtime image needs no libssl, only the CA bundle that
# verifies brokers when kafka.ssl_ca_file is unset (ca-certificates, below).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY loadtest ./loadtest
COPY tests ./tests
RUN cargo build --release --locked --bin sluice \
    && strip target/release/sluice

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 65532 --home-dir /var/lib/sluice --create-home sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY schemas /etc/sluice/schemas
USER 65532:65532
WORKDIR /var/lib/sluice
# Writable state lives under /var/lib/sluice (mount a volume there; the root file system can be
# read-only): the embedded registry (data/registry.db), the file sink (data/), the spool (data/spool).
ENV SLUICE_SCHEMAS__DIR=/etc/sluice/schemas \
    SLUICE_LOG__FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve"]
