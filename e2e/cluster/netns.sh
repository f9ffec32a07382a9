#!/usr/bin/env bash
# Runs a command in a network namespace of its own, made for the cluster test: loopback up, and
# the pod network 10.244.0.0/16 routed to loopback, so every pod address is an address of this
# namespace. The apiserver refuses loopback (127/8) addresses in EndpointSlices, so pods need
# addresses of a real range; in this namespace they reach nothing outside it, and nothing outside
# reaches them. Needs root (unshare).
#
#   e2e/cluster/netns.sh COMMAND [ARGS...]
set -euo pipefail
if [ "${HEARTH_CLUSTER_NETNS:-}" != inside ]; then
  exec unshare --net -- env HEARTH_CLUSTER_NETNS=inside "$0" "$@"
fi
ip link set lo up
ip route add local 10.244.0.0/16 dev lo
exec "$@"
