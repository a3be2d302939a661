#!/usr/bin/env bash
# One command for a fresh Debian machine: install what is needed, start the local stack
# (Orthanc + DICOMweb as the "cloud" store, the Pub/Sub emulator, a dcmtk storescp as the PACS),
# then run dicom-adapter (importer + exporter) in the foreground on configs/local.yaml.
# Ctrl-C stops the adapter; `bash scripts/local-stack.sh down` stops the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

say() { printf '\n== %s\n' "$*"; }

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
need=()
for pkg in python3 python3-venv ca-certificates dcmtk orthanc orthanc-dicomweb orthanc-python default-jre-headless; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
# local-stack.sh installs the Pub/Sub emulator from the Google Cloud CLI apt repository when it
# is absent; if it cannot, it starts Orthanc only and this script runs the adapter import-only.

if [ ! -x .venv/bin/dicom-adapter ]; then
  say "creating .venv and installing dicom-adapter"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e .
fi

say "starting the local stack (Orthanc, Pub/Sub emulator)"
bash scripts/local-stack.sh up
only=()
if [ -e .local-stack/import-only ]; then
  only=(--only importer)
  say "no Pub/Sub emulator could be installed: running import-only (PACS -> store); export needs it"
fi

# The exporter's destination: a dcmtk storescp standing in for the site's PACS.
mkdir -p .local-stack/pacs/received
if ! { [ -f .local-stack/pacs.pid ] && kill -0 "$(cat .local-stack/pacs.pid)" 2>/dev/null; }; then
  say "starting a local PACS (dcmtk storescp LOCALPACS on 127.0.0.1:11112)"
  TCP_NODELAY=1 storescp --fork --aetitle LOCALPACS +xa -od .local-stack/pacs/received -uf \
    11112 >.local-stack/pacs.log 2>&1 &
  echo $! > .local-stack/pacs.pid
fi

# Point the exporter at the emulator (and record the stack's addresses) for this process.
# shellcheck disable=SC1091
source .local-stack/env
.venv/bin/dicom-adapter validate configs/local.yaml "${only[@]}"
cat <<TXT

== dicom-adapter is starting (importer on 127.0.0.1:2575, health on http://127.0.0.1:8080/)
Try it from another terminal:
  PACS -> cloud:  dcmsend -aet LOCALPACS -aec IMPORTADAPTER 127.0.0.1 2575 +sd /path/to/dicom/dir
                  curl -s http://127.0.0.1:8042/dicom-web/instances | head
  cloud -> PACS:  curl -s -X POST http://127.0.0.1:8042/instances --data-binary @some.dcm
                  ls $ROOT/.local-stack/pacs/received
  metrics:        curl -s http://127.0.0.1:8080/metrics | grep dicom_adapter_
  status page:    http://127.0.0.1:8080/status
Stop: Ctrl-C, then: bash scripts/local-stack.sh down

TXT
exec .venv/bin/dicom-adapter run --config configs/local.yaml "${only[@]}"
