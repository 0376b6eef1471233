# syntax=docker/dockerfile:1
# One image for `switchyard api`, `switchyard worker` and `switchyard migrate`
# (the migrations are compiled into the binary).
#
#   docker build -t switchyard .
#   docker run --rm -e DATABASE_URL=… -e REDIS_URL=… switchyard migrate

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# No query is checked against a live database at build time.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never
# The context is an allowlist (.dockerignore): manifests, crates, migrations.
COPY . .
# The caches survive between builds; the binary is copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p switchyard \
 && install -D -m 0755 target/release/switchyard /out/switchyard

# glibc, libgcc and CA certificates, no shell, no package manager; runs as
# the unprivileged user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/switchyard /usr/local/bin/switchyard
USER 65532:65532
# The API listens on every interface inside a container.
ENV SWITCHYARD_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["api"]
