# Builds both binaries; the same image runs a gateway node or a worker.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin gateway --bin worker

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/gateway /src/target/release/worker /usr/local/bin/
USER nobody
EXPOSE 8000
CMD ["gateway"]
