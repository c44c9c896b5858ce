#!/usr/bin/env bash
# Debian packages the project needs beside its Python wheels. Installed only
# when running as root and when they are missing; otherwise say what is
# missing and carry on (the tests that need them skip and say why).
set -euo pipefail
PACKAGES=(tesseract-ocr-spa tesseract-ocr-eng chromium chromium-driver fonts-dejavu-core faketime prometheus)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "warning: missing Debian packages (install them as root): ${missing[*]}" >&2
fi
