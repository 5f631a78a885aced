#!/usr/bin/env bash
# Sets up incus for strata, idempotently, on Debian 12 as root (see docs/incus.md):
# installs incus from bookworm-backports, starts lxcfs and incusd where PID 1
# is not systemd, waits until incusd is ready, and preseeds the `debusinebr0`
# network (a NAT bridge, whose dnsmasq gives leases and answers DNS: stages
# that declare network reach the mirror through it), the `default` storage
# pool, the `debusine` profile (a NIC on that bridge) and the `strata-offline`
# profile (which masks that NIC, for stages without network).
#
# Environment: STRATA_INCUS_POOL_DRIVER (default: dir) picks the driver of a
# new `default` pool (btrfs makes a loop image of its own);
# STRATA_INCUS_SUBNET (default: 10.233.71.1/24) is the bridge's address when
# it has none yet (incus cannot pick one by itself on every host).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }

# 1. Packages, from the backports suite of the mirror the host already uses.
if ! have_pkg incus-base || ! have_pkg incus-client || ! have_pkg dnsmasq-base; then
  . "$(dirname "$0")/backports.sh"
  add_backports
  apt-get update -q
  apt-get install -y -q --no-install-recommends -t bookworm-backports incus-base incus-client dnsmasq-base
fi

# 2. Services. With systemd as PID 1 the packages' units run them.
if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
  systemctl start lxcfs incus.socket incus.service || true
else
  # lxcfs is healthy when its FUSE mount answers.
  if ! cat /var/lib/lxcfs/proc/uptime >/dev/null 2>&1; then
    # An lxcfs that died (with the session that started it) leaves its FUSE
    # mount behind, and every stat of it fails with "Transport endpoint is
    # not connected": unmount it before starting a new one.
    if grep -qs ' /var/lib/lxcfs fuse' /proc/mounts; then
      umount -l /var/lib/lxcfs 2>/dev/null || fusermount -uz /var/lib/lxcfs
    fi
    mkdir -p /var/lib/lxcfs
    lxcfs /var/lib/lxcfs >/var/log/strata-lxcfs.log 2>&1 &
    # incusd looks for lxcfs when it starts: wait for the mount to answer.
    for _ in $(seq 50); do
      cat /var/lib/lxcfs/proc/uptime >/dev/null 2>&1 && break
      sleep 0.1
    done
  fi
  # A live incusd (not a zombie left by a killed one) answers on its socket.
  # The socket's group is who may use incus besides root: incus-admin, as
  # the packaged incus.socket has it (an ordinary user in that group runs
  # the incus backends); root where the packages made no such group.
  group=root
  getent group incus-admin >/dev/null && group=incus-admin
  if ! incus admin waitready --timeout 2 >/dev/null 2>&1; then
    # incusd looks for its helpers on PATH.
    PATH=/usr/libexec/incus:$PATH nohup /usr/libexec/incus/incusd --group "$group" \
      >/var/log/strata-incusd.log 2>&1 &
  fi
fi
/usr/libexec/incus/incusd waitready --timeout 60 2>/dev/null || incus admin waitready --timeout 60
# An incusd this script started before it knew of incus-admin keeps a
# root-only socket: give it the group, as a restart would.
if [ "${group:-root}" != root ]; then
  chgrp "$group" /var/lib/incus/unix.socket
fi

# 3. Network, storage pool and profile: a preseed, which creates what is
# missing and updates what exists, so running it again changes nothing.
driver=${STRATA_INCUS_POOL_DRIVER:-dir}
# Keep the bridge's address once it has one.
subnet=$(incus network get debusinebr0 ipv4.address 2>/dev/null || true)
case "$subnet" in
  ""|none) subnet=${STRATA_INCUS_SUBNET:-10.233.71.1/24} ;;
esac
incus admin init --preseed <<YAML
networks:
- name: debusinebr0
  type: bridge
  config:
    ipv4.address: $subnet
    ipv4.nat: "true"
    ipv6.address: none
storage_pools:
- name: default
  driver: $driver
profiles:
- name: debusine
  description: strata build instances (debusine's profile)
  config:
    raw.lxc: lxc.mount.auto=sys
  devices:
    eth0:
      name: host0
      network: debusinebr0
      type: nic
    root:
      path: /
      pool: default
      type: disk
- name: strata-offline
  description: strata stages without network (masks the debusine profile's NIC)
  config: {}
  devices:
    eth0:
      type: none
YAML
echo "incus-setup: ready (incus $(incus version 2>/dev/null | sed -n 's/^Server version: //p'))"
