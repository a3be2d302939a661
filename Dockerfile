# dicom-adapter container image.
#   docker build -t dicom-adapter:0.1.0 .
# The entrypoint is the `dicom-adapter` console script, so both invocations work unchanged:
#   dicom-adapter run --config /etc/dicom-adapter/adapter.yaml            (this project's chart)
#   --dimse_aet=IMPORTADAPTER --dimse_port=2575 --dicomweb_address=...   (Java adapter GKE manifest)

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: wheels for the project and every runtime dependency -------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Dependencies first (from pyproject.toml only) so source edits do not rebuild them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip wheel --wheel-dir /wheels -r /tmp/requirements.txt

# Then the project itself (no deps: they are already in /wheels).
COPY adapter ./adapter
COPY importer ./importer
COPY exporter ./exporter
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---- runtime: only the installed wheels, non-root -----------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG APP_UID=10001
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

LABEL org.opencontainers.image.title="dicom-adapter" \
      org.opencontainers.image.description="PACS (DIMSE) <-> DICOMweb (Cloud Healthcare API) adapter" \
      org.opencontainers.image.licenses="Apache-2.0"

# Plain COPY (no BuildKit-only RUN --mount) so Cloud Build, Kaniko and the legacy builder all work.
COPY --from=builder /wheels /tmp/wheels
RUN pip install --no-index --find-links=/tmp/wheels /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels \
 && groupadd --system --gid ${APP_UID} dicom-adapter \
 && useradd --system --uid ${APP_UID} --gid ${APP_UID} --no-create-home \
      --home-dir /var/lib/dicom-adapter --shell /usr/sbin/nologin dicom-adapter \
 && mkdir -p /var/lib/dicom-adapter/spool /var/lib/dicom-adapter/deadletter \
      /var/lib/dicom-adapter/state /var/lib/dicom-adapter/export /etc/dicom-adapter \
 && chown -R ${APP_UID}:${APP_UID} /var/lib/dicom-adapter

WORKDIR /var/lib/dicom-adapter
USER 10001:10001

# 2575: DIMSE (C-STORE SCP etc.); 8080: /healthz, /readyz, /metrics.
EXPOSE 2575 8080
VOLUME ["/var/lib/dicom-adapter"]

ENTRYPOINT ["dicom-adapter"]
CMD ["--help"]
