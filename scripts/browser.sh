#!/usr/bin/env bash
# Installs (once) the browser the console's browser tests drive: Debian's chromium and
# chromium-driver (WebDriver), from the distribution's packages.
#
#   scripts/browser.sh install      install them unless both are already there
#   scripts/browser.sh check        exit 0 when both are there
set -euo pipefail

CHROMIUM=${HERALD_CHROMIUM:-/usr/bin/chromium}
DRIVER=${HERALD_CHROMEDRIVER:-/usr/bin/chromedriver}

present() {
  [ -x "$CHROMIUM" ] && [ -x "$DRIVER" ]
}

install() {
  if present; then
    return 0
  fi
  if ! command -v apt-get >/dev/null; then
    echo "chromium and chromium-driver are missing and this machine has no apt-get;" \
      "install them (or set HERALD_CHROMIUM and HERALD_CHROMEDRIVER)" >&2
    return 1
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    sudo="sudo -n"
  fi
  echo "installing chromium and chromium-driver (Debian packages)" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y -qq chromium chromium-driver >&2
  present
}

case "${1:-}" in
  install) install ;;
  check) present ;;
  *) echo "usage: $0 install|check" >&2; exit 2 ;;
esac
