#!/usr/bin/env bash
# Container health check for Dockerfile.serving. The tensorflow/serving image has bash but no curl
# or wget, so this speaks HTTP/1.0 through bash's /dev/tcp. Healthy = TF Serving's REST model status
# (GET /v1/models/<name>) lists a version in state AVAILABLE.
# Usage: healthcheck.sh [model_name] [rest_port]
set -euo pipefail
model="${1:-fashion}"
port="${2:-8501}"
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET /v1/models/%s HTTP/1.0\r\nHost: localhost\r\n\r\n' "${model}" >&3
grep -q '"state": *"AVAILABLE"' <&3
