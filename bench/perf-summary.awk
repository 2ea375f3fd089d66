# Summarise `perf script` output (perf record -a -g, cpu-clock) of plugin invocations: each sample of the
# plugin's processes and threads (comm bridge, host-local, rcni-ipam, rcni-netns) goes to the first category
# its call stack matches, in the order below; kernel work on behalf of nobody in particular (kworker,
# ksoftirqd) is counted apart, by cause (bg_of), and so are detached helpers (rcni-unlink: DEL's unlink).
# Prints, per category, samples, share and milliseconds per invocation.
# usage: perf script -i perf.data | awk -v RUNS=N -v HZ=F -f bench/perf-summary.awk
function cat_of(s) {
  if (s ~ /inetdev_event/ && s ~ /br_flood/) return "kernel: gratuitous ARP of the pod, flooded to every bridge port"
  if (s ~ /inetdev_event/ && s ~ /arp_/) return "kernel: gratuitous ARP, received by the bridge and the pods"
  if (s ~ /net_rx_action|handle_softirqs/) return "kernel: other packets processed in our context (softirq)"
  if (s ~ /veth_newlink/) return "kernel: veth pair creation (two netdevs, sysfs, IPv6 of the pod end)"
  if (s ~ /do_set_master/) return "kernel: attach to the bridge (br_add_if)"
  if (s ~ /rtnl_newlink/) return "kernel: RTM_NEWLINK other"
  if (s ~ /do_setlink|rtnl_setlink|rtnl_bridge_setlink/) return "kernel: RTM_SETLINK (up, port flags, arp_notify)"
  if (s ~ /rtnl_getlink|rtnl_dump_ifinfo/) return "kernel: RTM_GETLINK"
  if (s ~ /inet6?_rtm_newaddr|inet_rtm_deladdr/) return "kernel: addresses"
  if (s ~ /inet6?_rtm_newroute|ip6_route_add/) return "kernel: routes"
  if (s ~ /nfnetlink|nf_tables/) return "kernel: nftables (masquerade)"
  if (s ~ /netlink_sendmsg|netlink_recvmsg|netlink_release|__sys_socket/) return "kernel: netlink other"
  if (s ~ /fsync|ext4|jbd2|vfs_write|vfs_read|do_sys_open|path_openat|do_renameat|do_unlinkat|flock/) return "kernel: files (IPAM, sysctls)"
  if (s ~ /exc_page_fault/) return "kernel: page faults"
  if (s ~ /bprm_execve|do_execveat|load_elf_binary|begin_new_exec/) return "kernel: execve"
  if (s ~ /do_exit|do_group_exit|exit_mmap|mmput/) return "kernel: exit"
  if (s ~ /clone|copy_process|wake_up_new_task|ret_from_fork/) return "kernel: threads (clone)"
  if (s ~ /setns|switch_task_namespaces/) return "kernel: setns"
  if (s ~ /\[kernel\.kallsyms\]/) return "kernel: other"
  return "user space"
}
# Background kernel work, by what it is: a kworker sample by its work function (the frame that
# process_one_work called), a ksoftirqd sample by the packet work in its stack.
function bg_of(comm, s,    lines, i, f, prev) {
  if (comm ~ /^kworker/) {
    split(s, lines, "\n")
    prev = "?"
    for (i = 2; i in lines; i++) {
      f = lines[i]; sub(/^[ \t]*[0-9a-f]+ /, "", f); sub(/[+ ].*/, "", f)
      if (f == "process_one_work") break
      prev = f
    }
    if (prev ~ /^(mld_ifc_work|mld_dad_work|mld_report_work|mld_query_work|addrconf_dad_work|addrconf_rs_timer)$/)
      return "kworker " prev ": the pods' IPv6 (MLD report, DAD, router solicitation), flooded to every port"
    return "kworker " prev
  }
  if (s ~ /ipv6_rcv|ip6_mc_input|ndisc_rcv|igmp6/) return "ksoftirqd: IPv6 multicast received by the pods"
  if (s ~ /arp_rcv|arp_process/) return "ksoftirqd: ARP received by the pods"
  if (s ~ /br_flood|br_forward|veth_xmit/) return "ksoftirqd: bridge forwarding and flooding"
  return "ksoftirqd: other"
}
BEGIN { RS = "" }
{
  split($0, head, " ")
  comm = head[1]
  if (comm ~ /^(bridge|host-local|rcni-ipam|rcni-netns|vxlan)$/) {
    c = cat_of($0); n[c]++; total++
  } else if (comm == "rcni-unlink") {
    # Detached helpers (DEL's unlink): CPU of the call, not its wall.
    h["helper after the answer: " cat_of($0)]++; htotal++
  } else if (comm ~ /^(kworker|ksoftirqd)/) {
    bg[bg_of(comm, $0)]++; bgtotal++
  }
}
END {
  ms = 1000 / (HZ > 0 ? HZ : 1) / (RUNS > 0 ? RUNS : 1)
  for (c in n) printf "%8.3f ms %5.1f%% %6d  %s\n", n[c] * ms, 100 * n[c] / total, n[c], c
  printf "%8.3f ms %5.1f%% %6d  %s\n", total * ms, 100, total, "all samples of the plugin processes (ms of CPU per run)"
  for (c in h) printf "%8.3f ms %6s %6d  %s\n", h[c] * ms, "", h[c], c
  if (htotal) printf "%8.3f ms %6s %6d  %s\n", htotal * ms, "", htotal, "all samples of detached helpers (rcni-unlink: after the plugin exited)"
  for (k in bg) printf "%8.3f ms %6s %6d  %s\n", bg[k] * ms, "", bg[k], "(not ours, same time) " k
  if (bgtotal) printf "%8.3f ms %6s %6d  %s\n", bgtotal * ms, "", bgtotal, "(not ours, same time) all kworker and ksoftirqd samples"
}
