#!/usr/bin/env bash
# The browser tests drive Debian's Chromium through Playwright (never a browser Playwright downloads itself).
# Installs it with apt-get when /usr/bin/chromium is missing: as root, or through sudo. Part of the README's
# test command, so a fresh machine needs nothing else.
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
if [[ $(id -u) -eq 0 ]]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "error: the browser tests need Chromium at /usr/bin/chromium; install Debian's package (apt-get install" \
       "chromium) as root, then run the tests again." >&2
  exit 1
fi
echo "installing Debian's chromium for the browser tests (apt-get; a minute or two)..." >&2
"${sudo[@]}" apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q chromium >/dev/null
[[ -x /usr/bin/chromium ]] || { echo "error: apt-get finished but /usr/bin/chromium is missing." >&2; exit 1; }
