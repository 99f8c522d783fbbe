#!/bin/sh
# Stops skiff and everything it runs on this machine, as k3s-killall.sh
# does: the units, the containers of skiff's containerd namespace (by the
# PIDs of their runc shims), the pods' pause processes, the private
# containerd, the pods' network namespaces, the pod network's devices and
# nftables table.
set -u
[ "$(id -u)" -eq 0 ] || { echo "skiff-killall.sh: run as root" >&2; exit 1; }
DATA="${SKIFF_DATA_DIR:-/var/lib/skiff}"

if [ -d /run/systemd/system ]; then
  systemctl stop skiff-server.service skiff-agent.service 2>/dev/null || true
fi
# Container processes: everything in skiff's cgroups (cgroupsPath
# /skiff/<pod-uid>/<container>, under any v1 controller or the v2 root).
for procs in $(find /sys/fs/cgroup -path '*/skiff/*' -name cgroup.procs 2>/dev/null); do
  while read -r pid; do
    kill -9 "$pid" 2>/dev/null || true
  done < "$procs"
done
# runc shims of skiff's namespace ("-namespace skiff" on their command line),
# and the pause processes of pods sharing a PID namespace ("skiff-pause UID").
for dir in /proc/[0-9]*; do
  cmd="$(tr '\0' ' ' < "$dir/cmdline" 2>/dev/null)" || continue
  case "$cmd" in
    *containerd-shim-runc-v2*" -namespace skiff "*) kill -9 "${dir#/proc/}" 2>/dev/null || true ;;
    "skiff-pause "*) kill -9 "${dir#/proc/}" 2>/dev/null || true ;;
  esac
done
# The private containerd the agent started.
for pidfile in "$DATA"/agent/containerd/containerd.pid "$DATA"/containerd/containerd.pid; do
  [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
done
# Pod network namespaces and everything mounted under the data dir.
grep " $DATA/" /proc/self/mountinfo 2>/dev/null | awk '{print $5}' | sort -r | while read -r m; do
  umount -l "$m" 2>/dev/null || true
done
# runc's state of the killed containers.
rm -rf /run/containerd/runc/skiff
# The emptied container cgroups.
find /sys/fs/cgroup -depth -type d \( -path '*/skiff/*' -o -name skiff \) -exec rmdir {} \; 2>/dev/null || true
if command -v ip >/dev/null 2>&1; then
  ip link del skiff.1 2>/dev/null || true
  ip link del skiff0 2>/dev/null || true
fi
if command -v nft >/dev/null 2>&1; then
  nft delete table ip skiff 2>/dev/null || true
fi
echo "skiff-killall.sh: skiff stopped"
