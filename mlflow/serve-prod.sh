#!/usr/bin/env bash
# Production MLflow tracking server + model registry: a database backend (PostgreSQL or MySQL) and S3
# artifacts, proxied by the server so that pipeline pods need MLflow's URL only (no S3 keys).
#
# Required environment (from a secret manager / Kubernetes secret, never from git):
#   MLFLOW_BACKEND_STORE_URI   e.g. postgresql+psycopg2://mlflow:<password>@db.internal:5432/mlflow
#   MLFLOW_ARTIFACTS_DESTINATION  e.g. s3://company-mlflow/tru
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (or an IAM role); MLFLOW_S3_ENDPOINT_URL for non-AWS S3
# Optional: HOST (0.0.0.0), PORT (5000), WORKERS (4), ALLOWED_HOSTS (the Service / Ingress names; the
# server's security middleware accepts localhost only by default), CORS_ORIGINS.
#
# The first start creates the schema; after an MLflow upgrade run `mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"`
# once (with a backup) before starting the new version.
set -euo pipefail
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI (postgresql+psycopg2://user:pass@host:5432/db)}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION (s3://bucket/prefix)}"
case "$MLFLOW_BACKEND_STORE_URI" in
  sqlite:*) echo "error: production needs a database server, not sqlite (use serve-local.sh)" >&2; exit 2 ;;
esac
case "$MLFLOW_ARTIFACTS_DESTINATION" in
  s3://*) : ;;
  *) echo "error: MLFLOW_ARTIFACTS_DESTINATION must be s3://bucket/prefix" >&2; exit 2 ;;
esac
export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"
args=(
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI"
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION"
  --host "${HOST:-0.0.0.0}" --port "${PORT:-5000}" --workers "${WORKERS:-4}"
)
[[ -n "${ALLOWED_HOSTS:-}" ]] && args+=(--allowed-hosts "$ALLOWED_HOSTS")
[[ -n "${CORS_ORIGINS:-}" ]] && args+=(--cors-allowed-origins "$CORS_ORIGINS")
exec mlflow server "${args[@]}"
