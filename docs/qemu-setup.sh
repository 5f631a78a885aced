#!/usr/bin/env bash
# Installs what strata's qemu backend and its tests run, idempotently, on
# Debian 12 as root: qemu-system-x86 and qemu-utils from bookworm-backports
# (10.x, the same qemu-utils incus brings), OVMF for UEFI guests. Nothing
# is started: qemu runs per environment.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }

# bookworm's own qemu (7.2) is replaced: the tests are made with 10.
recent() {
  have_pkg "$1" && dpkg --compare-versions "$(dpkg-query -W -f='${Version}' "$1")" ge 1:10
}

if ! recent qemu-system-x86 || ! recent qemu-utils || ! have_pkg ovmf; then
  . "$(dirname "$0")/backports.sh"
  add_backports
  apt-get update -q
  apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils
  apt-get install -y -q --no-install-recommends ovmf
fi
echo "qemu-setup: ready ($(qemu-system-x86_64 --version | head -n1))"
