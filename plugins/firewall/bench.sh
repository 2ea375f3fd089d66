#!/usr/bin/env bash
# ADD and DEL latency of a firewall binary with N other pods' rules already on the node, in a throwaway
# netns (removed at exit). Usage: plugins/firewall/bench.sh <firewall binary> <N> [rounds]
# Prints the median ADD and DEL time in ms. Run as root; touches nothing outside its netns.
set -euo pipefail
bin=$1; n=$2; rounds=${3:-30}
ns="rcni-fwbench-$$"
ip netns add "$ns"
trap 'ip netns del "$ns"; rm -rf "/run/rcni/firewall-$ino"' EXIT
ino=$(stat -L -c %i "/run/netns/$ns")
conf() { # $1 = last octets of the pod address
  printf '{"cniVersion":"1.0.0","name":"bench","type":"firewall","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"br0"},{"name":"veth0"},{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.90.%s/16","interface":2}]}}' "$1"
}
plugin() { # $1 command, $2 container ID, $3 address
  conf "$3" | ip netns exec "$ns" env CNI_COMMAND="$1" CNI_CONTAINERID="$2" CNI_NETNS=/x CNI_IFNAME=eth0 \
    CNI_PATH=/usr/lib/cni "$bin" >/dev/null
}
for i in $(seq 1 "$n"); do plugin ADD "other$i" "$((i / 250)).$((i % 250 + 1))"; done
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
adds=(); dels=()
for r in $(seq 1 "$rounds"); do
  t0=$(date +%s%N); plugin ADD bench "255.$r"; t1=$(date +%s%N); plugin DEL bench "255.$r"; t2=$(date +%s%N)
  adds+=($(( (t1 - t0) / 1000 ))); dels+=($(( (t2 - t1) / 1000 )))
done
printf '%s N=%s ADD p50 %s ms, DEL p50 %s ms\n' "$bin" "$n" \
  "$(printf '%s\n' "${adds[@]}" | median | awk '{printf "%.1f", $1/1000}')" \
  "$(printf '%s\n' "${dels[@]}" | median | awk '{printf "%.1f", $1/1000}')"
