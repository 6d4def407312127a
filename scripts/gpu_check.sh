#!/usr/bin/env bash
# What runs on a GPU, in one short script: `python -m aigw_server.textgen` supervising the tiny local model on vLLM
# (ENGINE=vllm, the default: VLLM_PYTHON must have vLLM's CUDA build; vLLM's CPU build stays on the CPU) or on
# transformers serve (ENGINE=transformers, device auto = CUDA when present); tokens/s through Generate and
# StreamGenerate; with vLLM, sleep levels 1 and 2 and textgen's wake sequences (the greedy answer after each wake
# must equal the one before: level 2 discards the weights, so only a real reload gives it back); and, when
# DEEPSEEK_OCR_PATH holds DeepSeek-OCR's weights (the GPU host may have no network), the prompt tokens vLLM
# counts per resolution mode, to compare with docs/ocr.md.
# Usage: scripts/gpu_check.sh [OUT_JSON]
# env: PYTHON (.venv/bin/python), ENGINE (vllm), VLLM_PYTHON (.venv-vllm/bin/python), MAX_TOKENS (400), RUNS (5),
#      DEEPSEEK_OCR_PATH (unset: skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python} ENGINE=${ENGINE:-vllm} MAX_TOKENS=${MAX_TOKENS:-400} RUNS=${RUNS:-5}
VLLM_PYTHON=${VLLM_PYTHON:-.venv-vllm/bin/python} DEEPSEEK_OCR_PATH=${DEEPSEEK_OCR_PATH:-}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PYTHONPATH="$PWD:$PWD/gen"
WORK=$(mktemp -d) TEXTGEN_PID=
trap '[[ -n "$TEXTGEN_PID" ]] && kill "$TEXTGEN_PID" 2>/dev/null; sleep 2; rm -rf "$WORK"' EXIT

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda available:", torch.cuda.is_available())'
"$PYTHON" tools/make_tiny_model.py "$WORK/model"
PORTS=$("$PYTHON" -c 'import socket as s; a=[s.socket() for _ in "ab"]; [x.bind(("127.0.0.1",0)) for x in a]; print(*[x.getsockname()[1] for x in a])')
read -r GRPC_PORT SERVER_PORT <<<"$PORTS"
cat >"$WORK/config.yaml" <<EOF
services: {textgen: {metrics_port: 0}}
logging: {level: WARNING}
models: {tiny-chat: {path: $WORK/model, default_max_tokens: $MAX_TOKENS}}
backends:
  - {name: gpu-check, kind: textgen, engine: $ENGINE, address: "127.0.0.1:$GRPC_PORT", port: $SERVER_PORT,
     models: [tiny-chat], initial_model: tiny-chat, capacity: 8, gpu_memory_utilization: 0.3,
     engine_python: "$([[ $ENGINE == vllm ]] && realpath "$VLLM_PYTHON")", sleep_mode: $([[ $ENGINE == vllm ]] && echo true || echo false)}
EOF
AIGW_CONFIG="$WORK/config.yaml" "$PYTHON" -m aigw_server.textgen >"$WORK/textgen.log" 2>&1 &
TEXTGEN_PID=$!

"$PYTHON" - "127.0.0.1:$GRPC_PORT" "$TEXTGEN_PID" "$RUNS" "${1:-}" "$WORK/textgen.log" <<'EOF'
import json, statistics, subprocess, sys, time
import grpc, psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc
from aigw.backend.v1 import backend_pb2, backend_pb2_grpc
from aigw.common.v1 import common_pb2
from aigw.textgen.v1 import textgen_pb2, textgen_pb2_grpc
address, pid, runs, out_json, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
channel = grpc.insecure_channel(address)
health, textgen = health_pb2_grpc.HealthStub(channel), textgen_pb2_grpc.TextgenServiceStub(channel)
lifecycle = backend_pb2_grpc.BackendServiceStub(channel)
start = time.monotonic()
while True:
    try:
        if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
            break
    except grpc.RpcError:
        pass
    if time.monotonic() - start > 600 or not psutil.pid_exists(pid):
        sys.exit("textgen never became SERVING:\n" + open(log).read()[-4000:])
    time.sleep(0.5)
chat = common_pb2.ChatJob(messages=[common_pb2.ChatMessage(role="user", content="Hello! What is a token?")])
res = {"startup_s": round(time.monotonic() - start, 2), "unary_tok_s": [], "stream_tok_s": [], "ttft_s": []}
textgen.Generate(textgen_pb2.GenerateRequest(model="tiny-chat", chat=chat), timeout=300)  # warm-up
for _ in range(runs):
    t = time.perf_counter()
    usage = textgen.Generate(textgen_pb2.GenerateRequest(model="tiny-chat", chat=chat), timeout=300).result.usage
    res["unary_tok_s"].append(usage.completion_tokens / (time.perf_counter() - t))
for _ in range(runs):
    t, ttft = time.perf_counter(), None
    for chunk in textgen.StreamGenerate(textgen_pb2.StreamGenerateRequest(model="tiny-chat", chat=chat), timeout=300):
        ttft = ttft or (chunk.delta and time.perf_counter() - t)
    res["stream_tok_s"].append(chunk.usage.completion_tokens / (time.perf_counter() - t))
    res["ttft_s"].append(ttft)
status = lifecycle.GetStatus(backend_pb2.GetStatusRequest(), timeout=5).status
servers = {p.pid for p in psutil.Process(pid).children(recursive=True)}
try:
    apps = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                          capture_output=True, text=True, timeout=20).stdout.splitlines()
    res["gpu_mem_mib"] = sum(int(line.split(",")[1]) for line in apps if int(line.split(",")[0]) in servers) or None
except (OSError, subprocess.SubprocessError, ValueError):
    res["gpu_mem_mib"] = None
res.update(on_gpu=res["gpu_mem_mib"] is not None, engine=status.engine, state=common_pb2.BackendState.Name(status.state))
if status.engine == "vllm":
    greedy = common_pb2.ChatJob(messages=chat.messages, params=common_pb2.GenerationParams(max_tokens=32, temperature=0.0))
    def answer() -> str:
        return textgen.Generate(textgen_pb2.GenerateRequest(model="tiny-chat", chat=greedy), timeout=300).result.message.content
    before, res["sleep"] = answer(), {}
    for level in (1, 2):
        t = time.perf_counter()
        lifecycle.SleepModel(backend_pb2.SleepModelRequest(level=level), timeout=300)
        slept = time.perf_counter() - t
        lifecycle.WakeModel(backend_pb2.WakeModelRequest(), timeout=300)
        res["sleep"][f"level_{level}"] = {"sleep_s": round(slept, 2), "wake_s": round(time.perf_counter() - t - slept, 2),
                                          "same_answer_after_wake": answer() == before}
for key in ("unary_tok_s", "stream_tok_s", "ttft_s"):
    res[key] = [round(v, 3) for v in res[key]]
    res[key + "_median"] = round(statistics.median(res[key]), 3)
print(json.dumps(res, indent=2))
if out_json:
    open(out_json, "w").write(json.dumps(res, indent=2) + "\n")
EOF

[[ -z "$DEEPSEEK_OCR_PATH" ]] && { echo "deepseek-ocr: skipped (set DEEPSEEK_OCR_PATH to its weights)"; exit 0; }
# DeepSeek-OCR on vLLM with the service's own recipe flags; one blank A4 page per mode, sized as the service
# sends it; vLLM's prompt_tokens include the vision tokens that docs/ocr.md tabulates (plus the prompt's text).
OCR_PORT=$("$PYTHON" -c 'import socket as s; x=s.socket(); x.bind(("127.0.0.1",0)); print(x.getsockname()[1])')
"$PYTHON" - "$DEEPSEEK_OCR_PATH" "$OCR_PORT" "$(realpath "$VLLM_PYTHON")" <<'EOF'
import subprocess, sys, time
import httpx
from PIL import Image
from aigw_server.runtime.config import BackendConfig, ModelConfig
from aigw_server.ocr.deepseek import chat_request, data_url, server_command
from aigw_server.ocr.resolution import Mode, deepseek_render
from aigw_server.ocr.results import OutputFormat
path, port, vllm_python = sys.argv[1], int(sys.argv[2]), sys.argv[3]
backend = BackendConfig(name="gpu-check-ocr", kind="ocr", engine="deepseek-ocr", port=port, gpu_memory_utilization=0.3)
argv = server_command(backend, "deepseek-ocr", ModelConfig(kind="ocr", path=path, served_name="deepseek-ocr"))
server = subprocess.Popen([vllm_python, "-m", "vllm.entrypoints.launchers.api_server.entry", "--model", *argv[2:]])
try:
    start = time.monotonic()
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() - start > 900 or server.poll() is not None:
            sys.exit("DeepSeek-OCR did not start")
        time.sleep(2)
    for mode in Mode:
        side = deepseek_render(mode).max_long_side
        page = Image.new("RGB", (side * 1358 // 1920, side), "white")
        body = chat_request("deepseek-ocr", data_url(page), OutputFormat.TEXT) | {"max_tokens": 4}
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=300).json()
        print(f"deepseek-ocr {mode.value}: page {page.size}, prompt_tokens {reply['usage']['prompt_tokens']}")
finally:
    server.terminate()
    server.wait(60)
EOF
