#!/usr/bin/env bash
# MinIO doing SSE-KMS and SSE-S3 through kes, end to end (README, "Use it
# with MinIO"): kes with the README's minio policy on an fs store in a temp
# directory, MinIO wired to it on free loopback ports, a bucket, objects
# uploaded with SSE-KMS (default and named key) and SSE-S3, each read back
# byte for byte, kes restarted and everything read again. S3 calls are plain
# curl --aws-sigv4. One line per step, then "N/M steps passed"; exit 0 only
# when every step passed.
#
#   MINIO_BIN=/path/to/minio examples/minio/try.sh
#
# Needs: a MinIO server binary (MINIO_BIN, else `minio` on PATH), kes (KES_BIN,
# else `kes` on PATH, else this checkout's target/debug/kes), curl, python3.
set -uo pipefail

minio=${MINIO_BIN:-$(command -v minio || true)}
if [ -z "$minio" ] || [ ! -x "$minio" ]; then
  cat <<'MSG'
try.sh: no MinIO server binary (set MINIO_BIN, or put `minio` on PATH); nothing run.
Get one from MinIO's download site, e.g. for Linux on x86-64:
  curl -fLo minio https://dl.min.io/server/minio/release/linux-amd64/minio && chmod +x minio
  MINIO_BIN=$PWD/minio examples/minio/try.sh
MSG
  exit 0
fi
here=$(cd "$(dirname "$0")/../.." && pwd)
kes=${KES_BIN:-$(command -v kes || echo "$here/target/debug/kes")}
[ -x "$kes" ] || { echo "try.sh: no kes binary (KES_BIN, kes on PATH, or cargo build)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
passed=0; total=0
step() { # step <name> <command...>
  local name=$1; shift
  total=$((total + 1))
  if "$@" >"$work/step.log" 2>&1; then passed=$((passed + 1)); echo "ok   $name"
  else echo "FAIL $name"; sed 's/^/     /' "$work/step.log" | tail -5; fi
}
wait_for() { for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done; return 1; }

cd "$work"
# kes's own certificate, for 127.0.0.1 (not a CA: clients refuse those).
"$kes" identity new --key server.key --cert server.cert --ip 127.0.0.1 --dns localhost localhost >/dev/null
"$kes" identity new --key admin.key --cert admin.cert admin >/dev/null
"$kes" identity new --key minio.key --cert minio.cert minio >/dev/null
kes_port=$(free_port)
cat > kes.yml <<YML
address: 127.0.0.1:$kes_port
admin:
  identity: $("$kes" identity of admin.cert)
tls:
  key: server.key
  cert: server.cert
policy:
  minio:
    allow:
    - /v1/status
    - /v1/metrics
    - /v1/key/create/*
    - /v1/key/generate/*
    - /v1/key/decrypt/*
    - /v1/key/list/*
    identities:
    - $("$kes" identity of minio.cert)
keystore:
  fs:
    path: keys
YML
start_kes() { "$kes" server --config kes.yml >kes.log 2>&1 & pids+=($!); wait_for grep -q "listening on" kes.log; }
export KES_SERVER=https://127.0.0.1:$kes_port KES_CLIENT_CERT=admin.cert KES_CLIENT_KEY=admin.key KES_CAPATH=server.cert
step "kes starts" start_kes
step "default key created" "$kes" key create minio-default-key
step "named key created" "$kes" key create minio-named

s3_port=$(free_port); console=$(free_port)
s3="http://127.0.0.1:$s3_port"
MINIO_ROOT_USER=tryuser MINIO_ROOT_PASSWORD=trypassword12 \
MINIO_KMS_KES_ENDPOINT=https://127.0.0.1:$kes_port \
MINIO_KMS_KES_CERT_FILE=$work/minio.cert MINIO_KMS_KES_KEY_FILE=$work/minio.key \
MINIO_KMS_KES_CAPATH=$work/server.cert MINIO_KMS_KES_KEY_NAME=minio-default-key \
  "$minio" server --address "127.0.0.1:$s3_port" --console-address "127.0.0.1:$console" data >minio.log 2>&1 &
pids+=($!)
step "MinIO starts with kes as its KMS" wait_for curl -sf "$s3/minio/health/live"
s3() { curl -sSf --aws-sigv4 "aws:amz:us-east-1:s3" --user tryuser:trypassword12 "$@"; }
step "bucket created" s3 -X PUT "$s3/try"
head -c 100000 /dev/urandom > object
put() { s3 -X PUT -T object "$@"; }
step "upload, SSE-KMS with the default key" put -H "x-amz-server-side-encryption: aws:kms" "$s3/try/kms-default"
step "upload, SSE-KMS with a named key" put -H "x-amz-server-side-encryption: aws:kms" \
  -H "x-amz-server-side-encryption-aws-kms-key-id: minio-named" "$s3/try/kms-named"
step "upload, SSE-S3" put -H "x-amz-server-side-encryption: AES256" "$s3/try/sse-s3"
same() { s3 -o got "$s3/try/$1" && cmp -s object got; }
for o in kms-default kms-named sse-s3; do step "read back $o, byte for byte" same "$o"; done
restart_kes() { kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null; : >kes.log; start_kes; }
step "kes restarted" restart_kes
for o in kms-default kms-named sse-s3; do step "after the restart, read $o again" same "$o"; done
echo "$passed/$total steps passed"
[ "$passed" = "$total" ]
