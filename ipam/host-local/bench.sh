#!/bin/bash
# Time ADD and DEL of a host-local binary, one process per operation, like a runtime does.
# usage: ipam/host-local/bench.sh <binary> [n=200] [prefill=0]     (BASE=/dev/shm to leave fsync out)
# e.g.:  for b in /usr/lib/cni/host-local target/x86_64-unknown-linux-gnu/release/host-local; do ipam/host-local/bench.sh $b 200 500; done
set -u
BIN=$(readlink -f "$1"); N=${2:-200}; PRE=${3:-0}
D=$(mktemp -d "${BASE:-/tmp}/hlbench.XXXX")
trap 'rm -rf "$D"' EXIT
CONF='{"cniVersion":"1.0.0","name":"bench","ipam":{"type":"host-local","dataDir":"'$D'","ranges":[[{"subnet":"10.200.0.0/16"}],[{"subnet":"fd00:200::/64"}]]}}'
export CNI_NETNS=/nonexistent CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni
for ((i = 0; i < PRE; i++)); do CNI_COMMAND=ADD CNI_CONTAINERID=pre$i "$BIN" <<<"$CONF" >/dev/null; done
s=$(date +%s%N)
for ((i = 0; i < N; i++)); do CNI_COMMAND=ADD CNI_CONTAINERID=c$i "$BIN" <<<"$CONF" >/dev/null || echo "ADD c$i failed"; done
m=$(date +%s%N)
for ((i = 0; i < N; i++)); do CNI_COMMAND=DEL CNI_CONTAINERID=c$i "$BIN" <<<"$CONF" >/dev/null || echo "DEL c$i failed"; done
e=$(date +%s%N)
echo "$BIN dir=${BASE:-/tmp} prefill=$PRE: ADD $(((m - s) / N / 1000)) us/op, DEL $(((e - m) / N / 1000)) us/op (dual-stack)"
