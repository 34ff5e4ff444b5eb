#!/usr/bin/env bash
# Local MLflow tracking server + model registry: sqlite backend, artifacts on disk or in S3.
#
#   mlflow/serve-local.sh                      # sqlite ./mlruns.db, artifacts ./mlartifacts, port 5000
#   PORT=5055 mlflow/serve-local.sh
#   ARTIFACTS=s3://tru-mlflow/artifacts MLFLOW_S3_ENDPOINT_URL=http://127.0.0.1:9000 \
#   AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... mlflow/serve-local.sh   # artifacts in S3 (proxied)
#
# Clients then use MLFLOW_TRACKING_URI=http://127.0.0.1:$PORT; they need no S3 credentials, the server
# proxies artifact uploads and downloads (mlflow-artifacts:/ URIs). No server at all is needed for a
# laptop run: tru uses sqlite:///<cwd>/mlruns.db directly when MLFLOW_TRACKING_URI is unset.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DB="${DB:-$here/mlruns.db}"
ARTIFACTS="${ARTIFACTS:-$here/mlartifacts}"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-5000}"
MLFLOW="${MLFLOW:-$(command -v mlflow || echo "$here/.venv/bin/mlflow")}"

export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"
case "$ARTIFACTS" in
  s3://*) : ;;                                   # credentials come from the environment, never from here
  *) mkdir -p "$ARTIFACTS" ;;
esac
mkdir -p "$(dirname "$DB")"
echo "mlflow server: backend sqlite:///$DB, artifacts $ARTIFACTS, http://$HOST:$PORT" >&2
exec "$MLFLOW" server \
  --backend-store-uri "sqlite:///$DB" \
  --artifacts-destination "$ARTIFACTS" \
  --host "$HOST" --port "$PORT" --workers 1
