#!/usr/bin/env bash
# Installs the Debian packages napari needs to render under a virtual display (Xvfb + Mesa's
# software OpenGL + Qt's xcb libraries). Does nothing when they are present; needs root otherwise.
set -euo pipefail
PKGS="xvfb xauth libgl1 libglx-mesa0 libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4
libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0
libxcb-shape0 libxcb-cursor0 libdbus-1-3 x11-utils libfontconfig1 libxrender1 libxi6"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
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
