#!/usr/bin/env bash
# Headless Chromium for the tests that render Cardinal's HTML reports (`tests/simulate.rs`):
# Debian's `chromium` package, installed when missing (needs root or passwordless sudo).
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    echo "browser: $(chromium --version 2>/dev/null || chromium-browser --version)"
    exit 0
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then
    sudo="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "browser: $(chromium --version)"
