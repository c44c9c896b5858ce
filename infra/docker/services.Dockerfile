# syntax=docker/dockerfile:1.7
# The five services and the REST gateway, one image: `python -m services.<name>.main`
# (the ECS task definitions set the command). Built from the repository root:
#   docker build -f infra/docker/services.Dockerfile -t bmc-services .
# Pin the base by digest when building for release (`python:3.11.7-slim-bookworm@sha256:…`);
# the tag is pinned here to the patch release.

FROM python:3.11.7-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The runtime dependencies only (no dev tools), exactly as locked, every file
# checked against its hash; then the project itself, which adds nothing.
COPY requirements/runtime.lock requirements/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-compile --require-hashes -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY gen/ gen/
COPY services/ services/
RUN /opt/venv/bin/pip install --no-compile --no-deps . \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM python:3.11.7-slim-bookworm
# Tesseract's data for the OCR service (the tesserocr wheel bundles the
# engine): Spanish for pages, English for the CUFE's hexadecimal re-read;
# and the fonts the certificate PDFs embed. Pinned to bookworm's versions.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      tesseract-ocr-spa=1:4.1.0-2 \
      tesseract-ocr-eng=1:4.1.0-2 \
      fonts-dejavu-core=2.37-6 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
# A user of its own; the root filesystem is read-only in ECS (/tmp is a volume).
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin bmc
USER 10001
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BMC_DATA_DIR=/tmp/bmc \
    BMC_BIND_HOST=127.0.0.1
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m"]
CMD ["services.invoice.main"]
