#!/usr/bin/env bash
# A real headless browser for the page tests: Debian's chromium and chromium-driver (Selenium drives
# them; nothing is downloaded at run time). Installs them when missing and this is root with apt-get.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[browser] installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "[browser] missing ${missing[*]} and cannot install (not root or no apt-get): page tests will be skipped" >&2
fi
