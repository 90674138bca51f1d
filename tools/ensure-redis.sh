#!/bin/sh
# Install Debian's redis-server for the RedisStore tests and benchmark when it
# is missing. The tests start their own servers (a free port on 127.0.0.1, no
# persistence); nothing is started here. Idempotent; needs root (or sudo) and
# access to the Debian package mirrors.
set -eu
if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends redis-server
