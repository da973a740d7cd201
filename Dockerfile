# syntax=docker/dockerfile:1
# Build: release binary, dependencies cached in their own layer.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && cargo build --release --locked --bin regcred-operator \
    && rm -rf src
COPY src ./src
COPY crds ./crds
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin regcred-operator

# Runtime: no shell, no package manager, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/regcred-operator /usr/local/bin/regcred-operator
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/regcred-operator"]
CMD ["run"]
