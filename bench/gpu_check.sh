#!/usr/bin/env bash
# The cuda path end to end on a machine with an NVIDIA GPU, in one go:
#   dtf detect -> a Redis broker on loopback -> dtf coordinator -> a real dtf worker (torch,
#   consuming dtf.cpu and dtf.cuda) -> a real-model suite at fp32/fp16/bf16 with parity
#   against cpu/fp32 -> results as JSON and the four reports.
# Usage: bench/gpu_check.sh OUTDIR [SUITE]   (REDIS_SERVER names the redis-server binary)
# Prints one JSON line per test (id, status, parity verdict and error, latency, memory).
set -uo pipefail
out=${1:?usage: bench/gpu_check.sh OUTDIR [SUITE]}
suite=${2:-examples/models.yaml}
mkdir -p "$out"
dtf() { python3 -m dtf "$@"; }  # foreground use; background jobs call python3 directly so $! is the process

dtf detect --json > "$out/detect.json" || echo "detect failed" >&2
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${REDIS_SERVER:-redis-server}" --port "$port" --bind 127.0.0.1 --save '' --appendonly no > "$out/redis.log" 2>&1 &
redis_pid=$!
export DTF_BROKER_URL="redis://127.0.0.1:$port/0"
sleep 1
python3 -m dtf coordinator --db "$out/dtf.duckdb" > "$out/coordinator.log" 2>&1 &
coordinator_pid=$!
python3 -m dtf worker --concurrency "${CONCURRENCY:-4}" > "$out/worker.log" 2>&1 &
worker_pid=$!

dtf submit "$suite" --wait --timeout "${TIMEOUT:-420}" --format json --output-dir "$out/reports" > "$out/results.json"
rc=$?
echo "submit exit code: $rc"
python3 - "$out/results.json" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[text.index("{"):]) if "{" in text else {}
for r in doc.get("tests", []):
    m = r.get("metrics") or {}
    p = r.get("parity") or m.get("parity") or {}
    print(json.dumps({"test": r.get("test_id"), "status": r.get("status"), "parity": p.get("verdict"),
                      "max_rel": p.get("max_rel"), "p50_ms": m.get("latency_p50_ms"),
                      "tokens_per_s": m.get("tokens_per_s"), "peak_device_mb": m.get("peak_device_memory_mb"),
                      "estimate_gb": m.get("memory_estimate_gb"), "load_s": m.get("load_time_s"),
                      "device": (m.get("provenance") or {}).get("device_name"),
                      "error": (r.get("error") or r.get("reason") or "")[:160]}))
PY
kill "$worker_pid" "$coordinator_pid" 2>/dev/null
wait "$worker_pid" "$coordinator_pid" 2>/dev/null
kill "$redis_pid" 2>/dev/null
wait 2>/dev/null
exit $rc
