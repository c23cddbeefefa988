# pgstack: PostgreSQL 15 with the pgstack extension installed, plus the gateway binary.
# No Docker engine runs on the development machines; this file is kept correct by
# hand (same steps as scripts/install-deps.sh and scripts/dev.sh).
#
#   docker build -t pgstack .
#   docker run -e POSTGRES_PASSWORD=... -p 5432:5432 pgstack          # the database
#   docker run --entrypoint pgstack -e DATABASE_URL=... -e JWT_SECRET=... \
#              -e LISTEN_ADDR=0.0.0.0:8080 -p 8080:8080 pgstack serve  # the gateway

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 postgresql-server-dev-15 clang libclang-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install --locked cargo-pgrx --version 0.18.1 \
 && cargo pgrx init --pg15 /usr/lib/postgresql/15/bin/pg_config
WORKDIR /src
COPY . .
RUN cd pg_ext && cargo pgrx package -c /usr/lib/postgresql/15/bin/pg_config --out-dir /out/ext
RUN cargo build --release --locked --bin pgstack && install -D target/release/pgstack /out/bin/pgstack

FROM postgres:15-bookworm
COPY --from=build /out/ext/usr/share/postgresql/15/extension/ /usr/share/postgresql/15/extension/
COPY --from=build /out/ext/usr/lib/postgresql/15/lib/ /usr/lib/postgresql/15/lib/
COPY --from=build /out/bin/pgstack /usr/local/bin/pgstack
# Create the extension in the default database on first start.
RUN mkdir -p /docker-entrypoint-initdb.d \
 && printf 'CREATE EXTENSION IF NOT EXISTS pgstack;\n' > /docker-entrypoint-initdb.d/10-pgstack.sql
