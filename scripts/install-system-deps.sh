#!/usr/bin/env bash
# Installs the Debian packages napari needs to render under a virtual display (Xvfb + Mesa's
# software OpenGL + the libraries of Qt 6's xcb platform plugin, which the PyQt6-Qt6 wheel does not
# bundle: libxcb-cursor0 and the other libxcb-*, libxkbcommon-x11-0, libglib2.0-0, libegl1 ...).
# Does nothing when they are present; needs root otherwise.
set -euo pipefail
PKGS="xvfb xauth libgl1 libglx-mesa0 libgl1-mesa-dri libegl1 libxkbcommon0 libxkbcommon-x11-0
libxcb1 libx11-xcb1 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
libxcb-render0 libxcb-render-util0 libxcb-shape0 libxcb-shm0 libxcb-sync1 libxcb-util1 libxcb-xfixes0
libxcb-xinerama0 libxcb-xkb1 libglib2.0-0 libdbus-1-3 libfontconfig1 libfreetype6 libxrender1 libxi6
x11-utils"
installed() {  # Debian 13 / Ubuntu 24.04 renamed some libraries with a t64 suffix (libglib2.0-0t64)
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" ||
    dpkg-query -W -f='${Status}' "${1}t64" 2>/dev/null | grep -q "install ok installed"
}
missing=""
for p in $PKGS; do
  installed "$p" || missing="$missing $p"
done
if [ -z "$missing" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: not a Debian/Ubuntu machine; please install the equivalents of:$missing" >&2
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "install-system-deps: missing Debian packages:$missing" >&2
  echo "  run: sudo apt-get install -y$missing" >&2
  exit 1
fi
echo "install-system-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
