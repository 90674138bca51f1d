#!/bin/sh
# Install Debian's chromium for the report.html browser test when it is missing.
# Idempotent; needs root (or sudo) and access to the Debian package mirrors.
set -eu
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium
