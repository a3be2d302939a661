#!/usr/bin/env bash
# Local development stack on loopback: Orthanc (+ DICOMweb plugin) and the Google Cloud
# Pub/Sub emulator, for running dicom-adapter by hand.
#
#   bash scripts/local-stack.sh up       # install what is missing, start, wait until both answer
#   bash scripts/local-stack.sh status   # what runs, where (exit 1 if something is down)
#   bash scripts/local-stack.sh down     # stop what `up` started (by the PIDs it recorded)
#   bash scripts/local-stack.sh env      # print export lines for the adapter
#
# Defaults: Orthanc HTTP 127.0.0.1:8042 (DICOMweb at /dicom-web), DICOM port 4242, AET ORTHANC;
# Pub/Sub emulator 127.0.0.1:8085, project local-project, topic dicom-store, subscription
# dicom-export. State, configs, logs and PID files live in .local-stack/ (git-ignored).
#
# Environment knobs:
#   ORTHANC_HTTP_PORT ORTHANC_DICOM_PORT ORTHANC_AET    Orthanc's ports and AE title
#   ORTHANC_MODALITIES      "NAME=AET@HOST:PORT ..."    DicomModalities (e.g. the adapter's SCP)
#   ORTHANC_EXTRA_PLUGINS   "/path/a.so:/path/b.so"     more Orthanc plugins
#   ORTHANC_PYTHON_SCRIPT   /path/script.py             load libOrthancPython.so with this script
#   ORTHANC_EXTRA_CONFIG    '{"Key": value}'            JSON merged into the generated config
#   PUBSUB_PORT PUBSUB_PROJECT PUBSUB_TOPIC PUBSUB_SUBSCRIPTION PUBSUB_ACK_DEADLINE
#   LOCAL_STACK_DIR         state directory (default: <repo>/.local-stack)
#   PUBSUB_EMULATOR_BIN     the emulator (installed by scripts/install-pubsub-emulator.sh when absent)
#   LOCAL_STACK_NO_INSTALL=1  never call apt-get
#   LOCAL_STACK_TIMEOUT     seconds to wait for each service (default 60)
#
# Without the emulator (it cannot be installed), `up` starts Orthanc only and says so in one line;
# the adapter then runs import-only (scripts/run-local.sh does). A failed `up` stops what it
# started. Only 127.0.0.1 is used. `down` signals only the PIDs recorded by `up`, after checking that
# each still runs the expected program. The system Orthanc service is never touched.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${LOCAL_STACK_DIR:-$ROOT/.local-stack}"

ORTHANC_BIN="${ORTHANC_BIN:-/usr/sbin/Orthanc}"
ORTHANC_PLUGIN_DIR="${ORTHANC_PLUGIN_DIR:-/usr/share/orthanc/plugins}"
ORTHANC_HTTP_PORT="${ORTHANC_HTTP_PORT:-8042}"
ORTHANC_DICOM_PORT="${ORTHANC_DICOM_PORT:-4242}"
ORTHANC_AET="${ORTHANC_AET:-ORTHANC}"
ORTHANC_MODALITIES="${ORTHANC_MODALITIES:-}"
ORTHANC_EXTRA_PLUGINS="${ORTHANC_EXTRA_PLUGINS:-}"
# Default: the exporter's notifier, so stored instances are announced on the Pub/Sub topic like a
# Cloud Healthcare DICOM store does (set ORTHANC_PYTHON_SCRIPT= to run Orthanc without it).
ORTHANC_PYTHON_SCRIPT="${ORTHANC_PYTHON_SCRIPT-$ROOT/exporter/orthanc_notifier.py}"
ORTHANC_EXTRA_CONFIG="${ORTHANC_EXTRA_CONFIG:-}"

PUBSUB_BIN="${PUBSUB_EMULATOR_BIN:-/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator}"
PUBSUB_PORT="${PUBSUB_PORT:-8085}"
PUBSUB_PROJECT="${PUBSUB_PROJECT:-local-project}"
PUBSUB_TOPIC="${PUBSUB_TOPIC:-dicom-store}"
PUBSUB_SUBSCRIPTION="${PUBSUB_SUBSCRIPTION:-dicom-export}"
PUBSUB_ACK_DEADLINE="${PUBSUB_ACK_DEADLINE:-60}"

TIMEOUT="${LOCAL_STACK_TIMEOUT:-60}"
HOST=127.0.0.1
PACKAGES=(dcmtk orthanc orthanc-dicomweb orthanc-python default-jre-headless)

log() { printf '[local-stack] %s\n' "$*"; }
die() { printf '[local-stack] ERROR: %s\n' "$*" >&2; exit 1; }
PUBSUB_AVAILABLE=1
STARTED=()

# ------------------------------------------------------------------------------ install
install_missing() {
    local missing=() pkg
    if [[ "${LOCAL_STACK_NO_INSTALL:-}" != 1 ]]; then
        for pkg in "${PACKAGES[@]}"; do
            dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
        done
    fi
    if ((${#missing[@]} > 0)); then
        log "installing: ${missing[*]}"
        local sudo=()
        if [[ $(id -u) -ne 0 ]]; then
            command -v sudo >/dev/null || die "need root (or sudo) to install ${missing[*]}"
            sudo=(sudo)
        fi
        # Keep the packages' maintainer scripts from starting the system Orthanc service
        # (it would take ports 8042/4242): policy-rc.d exit 101 = "action forbidden".
        local made_policy=0
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
            "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
            made_policy=1
        fi
        local rc=0
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q || rc=$?
        if ((rc == 0)); then
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -q --no-install-recommends "${missing[@]}" || rc=$?
        fi
        if ((made_policy)); then "${sudo[@]}" rm -f /usr/sbin/policy-rc.d; fi
        ((rc == 0)) || die "apt-get failed ($rc)"
    fi
    [[ -x "$ORTHANC_BIN" ]] || die "$ORTHANC_BIN missing (package orthanc)"
    [[ -f "$ORTHANC_PLUGIN_DIR/libOrthancDicomWeb.so" ]] || die "DICOMweb plugin missing (package orthanc-dicomweb)"
    if ! PUBSUB_EMULATOR_BIN="$PUBSUB_BIN" bash "$ROOT/scripts/install-pubsub-emulator.sh" >&2; then
        PUBSUB_AVAILABLE=0
    fi
}

# ------------------------------------------------------------------------------ helpers
port_open() { # port -> 0 if something accepts connections on 127.0.0.1:port
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

http_ok() { # url -> 0 if it answers 2xx
    python3 - "$1" <<'PY' 2>/dev/null
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        sys.exit(0 if 200 <= r.status < 300 else 1)
except Exception:
    sys.exit(1)
PY
}

pid_of() { # name -> pid from the pid file if that process still runs the expected program
    local name=$1 expect=$2 pidfile="$STATE/$1.pid" pid
    [[ -f "$pidfile" ]] || return 1
    pid=$(<"$pidfile")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$expect" || return 1
    printf '%s\n' "$pid"
}

wait_for() { # description, timeout, pid, command... -> waits until the command succeeds
    local what=$1 timeout=$2 pid=$3
    shift 3
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            die "$what exited during startup (see its log)"
        fi
        if ((SECONDS >= deadline)); then
            die "$what did not answer within ${timeout}s (see its log)"
        fi
        sleep 0.2
    done
}

stop_pid() { # name, expected cmdline fragment
    local name=$1 expect=$2 pid
    if ! pid=$(pid_of "$name" "$expect"); then
        rm -f "$STATE/$name.pid"
        log "$name: not running"
        return 0
    fi
    log "$name: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name: still alive after 20s, SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE/$name.pid"
}

# ------------------------------------------------------------------------------ Orthanc
write_orthanc_config() {
    mkdir -p "$STATE/orthanc/storage"
    # The config is generated by python3 (standard library only) so it is easy to extend.
    ORTHANC_STORAGE="$STATE/orthanc/storage" \
    ORTHANC_PLUGIN_DIR="$ORTHANC_PLUGIN_DIR" \
    ORTHANC_HTTP_PORT="$ORTHANC_HTTP_PORT" ORTHANC_DICOM_PORT="$ORTHANC_DICOM_PORT" \
    ORTHANC_AET="$ORTHANC_AET" ORTHANC_MODALITIES="$ORTHANC_MODALITIES" \
    ORTHANC_EXTRA_PLUGINS="$ORTHANC_EXTRA_PLUGINS" ORTHANC_PYTHON_SCRIPT="$ORTHANC_PYTHON_SCRIPT" \
    ORTHANC_EXTRA_CONFIG="$ORTHANC_EXTRA_CONFIG" \
    NOTIFIER_PUBSUB_HOST="$HOST:$PUBSUB_PORT" NOTIFIER_PROJECT="$PUBSUB_PROJECT" \
    NOTIFIER_TOPIC="$PUBSUB_TOPIC" \
    python3 - >"$STATE/orthanc/orthanc.json" <<'PY'
import json, os, re, sys

env = os.environ
plugin_dir = env["ORTHANC_PLUGIN_DIR"]
plugins = [os.path.join(plugin_dir, "libOrthancDicomWeb.so")]

# ---- HOOK(exporter): the exporter's Orthanc notification plugin goes here. ---------------
# Set ORTHANC_PYTHON_SCRIPT=/path/to/plugin.py (loads libOrthancPython.so with that script),
# or list native plugins in ORTHANC_EXTRA_PLUGINS (colon-separated .so paths).
plugins += [p for p in re.split(r"[:\s]+", env.get("ORTHANC_EXTRA_PLUGINS", "")) if p]
python_script = env.get("ORTHANC_PYTHON_SCRIPT", "")
# exporter/orthanc_notifier.py reads this section (see its docstring).
notifier = {
    "PubSubHost": env["NOTIFIER_PUBSUB_HOST"],
    "Project": env["NOTIFIER_PROJECT"],
    "Topic": env["NOTIFIER_TOPIC"],
    "StoreName": "orthanc",
}
# -------------------------------------------------------------------------------------------

modalities = {}
for item in env.get("ORTHANC_MODALITIES", "").split():
    m = re.fullmatch(r"([^=]+)=([^@]+)@([^:]+):(\d+)", item)
    if not m:
        sys.exit(f"bad ORTHANC_MODALITIES entry {item!r}: want NAME=AET@HOST:PORT")
    modalities[m[1]] = [m[2], m[3], int(m[4])]

config = {
    "Name": "dicom-adapter-local",
    "StorageDirectory": env["ORTHANC_STORAGE"],
    "IndexDirectory": env["ORTHANC_STORAGE"],
    "Plugins": plugins,
    "ConcurrentJobs": 2,
    "HttpServerEnabled": True,
    "HttpPort": int(env["ORTHANC_HTTP_PORT"]),
    "RemoteAccessAllowed": False,
    "AuthenticationEnabled": False,
    "SslEnabled": False,
    "HttpDescribeErrors": True,
    "KeepAlive": True,
    "TcpNoDelay": True,
    "DicomServerEnabled": True,
    "DicomAet": env["ORTHANC_AET"],
    "DicomPort": int(env["ORTHANC_DICOM_PORT"]),
    "DicomCheckCalledAet": False,
    "DicomCheckModalityHost": False,
    "DicomAlwaysAllowEcho": True,
    "DicomAlwaysAllowStore": True,
    "DicomAlwaysAllowFind": True,
    "DicomAlwaysAllowGet": True,
    "DicomAlwaysAllowMove": True,
    "DicomModalities": modalities,
    "UnknownSopClassAccepted": True,
    "OverwriteInstances": True,
    "StableAge": 2,
    "ExecuteLuaEnabled": False,
    "RestApiWriteToFileSystemEnabled": False,
    "DicomWeb": {
        "Enable": True,
        "Root": "/dicom-web/",
        "EnableWado": True,
        "WadoRoot": "/wado",
        "Ssl": False,
        "StudiesMetadata": "Full",
        "SeriesMetadata": "Full",
    },
}
if python_script:
    config["Plugins"].append(os.path.join(plugin_dir, "libOrthancPython.so"))
    config["PythonScript"] = os.path.abspath(python_script)
    config["PythonVerbose"] = False
    config["DicomAdapterNotifier"] = notifier
extra = env.get("ORTHANC_EXTRA_CONFIG", "").strip()
if extra:
    config.update(json.loads(extra))
json.dump(config, sys.stdout, indent=2)
PY
}

orthanc_up() {
    local pid
    if pid=$(pid_of orthanc "$ORTHANC_BIN"); then
        log "orthanc: already running (pid $pid)"
        return 0
    fi
    for port in "$ORTHANC_HTTP_PORT" "$ORTHANC_DICOM_PORT"; do
        port_open "$port" && die "port $port is already in use (set ORTHANC_HTTP_PORT / ORTHANC_DICOM_PORT)"
    done
    write_orthanc_config
    log "orthanc: starting (HTTP $ORTHANC_HTTP_PORT, DICOM $ORTHANC_DICOM_PORT, AET $ORTHANC_AET)"
    nohup "$ORTHANC_BIN" "$STATE/orthanc/orthanc.json" \
        >>"$STATE/orthanc/orthanc.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$STATE/orthanc.pid"
    wait_for "orthanc" "$TIMEOUT" "$pid" http_ok "http://$HOST:$ORTHANC_HTTP_PORT/system"
    wait_for "orthanc DICOM port" "$TIMEOUT" "$pid" port_open "$ORTHANC_DICOM_PORT"
    log "orthanc: up (pid $pid), log $STATE/orthanc/orthanc.log"
}

# ------------------------------------------------------------------------------ Pub/Sub
pubsub_rest() { # method path [json-body] -> prints the response, fails on HTTP errors but 409
    python3 - "$1" "http://$HOST:$PUBSUB_PORT$2" "${3:-}" <<'PY'
import sys, urllib.error, urllib.request
method, url, body = sys.argv[1], sys.argv[2], sys.argv[3]
req = urllib.request.Request(url, method=method, data=body.encode() if body else None,
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.read().decode())
except urllib.error.HTTPError as e:
    if e.code == 409:  # already exists
        print(f"(exists) {url}")
    else:
        sys.exit(f"{method} {url} -> {e.code}: {e.read().decode()[:300]}")
PY
}

pubsub_up() {
    local pid
    if pid=$(pid_of pubsub cloud-pubsub-emulator); then
        log "pubsub: already running (pid $pid)"
    else
        port_open "$PUBSUB_PORT" && die "port $PUBSUB_PORT is already in use (set PUBSUB_PORT)"
        mkdir -p "$STATE/pubsub"
        log "pubsub: starting emulator on $HOST:$PUBSUB_PORT"
        (cd "$STATE/pubsub" && exec nohup "$PUBSUB_BIN" --host="$HOST" --port="$PUBSUB_PORT" \
            >>"$STATE/pubsub/emulator.log" 2>&1 </dev/null) &
        pid=$!
        echo "$pid" >"$STATE/pubsub.pid"
        wait_for "pubsub emulator" "$TIMEOUT" "$pid" http_ok "http://$HOST:$PUBSUB_PORT/"
        log "pubsub: up (pid $pid), log $STATE/pubsub/emulator.log"
    fi
    # The emulator keeps nothing across restarts: (re)create topic and subscription.
    local topic="projects/$PUBSUB_PROJECT/topics/$PUBSUB_TOPIC"
    pubsub_rest PUT "/v1/$topic" >/dev/null
    pubsub_rest PUT "/v1/projects/$PUBSUB_PROJECT/subscriptions/$PUBSUB_SUBSCRIPTION" \
        "{\"topic\": \"$topic\", \"ackDeadlineSeconds\": $PUBSUB_ACK_DEADLINE}" >/dev/null
    log "pubsub: topic $topic, subscription projects/$PUBSUB_PROJECT/subscriptions/$PUBSUB_SUBSCRIPTION"
}

# ------------------------------------------------------------------------------ commands
print_env() {
    cat <<EOF
export DICOMWEB_URL=http://$HOST:$ORTHANC_HTTP_PORT/dicom-web
export ORTHANC_URL=http://$HOST:$ORTHANC_HTTP_PORT
export ORTHANC_DICOM_HOST=$HOST
export ORTHANC_DICOM_PORT=$ORTHANC_DICOM_PORT
export ORTHANC_AET=$ORTHANC_AET
EOF
    [[ -e "$STATE/import-only" ]] && return 0
    cat <<EOF
export PUBSUB_EMULATOR_HOST=$HOST:$PUBSUB_PORT
export PUBSUB_PROJECT_ID=$PUBSUB_PROJECT
export PUBSUB_TOPIC=projects/$PUBSUB_PROJECT/topics/$PUBSUB_TOPIC
export PUBSUB_SUBSCRIPTION=projects/$PUBSUB_PROJECT/subscriptions/$PUBSUB_SUBSCRIPTION
EOF
}

rollback() { # a failed `up` stops what this `up` started (by the PIDs it recorded)
    local name
    for name in "${STARTED[@]}"; do
        case $name in
            orthanc) stop_pid orthanc "$ORTHANC_BIN" ;;
            pubsub) stop_pid pubsub cloud-pubsub-emulator ;;
        esac
    done
}

cmd_up() {
    mkdir -p "$STATE"
    trap 'rc=$?; if ((rc != 0)); then log "up failed: stopping what it started"; rollback; fi' EXIT
    install_missing
    pid_of orthanc "$ORTHANC_BIN" >/dev/null || STARTED+=(orthanc)
    orthanc_up
    rm -f "$STATE/import-only"
    if ((PUBSUB_AVAILABLE)); then
        pid_of pubsub cloud-pubsub-emulator >/dev/null || STARTED+=(pubsub)
        pubsub_up
    else
        log "no Pub/Sub emulator: started Orthanc only, so the adapter runs import-only (PACS -> store)"
        touch "$STATE/import-only"
    fi
    print_env >"$STATE/env"
    trap - EXIT
    log "ready; for the adapter: source $STATE/env"
    print_env
}

cmd_down() {
    stop_pid pubsub cloud-pubsub-emulator
    stop_pid orthanc "$ORTHANC_BIN"
    stop_pid pacs storescp  # the local PACS started by scripts/run-local.sh, if any
}

cmd_status() {
    local rc=0 pid
    if pid=$(pid_of orthanc "$ORTHANC_BIN"); then
        if http_ok "http://$HOST:$ORTHANC_HTTP_PORT/system" && port_open "$ORTHANC_DICOM_PORT"; then
            log "orthanc: running (pid $pid) http://$HOST:$ORTHANC_HTTP_PORT (DICOMweb /dicom-web), DICOM $HOST:$ORTHANC_DICOM_PORT AET $ORTHANC_AET"
        else
            log "orthanc: pid $pid alive but not answering"
            rc=1
        fi
    else
        log "orthanc: down"
        rc=1
    fi
    if [[ -e "$STATE/import-only" ]]; then
        log "pubsub: not used (no emulator: import-only)"
    elif pid=$(pid_of pubsub cloud-pubsub-emulator); then
        if http_ok "http://$HOST:$PUBSUB_PORT/"; then
            log "pubsub: running (pid $pid) PUBSUB_EMULATOR_HOST=$HOST:$PUBSUB_PORT project $PUBSUB_PROJECT"
        else
            log "pubsub: pid $pid alive but not answering"
            rc=1
        fi
    else
        log "pubsub: down"
        rc=1
    fi
    return "$rc"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    restart) cmd_down; cmd_up ;;
    env) print_env ;;
    install) install_missing ;;
    *)
        echo "usage: $0 up|down|status|restart|env|install" >&2
        exit 2
        ;;
esac
