# veer's container image: registry.example.com/veer:<version> in config/kubernetes/.
#   docker build -t veer:0.1.0 .
#   docker run --rm -v "$PWD/my-veer.toml:/etc/veer/veer.toml:ro" -p 8080:8080 veer:0.1.0
# Build stage: the release binary (fat LTO, see Cargo.toml), from the locked dependencies.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY benches ./benches
COPY build.rs ./
RUN cargo build --release --locked --bin veer \
    && strip target/release/veer

# Runtime: Debian slim with CA certificates (upstream TLS, webhooks) and curl for the
# healthcheck; veer runs as an unprivileged user and writes only /run/veer (admin socket)
# and /var/lib/veer (state file).
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/veer --shell /usr/sbin/nologin veer \
    && mkdir -p /etc/veer /run/veer /var/lib/veer \
    && chown veer:veer /run/veer /var/lib/veer
COPY --from=build /src/target/release/veer /usr/bin/veer
COPY config/container.toml /etc/veer/veer.toml
USER 10001:10001
ENV VEER_SOCKET=/run/veer/admin.sock
EXPOSE 8080 9902
# The read-only probe listener ([admin] probe = "0.0.0.0:9902"), as the kubelet uses it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s \
    CMD ["curl", "-fsS", "http://127.0.0.1:9902/live"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/veer"]
CMD ["run", "-c", "/etc/veer/veer.toml"]
