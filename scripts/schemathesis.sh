#!/usr/bin/env bash
# Runs schemathesis over both published OpenAPI documents against a fresh
# embedded default: every operation, with the checks the contract promises
# (no 5xx, every status documented, every response in its schema and
# content type). Arguments after `--` go to `st run` (e.g. --include-tag).
# Installs schemathesis into target/schemathesis-venv when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ST_VERSION=4.32.5
EXAMPLES=${SCHEMATHESIS_EXAMPLES:-25}
extra=()
if [ "${1:-}" = "--" ]; then shift; extra=("$@"); fi

venv=target/schemathesis-venv
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$ST_VERSION"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
fi
bin=target/debug/gatehouse
[ -x "$bin" ] || cargo build --locked --quiet

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data=$(mktemp -d)
admin="adm_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
log=target/schemathesis-server.log
"$bin" --listen "127.0.0.1:$port" --data-dir "$data" --admin-token "$admin" \
  --rate-limit-development 1000000 --rate-limit-production 1000000 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$data"' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -fs "$base/healthz" >/dev/null && break; sleep 0.2; done

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
tenant=$(curl -fs -X POST "$base/admin/v1/tenants" -H "authorization: Bearer $admin" \
  -H 'content-type: application/json' -d '{"name":"Schemathesis"}')
export GATEHOUSE_ADMIN_TOKEN=$admin
export GATEHOUSE_SECRET_KEY=$(json "['instances'][0]['secret_key']" <<<"$tenant")
export GATEHOUSE_INSTANCE_ID=$(json "['instances'][0]['id']" <<<"$tenant")
app=$(curl -fs -X POST "$base/v1/oauth_applications" -H "authorization: Bearer $GATEHOUSE_SECRET_KEY" \
  -H 'content-type: application/json' \
  -d '{"name":"Fuzzed client","redirect_uris":["https://app.example/cb"],"scopes":"openid email"}')
export GATEHOUSE_CLIENT_ID=$(json "['client_id']" <<<"$app")
export GATEHOUSE_CLIENT_SECRET=$(json "['client_secret']" <<<"$app")
for _ in $(seq 1 100); do
  token=$(curl -s -u "$GATEHOUSE_CLIENT_ID:$GATEHOUSE_CLIENT_SECRET" \
    -d grant_type=client_credentials "$base/i/$GATEHOUSE_INSTANCE_ID/oauth/token" || true)
  case "$token" in *access_token*) break ;; esac
  sleep 0.1
done
export GATEHOUSE_ACCESS_TOKEN=$(json "['access_token']" <<<"$token")
opaque_app=$(curl -fs -X POST "$base/v1/oauth_applications" -H "authorization: Bearer $GATEHOUSE_SECRET_KEY" \
  -H 'content-type: application/json' \
  -d '{"name":"Opaque client","redirect_uris":["https://app.example/cb"],"access_token_format":"opaque"}')
for _ in $(seq 1 100); do
  opaque=$(curl -s -u "$(json "['client_id']" <<<"$opaque_app"):$(json "['client_secret']" <<<"$opaque_app")" \
    -d grant_type=client_credentials "$base/i/$GATEHOUSE_INSTANCE_ID/oauth/token" || true)
  case "$opaque" in *access_token*) break ;; esac
  sleep 0.1
done
user=$(curl -fs -X POST "$base/v1/users" -H "authorization: Bearer $GATEHOUSE_SECRET_KEY" \
  -H 'content-type: application/json' -d '{"email_address":["fuzzed@example.com"],"first_name":"Fuzz"}')
# Dynamic registration on, and one registered client whose RFC 7592
# management the fuzzer may exercise.
curl -fs -X PATCH "$base/v1/instance/oauth_application_settings" \
  -H "authorization: Bearer $GATEHOUSE_SECRET_KEY" -H 'content-type: application/json' \
  -d '{"dynamic_oauth_client_registration":true}' >/dev/null
for _ in $(seq 1 100); do
  registered=$(curl -s -X POST "$base/i/$GATEHOUSE_INSTANCE_ID/oauth/register" \
    -H 'content-type: application/json' \
    -d '{"redirect_uris":["https://app.example/cb"],"client_name":"Registered"}' || true)
  case "$registered" in *registration_access_token*) break ;; esac
  sleep 0.1
done
export GATEHOUSE_REGISTRATION_TOKEN=$(json "['registration_access_token']" <<<"$registered")
mkdir -p target/schemathesis
printf '"%s"\n' "$(json "['client_id']" <<<"$registered")" > target/schemathesis/clients.dict
printf '"%s"\n"%s"\n' "$GATEHOUSE_ACCESS_TOKEN" "$(json "['access_token']" <<<"$opaque")" \
  > target/schemathesis/tokens.dict
printf '"%s"\n' "$(json "['id']" <<<"$user")" > target/schemathesis/users.dict

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
status=0
for doc in backend admin; do
  echo "== schemathesis: docs/openapi/$doc.json"
  "$venv/bin/st" --config-file scripts/schemathesis.toml run "docs/openapi/$doc.json" \
    --url "$base" --checks "$checks" --max-examples "$EXAMPLES" --seed 15 \
    --phases examples,coverage,fuzzing,stateful --workers 2 \
    --output-truncate false "${extra[@]}" || status=1
done
exit $status
