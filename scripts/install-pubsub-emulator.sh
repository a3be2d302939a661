#!/usr/bin/env bash
# Install the Google Cloud Pub/Sub emulator (and a JRE) on Debian/Ubuntu when it is absent.
#
# The emulator is no Debian package: it comes from the Google Cloud CLI's apt repository
# (packages.cloud.google.com), package google-cloud-cli-pubsub-emulator.
#
#   bash scripts/install-pubsub-emulator.sh    # exit 0: present (or installed); 1: unavailable
#
# PUBSUB_EMULATOR_BIN   the emulator's path (default: where the Debian package puts it)
# LOCAL_STACK_NO_INSTALL=1  never call apt-get (only report)
# Prints exactly one line on failure, naming why; never leaves a half-configured apt source.
set -euo pipefail

BIN="${PUBSUB_EMULATOR_BIN:-/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator}"
KEYRING=/usr/share/keyrings/cloud.google.gpg
SOURCE=/etc/apt/sources.list.d/google-cloud-sdk.list
REPO_LINE="deb [signed-by=$KEYRING] https://packages.cloud.google.com/apt cloud-sdk main"
KEY_URL=https://packages.cloud.google.com/apt/doc/apt-key.gpg

say() { printf '[pubsub-emulator] %s\n' "$*"; }
unavailable() { say "not available: $*"; exit 1; }

if [[ -x "$BIN" ]] && command -v java >/dev/null; then
    say "present: $BIN"
    exit 0
fi
[[ "${LOCAL_STACK_NO_INSTALL:-}" == 1 ]] && unavailable "$BIN missing and LOCAL_STACK_NO_INSTALL=1"
command -v apt-get >/dev/null || unavailable "$BIN missing and no apt-get to install it"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || unavailable "installing it needs root or sudo"
    sudo=(sudo)
fi
apt_env=(env DEBIAN_FRONTEND=noninteractive)
packages=(google-cloud-cli-pubsub-emulator default-jre-headless)
say "installing ${packages[*]} from the Google Cloud CLI apt repository"
{
    if [[ ! -s "$KEYRING" || ! -s "$SOURCE" ]]; then
        "${sudo[@]}" "${apt_env[@]}" apt-get install -y -q --no-install-recommends \
            ca-certificates curl gnupg </dev/null &&
            curl -fsSL --max-time 60 "$KEY_URL" | "${sudo[@]}" gpg --dearmor --yes -o "$KEYRING" &&
            echo "$REPO_LINE" | "${sudo[@]}" tee "$SOURCE" >/dev/null
    fi &&
        "${sudo[@]}" "${apt_env[@]}" apt-get update -q &&
        "${sudo[@]}" "${apt_env[@]}" apt-get install -y -q --no-install-recommends \
            "${packages[@]}" </dev/null
} >&2 || {
    # an unreachable repository must not break later apt-get runs
    if ! "${sudo[@]}" dpkg -s google-cloud-cli-pubsub-emulator >/dev/null 2>&1; then
        "${sudo[@]}" rm -f "$SOURCE"
    fi
    unavailable "apt-get could not install ${packages[0]} (is packages.cloud.google.com reachable?)"
}
[[ -x "$BIN" ]] || unavailable "installed, but $BIN is missing (set PUBSUB_EMULATOR_BIN)"
say "installed: $BIN"
