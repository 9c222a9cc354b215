#!/usr/bin/env bash
# Server CPU per call for the large Synthea order-sign request under `cardinal bench` (README,
# "Performance"): starts `cardinal serve --dev` on 127.0.0.1, sends the request to each service at a
# fixed rate, and reads the server's CPU time (utime + stime, /proc/PID/stat) before and after.
#
#   cargo bench --bench large_patient      # writes target/large-patient-order-sign.json
#   cargo build --release
#   bash tools/large-patient-server-cpu.sh
#
# Settings (environment): BIN (target/release/cardinal), REQUEST (target/large-patient-order-sign.json),
# PORT (18280; the admin listener takes PORT+1), RATE (50), CONNECTIONS (4), DURATION (20s),
# SERVICES ("opioidcds-04-05 opioidcds-10-order-sign").
set -euo pipefail

BIN=${BIN:-target/release/cardinal}
REQUEST=${REQUEST:-target/large-patient-order-sign.json}
PORT=${PORT:-18280}
RATE=${RATE:-50}
CONNECTIONS=${CONNECTIONS:-4}
DURATION=${DURATION:-20s}
SERVICES=${SERVICES:-"opioidcds-04-05 opioidcds-10-order-sign"}

for file in "$BIN" "$REQUEST"; do
    if [ ! -e "$file" ]; then
        echo "large-patient-server-cpu: $file is missing (see the top of this script)" >&2
        exit 2
    fi
done

data=$(mktemp -d)
CARDINAL_DATA_DIR="$data" CARDINAL_ADMIN_LISTEN="127.0.0.1:$((PORT + 1))" \
    "$BIN" serve --dev --listen "127.0.0.1:$PORT" >"$data/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$data"' EXIT

for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$((PORT + 1))/readyz" >/dev/null 2>&1; then
        break
    fi
    sleep 0.1
done

# utime + stime of the server, in clock ticks (fields 14 and 15; the name in parentheses may hold
# spaces, so count from the closing parenthesis).
cpu_ticks() {
    sed 's/.*) //' "/proc/$server/stat" | awk '{print $12 + $13}'
}
ticks_per_second=$(getconf CLK_TCK)

printf '%s: %s bytes, %s requests/s, %s connections, %s\n' \
    "$REQUEST" "$(stat -c %s "$REQUEST")" "$RATE" "$CONNECTIONS" "$DURATION"
for service in $SERVICES; do
    # A warm-up call, so the first-call costs (value set expansion, caches) are not counted.
    "$BIN" bench --url "http://127.0.0.1:$PORT" --request "$REQUEST" --service "$service" \
        --requests 5 --connections 1 --evaluation-time 2026-11-20 --json >/dev/null
    before=$(cpu_ticks)
    report=$("$BIN" bench --url "http://127.0.0.1:$PORT" --request "$REQUEST" --service "$service" \
        --rate "$RATE" --connections "$CONNECTIONS" --duration "$DURATION" \
        --evaluation-time 2026-11-20 --json)
    after=$(cpu_ticks)
    accepted=$(printf '%s' "$report" | python3 -c 'import json, sys; print(json.load(sys.stdin)["accepted"])')
    p50=$(printf '%s' "$report" | python3 -c 'import json, sys; print(json.load(sys.stdin)["latency_ms"]["accepted"]["p50"])')
    python3 - "$service" "$before" "$after" "$ticks_per_second" "$accepted" "$p50" <<'EOF'
import sys
service, before, after, hz, accepted, p50 = sys.argv[1:]
cpu_ms = (int(after) - int(before)) * 1000 / int(hz)
calls = int(accepted)
print(f"  {service}: {calls} calls, server CPU {cpu_ms:.0f} ms, {cpu_ms / max(calls, 1):.2f} ms per call, p50 {float(p50):.2f} ms")
EOF
done
