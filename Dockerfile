# Mandrill: one image with every program; docker-compose.yml picks the command.
FROM debian:12 AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
        libzmq3-dev libczmq-dev libcjson-dev libsqlite3-dev libpq-dev libmicrohttpd-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMANDRILL_TESTS=OFF \
    && cmake --build /build -j "$(nproc)" --target mandrill-broker mandrill-worker mandrill-publish mandrill-ctl \
    && cmake --install /build --prefix /opt/mandrill

FROM debian:12
RUN apt-get update && apt-get install -y --no-install-recommends libzmq5 libczmq4 libcjson1 libsqlite3-0 \
        libpq5 libmicrohttpd12 sqlite3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/mandrill/bin/ /usr/local/bin/
RUN useradd --system --create-home mandrill && mkdir -p /data && chown mandrill /data
USER mandrill
WORKDIR /data
CMD ["mandrill-broker", "--help"]
