# The training image the manifests in examples/k8s run: cohort-train:0.1.0 (the version is the
# top-level CMakeLists.txt project() VERSION; bump both together).
#   docker build -t cohort-train:0.1.0 .
# Build stage: exactly what CI runs (.ci/run -> scripts/test: scripts/setup, scripts/build), so the
# image is built the way the tested binaries are. Runtime stage: only the packages listed in
# scripts/runtime-packages, plus build/bin at /opt/cohort/bin on PATH. tests/k8s/dockerfile_test.py
# checks both stages against those scripts and that list.
FROM debian:12 AS build
WORKDIR /src
COPY . /src
RUN bash scripts/setup
RUN bash scripts/build

FROM debian:12
COPY scripts/runtime-packages /tmp/runtime-packages
RUN apt-get update \
 && grep -v '^#' /tmp/runtime-packages | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages
COPY --from=build /src/build/bin /opt/cohort/bin
# A non-interactive SSH session (mpirun through sshd) does not read ENV, hence the link too.
RUN ln -s /opt/cohort/bin/cohort /usr/local/bin/cohort
ENV PATH=/opt/cohort/bin:$PATH
