#!/usr/bin/env bash
# Serve the tiny local model with `transformers serve` on the GPU (device auto) and report tokens/s.
# Usage: scripts/gpu_check.sh [OUT_JSON]   env: PYTHON (default .venv/bin/python), DEVICE (auto),
#        PORT (18431), MAX_TOKENS (400), RUNS (5). Needs no network: HF_HUB_OFFLINE=1.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
DEVICE=${DEVICE:-auto}
PORT=${PORT:-18431}
MAX_TOKENS=${MAX_TOKENS:-400}
RUNS=${RUNS:-5}
OUT_JSON=${1:-}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 OTEL_SDK_DISABLED=true

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda available:", torch.cuda.is_available())'

"$PYTHON" tools/make_tiny_model.py "$WORK/model"
START=$(date +%s%N)
"$(dirname "$PYTHON")/transformers" serve "$WORK/model" --host 127.0.0.1 --port "$PORT" --device "$DEVICE" \
  >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 900); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "server exited:"; cat "$WORK/serve.log"; exit 1; fi
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$PORT/health" >/dev/null || { echo "server not ready:"; cat "$WORK/serve.log"; exit 1; }
STARTUP_MS=$(( ($(date +%s%N) - START) / 1000000 ))
echo "ready after ${STARTUP_MS} ms (pid $SERVER_PID)"

"$PYTHON" - "$PORT" "$WORK/model" "$MAX_TOKENS" "$RUNS" "$SERVER_PID" "$STARTUP_MS" "$DEVICE" "$OUT_JSON" <<'EOF'
import json, statistics, subprocess, sys, time
import httpx
port, model, max_tokens, runs, pid, startup_ms, device, out_json = sys.argv[1:9]
base, max_tokens, runs = f"http://127.0.0.1:{port}", int(max_tokens), int(runs)
body = {"model": model, "messages": [{"role": "user", "content": "Hello! What is a token?"}], "max_tokens": max_tokens}
res: dict = {"device_arg": device, "max_tokens": max_tokens, "startup_s": int(startup_ms) / 1000, "unary_tok_s": [], "stream_tok_s": [], "ttft_s": []}
with httpx.Client(base_url=base, timeout=300) as c:
    c.post("/v1/chat/completions", json={**body, "max_tokens": 8}).raise_for_status()  # warm-up
    for _ in range(runs):
        t = time.perf_counter(); r = c.post("/v1/chat/completions", json=body); dt = time.perf_counter() - t
        r.raise_for_status(); res["unary_tok_s"].append(r.json()["usage"]["completion_tokens"] / dt)
    for _ in range(runs):
        t = time.perf_counter(); ttft = None; last = None
        with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    last = json.loads(line[6:])
                    if ttft is None and last["choices"] and last["choices"][0]["delta"].get("content"):
                        ttft = time.perf_counter() - t
        dt = time.perf_counter() - t
        res["stream_tok_s"].append(last["usage"]["completion_tokens"] / dt); res["ttft_s"].append(ttft)
rss = [l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")]
res["server_rss_kb"] = int(rss[0].split()[1]) if rss else None
try:
    q = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                       capture_output=True, text=True, timeout=20).stdout
    res["gpu_mem_mib"] = next((int(l.split(",")[1]) for l in q.splitlines() if l.split(",")[0].strip() == pid), None)
except (OSError, subprocess.SubprocessError):
    res["gpu_mem_mib"] = None
res["on_gpu"] = res["gpu_mem_mib"] is not None
for k in ("unary_tok_s", "stream_tok_s", "ttft_s"):
    res[k + "_median"] = round(statistics.median(res[k]), 3)
    res[k] = [round(v, 3) for v in res[k]]
print(json.dumps(res, indent=2))
if out_json:
    open(out_json, "w").write(json.dumps(res, indent=2) + "\n")
EOF
grep -iE "warn|error" "$WORK/serve.log" | grep -v "GET /health" | head -20 || true
