# syntax=docker/dockerfile:1
# Elemta: one image for every service and the operator (`elemta serve <service>`).
# The same recipe as tools/image/build.sh (`make image`), which builds this image
# from Debian's packages without Docker: Debian bookworm's python3, a venv in
# /opt/elemta with the project's wheels, user 10001, no shell tools needed at run
# time. Works with a read-only root filesystem: state goes to /var/lib/elemta
# (mount a volume or emptyDir) and /tmp.

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN python3 -m venv /opt/build && /opt/build/bin/pip wheel -q -c requirements.lock --wheel-dir /wheels .

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python3 -m venv /opt/elemta \
 && /opt/elemta/bin/pip install -q --no-index --no-compile --find-links /wheels elemta \
 && /opt/elemta/bin/python -m compileall -q /opt/elemta/lib \
 && /opt/elemta/bin/pip uninstall -q -y pip setuptools \
 && rm -f /opt/elemta/bin/nats-server \
 && groupadd -g 10001 elemta \
 && useradd -u 10001 -g 10001 -M -d /var/lib/elemta -s /usr/sbin/nologin elemta \
 && mkdir -p /var/lib/elemta /etc/elemta && chown 10001:10001 /var/lib/elemta
ENV PATH=/opt/elemta/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/elemta
# SMTP 2525 (MTA), 2587 (submission), 2465 (submissions); API and UI 8025.
EXPOSE 2525 2587 2465 8025
ENTRYPOINT ["/opt/elemta/bin/elemta"]
CMD ["--help"]
