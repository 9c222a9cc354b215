#!/usr/bin/env bash
# Installs the test FHIR server (tests/fhir-server: Medplum's FHIR router and in-memory repository)
# exactly as package-lock.json pins it. A fast no-op when node_modules already matches the lock file.
# Needs Node.js 20.19 or later with npm; the packages come from the npm registry.
set -euo pipefail
cd "$(dirname "$0")/../tests/fhir-server"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "fhir-server-setup: node and npm are needed (Node.js 20.19 or later)" >&2
    exit 1
fi

stamp=node_modules/.cardinal-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d node_modules/@medplum/fhir-router ]; then
    echo "fhir-server-setup: node_modules is current"
    exit 0
fi

echo "fhir-server-setup: npm ci in tests/fhir-server"
npm ci --no-audit --no-fund --loglevel=error
echo "$want" > "$stamp"
