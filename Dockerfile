# Mandrill: one image with every program; docker-compose.yml picks the command.
# Build: docker build -t mandrill:latest .   (scripts/compose-test.sh adds
# --network host). The build stage compiles with -j2 at most, as every build
# of this project does. Few instructions on purpose: with the vfs storage
# driver (scripts/compose-test.sh) every step copies the whole file system.
FROM debian:12 AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
        libzmq3-dev libczmq-dev libcjson-dev libsqlite3-dev libpq-dev libmicrohttpd-dev \
    && rm -rf /var/lib/apt/lists/*
COPY . /src
RUN cmake -S /src -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMANDRILL_TESTS=OFF \
    && cmake --build /build -j 2 \
    && cmake --install /build --prefix /opt/mandrill \
    && install -m 0755 /src/docker/mandrill-keys.sh /opt/mandrill/bin/mandrill-keys

FROM debian:12
# /data and /keys belong to the mandrill user, so a named volume mounted
# there is writable by it from its first use.
RUN apt-get update && apt-get install -y --no-install-recommends libzmq5 libczmq4 libcjson1 libsqlite3-0 \
        libpq5 libmicrohttpd12 sqlite3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home mandrill && mkdir -p /data /keys && chown mandrill /data /keys
COPY --from=build /opt/mandrill/bin/ /usr/local/bin/
USER mandrill
WORKDIR /data
