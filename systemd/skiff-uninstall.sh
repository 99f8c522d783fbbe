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
