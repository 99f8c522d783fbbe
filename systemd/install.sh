#!/bin/sh
# Installs skiff the way k3s installs itself:
#
#   sudo sh install.sh                                   # a server (master + agent)
#   sudo INSTALL_SKIFF_EXEC="agent --server 192.168.1.10:6443 --token K10..." sh install.sh
#   sudo SKIFF_SERVER=192.168.1.10:6443 SKIFF_TOKEN=K10... sh install.sh   # the same agent
#
# It copies the binary and checks the machine with `skiff check-config`,
# stopping with its findings if anything fails. Then it writes the unit and
# its env file, installs skiff-uninstall.sh and skiff-killall.sh, and enables
# and starts the unit. On a machine without systemd it says so and prints
# how to run skiff by hand.
#
# INSTALL_SKIFF_BINARY   the skiff binary to install (default: the release
#                        build next to this script, else `skiff` on PATH)
# INSTALL_SKIFF_BIN_DIR  where it goes (default /usr/local/bin)
# INSTALL_SKIFF_ROOT     a prefix for every path (for tests; default none)
# SKIFF_SKIP_CHECK=1     install even if `skiff check-config` fails
set -eu

ROOT="${INSTALL_SKIFF_ROOT:-}"
BIN_DIR="${INSTALL_SKIFF_BIN_DIR:-/usr/local/bin}"
HERE="$(cd "$(dirname "$0")" && pwd)"

fatal() { echo "install.sh: $*" >&2; exit 1; }
info() { echo "install.sh: $*"; }
# The value given to flag $1 in ARGS (--flag VALUE or --flag=VALUE), if any.
arg_value() { printf '%s\n' " $ARGS " | sed -n "s/.* $1[= ]\([^ ]*\) .*/\1/p"; }

EXEC="${INSTALL_SKIFF_EXEC:-}"
if [ -z "$EXEC" ]; then
  if [ -n "${SKIFF_SERVER:-}" ]; then EXEC="agent"; else EXEC="server"; fi
fi
KIND="${EXEC%% *}"
ARGS=""
[ "$EXEC" != "$KIND" ] && ARGS="${EXEC#* }"
case "$KIND" in
  server|agent) ;;
  *) fatal "INSTALL_SKIFF_EXEC must start with server or agent, not '$KIND'" ;;
esac
if [ "$KIND" = agent ] && [ -n "${SKIFF_SERVER:-}" ]; then
  ARGS="--server $SKIFF_SERVER $ARGS"
fi
if [ "$KIND" = agent ]; then
  case " $ARGS " in *" --server "*|*" --server="*) ;; *) fatal "an agent needs --server HOST:PORT (or SKIFF_SERVER)";; esac
  # Until it has its certificate, an agent joins with a token.
  if [ -z "${SKIFF_TOKEN:-}" ] && [ ! -f "$ROOT/var/lib/skiff/agent/tls/node.crt" ]; then
    case " $ARGS " in *" --token "*|*" --token="*) ;; *) fatal "an agent needs a join token: --token K10... (or SKIFF_TOKEN); make one on the server with: skiff token create --ttl 24h";; esac
  fi
fi

BINARY="${INSTALL_SKIFF_BINARY:-}"
if [ -z "$BINARY" ]; then
  if [ -x "$HERE/../target/release/skiff" ]; then BINARY="$HERE/../target/release/skiff"
  elif command -v skiff >/dev/null 2>&1; then BINARY="$(command -v skiff)"
  else fatal "no skiff binary: build it (cargo build --release -p skiff-cli) or set INSTALL_SKIFF_BINARY"
  fi
fi
[ -x "$BINARY" ] || fatal "$BINARY is not an executable"
"$BINARY" version >/dev/null 2>&1 || fatal "$BINARY does not run on this machine"

if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
  fatal "run as root (sudo sh install.sh)"
fi

mkdir -p "$ROOT$BIN_DIR" "$ROOT/etc/skiff" "$ROOT/etc/systemd/system"
install -m 0755 "$BINARY" "$ROOT$BIN_DIR/skiff"

# Check the machine before anything runs on it, as k3s check-config does.
if [ "${SKIFF_SKIP_CHECK:-}" = 1 ]; then
  info "SKIFF_SKIP_CHECK=1: not checking this machine"
else
  DATA_DIR="$(arg_value --data-dir)"
  if [ -z "$DATA_DIR" ]; then
    if [ "$KIND" = agent ]; then DATA_DIR=/var/lib/skiff/agent; else DATA_DIR=/var/lib/skiff; fi
  fi
  set -- --data-dir "$ROOT$DATA_DIR"
  SOCKET="$(arg_value --containerd-socket)"
  [ -n "$SOCKET" ] && set -- "$@" --containerd-socket "$SOCKET"
  info "checking this machine: $BIN_DIR/skiff check-config $*"
  if ! "$ROOT$BIN_DIR/skiff" check-config "$@"; then
    fatal "this machine is not ready for skiff: each fail line above says why and what to do; run '$BIN_DIR/skiff check-config' again once fixed, or set SKIFF_SKIP_CHECK=1 to install anyway"
  fi
fi
install -m 0755 "$HERE/skiff-uninstall.sh" "$ROOT$BIN_DIR/skiff-uninstall.sh"
install -m 0755 "$HERE/skiff-killall.sh" "$ROOT$BIN_DIR/skiff-killall.sh"
UNIT="skiff-$KIND.service"
sed "s|/usr/local/bin/skiff|$BIN_DIR/skiff|" "$HERE/$UNIT" > "$ROOT/etc/systemd/system/$UNIT"
chmod 0644 "$ROOT/etc/systemd/system/$UNIT"
ENV_FILE="$ROOT/etc/skiff/skiff-$KIND.env"
umask 077
{
  echo "# Written by install.sh. The unit passes SKIFF_ARGS to 'skiff $KIND'."
  echo "SKIFF_ARGS=\"$ARGS\""
  [ -n "${SKIFF_TOKEN:-}" ] && echo "SKIFF_TOKEN=\"$SKIFF_TOKEN\""
  true
} > "$ENV_FILE"
chmod 0600 "$ENV_FILE"
info "installed $ROOT$BIN_DIR/skiff, $ROOT/etc/systemd/system/$UNIT and $ENV_FILE"

# How agents join a server: with a token that expires, never the server
# token (which lets a machine join as a master, for good).
server_next_steps() {
  addr="$(ip -4 -o route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')"
  [ -n "$addr" ] || addr="<this machine's address>"
  info "admin credential: /etc/skiff/admin.conf (skiff ctl uses it)"
  info "to add an agent, make a join token that expires:  $BIN_DIR/skiff token create --ttl 24h"
  info "then on the agent's machine:  sudo SKIFF_SERVER=$addr:6443 SKIFF_TOKEN=<that token> sh install.sh"
}

if [ -n "$ROOT" ]; then
  info "installed under $ROOT; nothing was started."
  info "run skiff by hand:  $BIN_DIR/skiff $KIND $ARGS"
  if [ "$KIND" = server ]; then server_next_steps; fi
elif [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if [ "$KIND" = agent ]; then
    info "starting $UNIT: it joins the cluster, and gives up after --join-timeout (5 min) if it cannot"
  fi
  if ! systemctl enable --now "$UNIT"; then
    fatal "$UNIT did not start; see why with: journalctl -u $UNIT"
  fi
  info "started $UNIT; see it with: systemctl status $UNIT"
  if [ "$KIND" = server ]; then server_next_steps; fi
else
  info "systemd is not running here, so nothing was started."
  info "run skiff by hand:  $BIN_DIR/skiff $KIND $ARGS"
  if [ "$KIND" = server ]; then server_next_steps; fi
fi
