# syntax=docker/dockerfile:1
# The catalogsync image: controller and sync-job entrypoints in one binary.
#   docker build -t catalogsync:0.1.0 .

FROM rust:1-slim AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cache mounts keep the registry and compiled dependencies between builds;
# the binary is copied out because the target mount is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin catalogsync \
 && cp target/release/catalogsync /catalogsync

# glibc and libgcc only; runs as uid/gid 65532 without a shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /catalogsync /usr/local/bin/catalogsync
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/catalogsync"]
CMD ["controller"]
