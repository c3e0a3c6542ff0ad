#!/usr/bin/env bash
# Chromium prints the book's PDF and opens its pages for the checks. When it is missing, install
# Debian's package the way CI does, as root or with sudo that needs no password; when that is not
# possible, say so in one line and go on (the HTML needs no browser). $CHROMIUM names the browser
# to use; CHROMIUM=none hides every browser (CI builds the book that way once).
set -u
if [ -n "${CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "note: Chromium is missing and installing it needs root: sudo apt-get install -y chromium (it prints the PDF)"
    exit 0
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: Chromium is missing and there is no apt-get here: install Chromium by hand (it prints the PDF)"
  exit 0
fi
echo "installing Chromium (Debian's chromium package; it prints the PDF)"
if ! { $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; }; then
  echo "note: installing Chromium failed: sudo apt-get install -y chromium (it prints the PDF)"
fi
exit 0
