# Summarise `strace -f -ttt -T -o FILE` of one plugin invocation (and its children): per process, start-up
# (execve to the first read of stdin), syscall time by category, and the slowest single syscalls.
# usage: awk -f bench/strace-summary.awk FILE
function cat_of(n) {
  if (n ~ /^(sendto|recvfrom|sendmsg|recvmsg)$/) return "netlink send/recv (kernel work in sendto)"
  if (n ~ /^(fsync|fdatasync|sync_file_range)$/) return "fsync/fdatasync"
  if (n ~ /^(rename|renameat|renameat2|linkat|unlink|unlinkat|flock)$/) return "file link/rename/unlink/flock"
  if (n ~ /^(clone|clone3|vfork|fork)$/) return "fork (clone/vfork)"
  if (n == "execve") return "execve"
  if (n == "close") return "close"
  if (n ~ /^(openat|open)$/) return "openat"
  if (n ~ /^(mmap|munmap|mprotect|brk|madvise)$/) return "memory map"
  if (n ~ /^(futex|epoll_wait|epoll_pwait|nanosleep|wait4|waitid|ppoll|pselect6|read)$/) return "blocking wait (futex/epoll/wait4/read)"
  return "other"
}
{
  pid = $1; ts = $2 + 0
  if (!(pid in first)) { first[pid] = ts; order[++np] = pid }
  last[pid] = ts
  if (t0 == 0 || ts < t0) t0 = ts
  if (ts > t1) t1 = ts
  if ($0 ~ /\+\+\+ exited/) { exitts[pid] = ts; next }
  if ($0 ~ /<unfinished \.\.\.>$/) {
    if ($3 ~ /^execve\(/) { split($0, a, "\""); exe[pid] = a[2]; exects[pid] = ts }
    next
  }
  if ($3 == "<...") { name = $4 } else { name = $3; sub(/\(.*/, "", name) }
  if (name ~ /^(---|\+\+\+)/) next
  d = $NF; if (d !~ /^<[0-9.]+>$/) next
  gsub(/[<>]/, "", d); d = d + 0
  if (name == "execve" && $0 ~ /= 0 /) { if (!(pid in exe)) { split($0, a, "\""); exe[pid] = a[2]; exects[pid] = ts } }
  if (name == "read" && $0 ~ /read\(0,/ && !(pid in stdin_ts)) stdin_ts[pid] = ts
  c = cat_of(name)
  tot[pid, c] += d; cnt[pid, c]++; cats[c] = 1
  line = substr($0, 1, 160)
  slow[++ns] = sprintf("%8.3f ms  pid %s  %s", d * 1000, pid, line)
  slowd[ns] = d
}
END {
  printf "total: %.2f ms from the first to the last event (strace overhead included)\n", (t1 - t0) * 1000
  for (i = 1; i <= np; i++) {
    p = order[i]
    if (!(p in exe)) continue
    e = exe[p]; sub(/.*\//, "", e)
    printf "\nprocess %s (%s): %.2f ms from execve to exit", p, e, ((p in exitts ? exitts[p] : last[p]) - exects[p]) * 1000
    if (p in stdin_ts) printf "; start-up (execve -> first read of stdin) %.2f ms", (stdin_ts[p] - exects[p]) * 1000
    printf "\n"
    for (c in cats) if ((p, c) in tot) printf "  %-45s %8.2f ms  (%d calls)\n", c, tot[p, c] * 1000, cnt[p, c]
  }
  # threads (no execve of their own) are listed with their syscalls folded into "slowest" only
  printf "\nslowest syscalls:\n"
  for (k = 0; k < 12; k++) {
    best = 0; bi = 0
    for (i = 1; i <= ns; i++) if (!(i in used) && slowd[i] > best) { best = slowd[i]; bi = i }
    if (bi == 0) break
    used[bi] = 1; print "  " slow[bi]
  }
}
