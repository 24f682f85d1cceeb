# meshrpc in a container: `docker build -t meshrpc .`, then
# `docker run --rm -p 7000:7000 -p 7000:7000/udp -p 8080:8080 meshrpc node --name a \
#    --listen 0.0.0.0:7000 --http 0.0.0.0:8080`. deploy/kubernetes runs it as a StatefulSet.

# Build stage: the Rust toolchain; only the binary leaves it.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin meshrpc \
 && strip target/release/meshrpc

# Runtime stage: a slim Debian, the binary, a user without privileges.
FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 meshrpc \
 && useradd --system --uid 10001 --gid meshrpc --no-create-home --shell /usr/sbin/nologin meshrpc
COPY --from=build /src/target/release/meshrpc /usr/local/bin/meshrpc
USER 10001:10001
# 7000: calls (TCP) and membership (UDP) on one port number; 8080: the HTTP gateway.
EXPOSE 7000/tcp 7000/udp 8080/tcp
ENTRYPOINT ["/usr/local/bin/meshrpc"]
CMD ["node", "--name", "meshrpc", "--listen", "0.0.0.0:7000"]
