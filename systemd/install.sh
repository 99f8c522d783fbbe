#!/bin/sh
# Installs skiff, or upgrades it, the way k3s installs itself. From a
# release, piped into sh (it needs no other file):
#
#   curl -sfL https://…/install.sh | sudo INSTALL_SKIFF_VERSION=v0.2.0 sh -    # a server
#   curl -sfL https://…/install.sh | sudo INSTALL_SKIFF_VERSION=v0.2.0 \
#       SKIFF_SERVER=192.168.1.10:6443 SKIFF_TOKEN=K10... sh -               # an agent
#
# or from a checkout (after cargo build --release -p skiff-cli) or with a
# binary copied to the machine:
#
#   sudo sh systemd/install.sh                           # a server (master + agent)
#   sudo INSTALL_SKIFF_BINARY=./skiff SKIFF_SERVER=192.168.1.10:6443 SKIFF_TOKEN=K10... sh install.sh
#   sudo INSTALL_SKIFF_EXEC="agent --server 192.168.1.10:6443 --node-name pi-2" \
#       SKIFF_TOKEN=K10... sh install.sh
#
# It checks the machine with `skiff check-config`, run by the binary it is
# about to install, and stops with its findings, changing nothing, if
# anything fails. Then it installs the binary, the unit, its env file,
# skiff-uninstall.sh and skiff-killall.sh, and enables and (re)starts the
# unit. On a machine without systemd it says so and prints how to run
# skiff by hand.
#
# Run again, it upgrades: the binary is replaced and the unit restarted
# (containers keep running: the units stop only skiff's own process). The
# earlier settings stay: the env file /etc/skiff/skiff-<kind>.env is
# rewritten only when new arguments or a new token are given (keeping any
# lines added to it by hand), /etc/skiff/config.yaml is never written, and
# an installed agent stays an agent unless INSTALL_SKIFF_EXEC says
# otherwise.
#
# Where the binary comes from, the first of:
# INSTALL_SKIFF_BINARY    a skiff binary on this machine
# INSTALL_SKIFF_URL       a URL to download it from; its checksum, if there
#                         is one at <URL>.sha256, must match
# INSTALL_SKIFF_VERSION   a release (v0.2.0, or latest): skiff-<arch>
#                         (amd64, arm64) from INSTALL_SKIFF_RELEASES,
#                         laid out as GitHub releases are (default
#                         https://example.invalid/skiff/releases, the
#                         workspace's repository), checked against
#                         skiff-<arch>.sha256 if the release has one
# (none of these)         the release build of the checkout this script is
#                         in (when run as a file), else `skiff` on PATH
#
# INSTALL_SKIFF_EXEC      "server [FLAGS]" (the default) or "agent [FLAGS]"
# SKIFF_SERVER            an agent's master, HOST:PORT (installs an agent)
# SKIFF_TOKEN             an agent's join token (skiff token create), or the
#                         server token of a server that joins with --join
# INSTALL_SKIFF_BIN_DIR   where the binary goes (default /usr/local/bin)
# INSTALL_SKIFF_ROOT      a prefix for every path (for tests; default none)
# SKIFF_SKIP_CHECK=1      install even if `skiff check-config` fails
#
# The units, skiff-uninstall.sh and skiff-killall.sh are written from the
# copies below, which are the files beside this script in the repository
# (e2e/tests/systemd_units.rs checks that they are the same).
set -eu

fatal() { echo "install.sh: $*" >&2; exit 1; }
info() { echo "install.sh: $*"; }

# The value given to flag $1 in ARGS (--flag VALUE or --flag=VALUE), if any.
arg_value() { printf '%s\n' " $ARGS " | sed -n "s/.* $1[= ]\([^ ]*\) .*/\1/p"; }

# The value of variable $1 in the env file of an earlier install, if any.
earlier() {
  if [ -f "$ENV_FILE" ]; then
    sed -n "s/^$1=\"\(.*\)\"\$/\1/p" "$ENV_FILE" | tail -n 1
  fi
}

# Downloads URL $1 to file $2.
download() {
  if command -v curl >/dev/null 2>&1; then
    curl -sfL -o "$2" "$1" </dev/null
  elif command -v wget >/dev/null 2>&1; then
    wget -q -O "$2" "$1" </dev/null
  else
    fatal "neither curl nor wget is installed, so $1 cannot be downloaded"
  fi
}

# The release name of this machine's architecture.
release_arch() {
  case "$(uname -m)" in
    x86_64|amd64) echo amd64 ;;
    aarch64|arm64) echo arm64 ;;
    *) fatal "skiff releases are built for amd64 and arm64, not $(uname -m): build skiff here and set INSTALL_SKIFF_BINARY" ;;
  esac
}

# Downloads the binary from URL $1 into $TMP, checked against $1.sha256
# when that exists; sets BINARY.
fetch_binary() {
  info "downloading $1"
  download "$1" "$TMP/skiff" || fatal "could not download $1"
  if download "$1.sha256" "$TMP/skiff.sha256" 2>/dev/null; then
    want="$(sed -n 's/^\([0-9a-fA-F]\{64\}\).*/\1/p' "$TMP/skiff.sha256" | head -n 1 | tr 'A-F' 'a-f')"
    [ -n "$want" ] || fatal "$1.sha256 holds no SHA-256 checksum; nothing was installed"
    command -v sha256sum >/dev/null 2>&1 || fatal "sha256sum is needed to check $1 against $1.sha256"
    got="$(sha256sum "$TMP/skiff" | cut -d ' ' -f 1)"
    if [ "$got" != "$want" ]; then
      fatal "$1 does not match its checksum: $1.sha256 says $want, the download is $got; nothing was installed"
    fi
    info "checksum verified ($1.sha256)"
  else
    info "no checksum at $1.sha256: the download is not verified"
  fi
  chmod 0755 "$TMP/skiff"
  BINARY="$TMP/skiff"
}

# The unit for `skiff server` (systemd/skiff-server.service).
server_unit() {
  cat <<'EOF'
# skiff server: a master and an agent on this machine.
# Installed by systemd/install.sh; arguments come from the env file.
[Unit]
Description=skiff server (master and agent)
Documentation=https://example.invalid/skiff
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
NotifyAccess=main
EnvironmentFile=-/etc/skiff/skiff-server.env
ExecStart=/usr/local/bin/skiff server $SKIFF_ARGS
# Containers belong to their runc shims: stopping or restarting skiff
# must not kill them, so only the main process is signalled, and skiff
# manages the cgroups below its own.
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
# The server's agent gives up with an error when it cannot register
# within --join-timeout (5 min); systemd waits a little longer than that.
TimeoutStartSec=6min
# Longer than skiff's own 20 s shutdown grace.
TimeoutStopSec=30s
Restart=always
RestartSec=5s

[Install]
WantedBy=multi-user.target
EOF
}

# The unit for `skiff agent` (systemd/skiff-agent.service).
agent_unit() {
  cat <<'EOF'
# skiff agent: runs this machine's pods for the cluster.
# Installed by systemd/install.sh; the server and token come from the env file.
[Unit]
Description=skiff agent
Documentation=https://example.invalid/skiff
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
NotifyAccess=main
EnvironmentFile=-/etc/skiff/skiff-agent.env
ExecStart=/usr/local/bin/skiff agent $SKIFF_ARGS
# Containers belong to their runc shims: stopping or restarting skiff
# must not kill them, so only the main process is signalled.
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
# skiff reports its progress (systemctl status shows it) and gives up
# with an error when it cannot join and register within --join-timeout
# (5 min); systemd waits a little longer than that.
TimeoutStartSec=6min
# Longer than skiff's own 20 s shutdown grace.
TimeoutStopSec=30s
Restart=always
RestartSec=5s

[Install]
WantedBy=multi-user.target
EOF
}

# systemd/skiff-uninstall.sh
uninstall_script() {
  cat <<'EOF'
#!/bin/sh
# Removes what install.sh installed: stops skiff and its containers
# (skiff-killall.sh), disables the units, deletes the binary, units, env
# files and skiff's data. INSTALL_SKIFF_ROOT and INSTALL_SKIFF_BIN_DIR as
# for install.sh.
set -eu
ROOT="${INSTALL_SKIFF_ROOT:-}"
BIN_DIR="${INSTALL_SKIFF_BIN_DIR:-/usr/local/bin}"

if [ -z "$ROOT" ]; then
  [ "$(id -u)" -eq 0 ] || { echo "skiff-uninstall.sh: run as root" >&2; exit 1; }
  if [ -x "$BIN_DIR/skiff-killall.sh" ]; then "$BIN_DIR/skiff-killall.sh" || true; fi
  if [ -d /run/systemd/system ]; then
    for unit in skiff-server.service skiff-agent.service; do
      systemctl disable "$unit" >/dev/null 2>&1 || true
    done
    systemctl daemon-reload || true
  fi
fi
rm -f "$ROOT/etc/systemd/system/skiff-server.service" "$ROOT/etc/systemd/system/skiff-agent.service"
rm -f "$ROOT/etc/skiff/skiff-server.env" "$ROOT/etc/skiff/skiff-agent.env"
rmdir "$ROOT/etc/skiff" 2>/dev/null || true
rm -rf "$ROOT/var/lib/skiff"
rm -f "$ROOT$BIN_DIR/skiff" "$ROOT$BIN_DIR/skiff-killall.sh" "$ROOT$BIN_DIR/skiff-uninstall.sh"
echo "skiff-uninstall.sh: skiff removed"
EOF
}

# systemd/skiff-killall.sh
killall_script() {
  cat <<'EOF'
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
EOF
}

# Writes the output of command $1 to file $2 with mode $3, by a rename, so
# a running copy (the binary, a script) is replaced, never rewritten.
write_file() {
  "$1" > "$2.new"
  chmod "$3" "$2.new"
  mv -f "$2.new" "$2"
}

# How agents join a server: with a token that expires, never the server
# token (which lets a machine join as a master, for good).
server_next_steps() {
  addr="$(ip -4 -o route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')"
  [ -n "$addr" ] || addr="<this machine's address>"
  info "admin credential: /etc/skiff/admin.conf (skiff ctl uses it)"
  info "to add an agent, make a join token that expires:  $BIN_DIR/skiff token create --ttl 24h"
  info "then on the agent's machine (install.sh as a file, or piped into sh -):  sudo SKIFF_SERVER=$addr:6443 SKIFF_TOKEN=<that token> sh install.sh"
}

main() {
  ROOT="${INSTALL_SKIFF_ROOT:-}"
  BIN_DIR="${INSTALL_SKIFF_BIN_DIR:-/usr/local/bin}"
  # This script's directory, when it runs as a file (not piped into sh).
  HERE=""
  case "$0" in
    *install.sh) if [ -f "$0" ]; then HERE="$(cd "$(dirname "$0")" && pwd)"; fi ;;
  esac

  EXEC="${INSTALL_SKIFF_EXEC:-}"
  if [ -z "$EXEC" ]; then
    if [ -n "${SKIFF_SERVER:-}" ]; then EXEC="agent"
    # An upgrade of an agent, told nothing new.
    elif [ -f "$ROOT/etc/skiff/skiff-agent.env" ] && [ ! -f "$ROOT/etc/skiff/skiff-server.env" ]; then EXEC="agent"
    else EXEC="server"
    fi
  fi
  KIND="${EXEC%% *}"
  ARGS=""
  if [ "$EXEC" != "$KIND" ]; then ARGS="${EXEC#* }"; fi
  case "$KIND" in
    server|agent) ;;
    *) fatal "INSTALL_SKIFF_EXEC must start with server or agent, not '$KIND'" ;;
  esac
  if [ "$KIND" = agent ] && [ -n "${SKIFF_SERVER:-}" ]; then
    ARGS="--server $SKIFF_SERVER${ARGS:+ $ARGS}"
  fi
  ENV_FILE="$ROOT/etc/skiff/skiff-$KIND.env"
  # New arguments replace the earlier ones; none given keeps them.
  NEW_ARGS="$ARGS"
  if [ -z "$ARGS" ]; then
    ARGS="$(earlier SKIFF_ARGS)"
    if [ -n "$ARGS" ]; then info "keeping the arguments of the earlier install: $ARGS"; fi
  fi
  TOKEN="${SKIFF_TOKEN:-}"
  if [ -z "$TOKEN" ]; then TOKEN="$(earlier SKIFF_TOKEN)"; fi
  if [ "$KIND" = agent ]; then
    case " $ARGS " in *" --server "*|*" --server="*) ;; *) fatal "an agent needs --server HOST:PORT (or SKIFF_SERVER)";; esac
    # Until it has its certificate, an agent joins with a token.
    if [ -z "$TOKEN" ] && [ ! -f "$ROOT/var/lib/skiff/agent/tls/node.crt" ]; then
      case " $ARGS " in *" --token "*|*" --token="*) ;; *) fatal "an agent needs a join token: --token K10... (or SKIFF_TOKEN); make one on the server with: skiff token create --ttl 24h";; esac
    fi
  fi

  BINARY="${INSTALL_SKIFF_BINARY:-}"
  TMP=""
  if [ -z "$BINARY" ] && { [ -n "${INSTALL_SKIFF_URL:-}" ] || [ -n "${INSTALL_SKIFF_VERSION:-}" ]; }; then
    TMP="$(mktemp -d)"
    trap 'rm -rf "$TMP"' EXIT
    if [ -n "${INSTALL_SKIFF_URL:-}" ]; then
      fetch_binary "$INSTALL_SKIFF_URL"
    else
      RELEASES="${INSTALL_SKIFF_RELEASES:-https://example.invalid/skiff/releases}"
      ARCH="$(release_arch)"
      if [ "$INSTALL_SKIFF_VERSION" = latest ]; then
        fetch_binary "$RELEASES/latest/download/skiff-$ARCH"
      else
        fetch_binary "$RELEASES/download/$INSTALL_SKIFF_VERSION/skiff-$ARCH"
      fi
    fi
  fi
  if [ -z "$BINARY" ]; then
    if [ -n "$HERE" ] && [ -x "$HERE/../target/release/skiff" ]; then BINARY="$HERE/../target/release/skiff"
    elif command -v skiff >/dev/null 2>&1; then BINARY="$(command -v skiff)"
    else fatal "no skiff binary: set INSTALL_SKIFF_VERSION (a release), INSTALL_SKIFF_URL or INSTALL_SKIFF_BINARY, or build it (cargo build --release -p skiff-cli)"
    fi
  fi
  [ -x "$BINARY" ] || fatal "$BINARY is not an executable"
  VERSION="$("$BINARY" version 2>/dev/null </dev/null)" || fatal "$BINARY does not run on this machine"

  if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    fatal "run as root (sudo sh install.sh)"
  fi

  # Check the machine before anything runs on it, as k3s check-config
  # does, and before anything is changed.
  if [ "${SKIFF_SKIP_CHECK:-}" = 1 ]; then
    info "SKIFF_SKIP_CHECK=1: not checking this machine"
  else
    DATA_DIR="$(arg_value --data-dir)"
    if [ -z "$DATA_DIR" ]; then
      if [ "$KIND" = agent ]; then DATA_DIR=/var/lib/skiff/agent; else DATA_DIR=/var/lib/skiff; fi
    fi
    set -- --data-dir "$ROOT$DATA_DIR"
    SOCKET="$(arg_value --containerd-socket)"
    if [ -n "$SOCKET" ]; then set -- "$@" --containerd-socket "$SOCKET"; fi
    info "checking this machine: skiff check-config $*"
    if ! "$BINARY" check-config "$@" </dev/null; then
      fatal "this machine is not ready for skiff: each fail line above says why and what to do; nothing was installed; run install.sh again once fixed, or set SKIFF_SKIP_CHECK=1 to install anyway"
    fi
  fi

  mkdir -p "$ROOT$BIN_DIR" "$ROOT/etc/skiff" "$ROOT/etc/systemd/system"
  PREVIOUS=""
  if [ -x "$ROOT$BIN_DIR/skiff" ]; then
    PREVIOUS="$("$ROOT$BIN_DIR/skiff" version 2>/dev/null </dev/null)" || PREVIOUS="an unknown skiff"
  fi
  install -m 0755 "$BINARY" "$ROOT$BIN_DIR/skiff.new"
  mv -f "$ROOT$BIN_DIR/skiff.new" "$ROOT$BIN_DIR/skiff"
  if [ -n "$PREVIOUS" ]; then
    info "replaced $PREVIOUS with $VERSION in $BIN_DIR/skiff"
  fi
  write_file uninstall_script "$ROOT$BIN_DIR/skiff-uninstall.sh" 0755
  write_file killall_script "$ROOT$BIN_DIR/skiff-killall.sh" 0755
  UNIT="skiff-$KIND.service"
  "${KIND}_unit" | sed "s|/usr/local/bin/skiff|$BIN_DIR/skiff|" > "$ROOT/etc/systemd/system/$UNIT"
  chmod 0644 "$ROOT/etc/systemd/system/$UNIT"
  umask 077
  if [ -f "$ENV_FILE" ] && [ -z "$NEW_ARGS" ] && [ -z "${SKIFF_TOKEN:-}" ]; then
    info "kept $ENV_FILE as it was"
  else
    {
      echo "# Written by install.sh. The unit passes SKIFF_ARGS to 'skiff $KIND'."
      echo "SKIFF_ARGS=\"$ARGS\""
      if [ -n "$TOKEN" ]; then echo "SKIFF_TOKEN=\"$TOKEN\""; fi
      # Settings added by hand to the earlier file stay.
      if [ -f "$ENV_FILE" ]; then
        grep -v -e '^# Written by install.sh' -e '^SKIFF_ARGS=' -e '^SKIFF_TOKEN=' "$ENV_FILE" || true
      fi
    } > "$ENV_FILE.new"
    chmod 0600 "$ENV_FILE.new"
    mv -f "$ENV_FILE.new" "$ENV_FILE"
  fi
  if [ -f "$ROOT/etc/skiff/config.yaml" ]; then
    info "left /etc/skiff/config.yaml as it is"
  fi
  info "installed $VERSION: $ROOT$BIN_DIR/skiff, $ROOT/etc/systemd/system/$UNIT and $ENV_FILE"

  if [ -n "$ROOT" ]; then
    info "installed under $ROOT; nothing was started."
    info "run skiff by hand:  $BIN_DIR/skiff $KIND $ARGS"
    if [ "$KIND" = server ] && [ -z "$PREVIOUS" ]; then server_next_steps; fi
  elif [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable "$UNIT" >/dev/null 2>&1 || fatal "could not enable $UNIT: see systemctl status $UNIT"
    if [ "$KIND" = agent ]; then
      info "starting $UNIT: it joins the cluster, and gives up after --join-timeout (5 min) if it cannot"
    fi
    # restart: a running unit (an upgrade) runs the new binary; its
    # containers keep running (KillMode=process).
    if ! systemctl restart "$UNIT"; then
      fatal "$UNIT did not start; see why with: journalctl -u $UNIT"
    fi
    info "started $UNIT; see it with: systemctl status $UNIT"
    if [ "$KIND" = server ] && [ -z "$PREVIOUS" ]; then server_next_steps; fi
  else
    info "systemd is not running here, so nothing was started."
    info "run skiff by hand:  $BIN_DIR/skiff $KIND $ARGS"
    if [ "$KIND" = server ] && [ -z "$PREVIOUS" ]; then server_next_steps; fi
  fi
}

# Everything runs from here, so a download cut short runs nothing.
main "$@"
