#!/usr/bin/env bash
# A 1M-record export in constant memory: a tenant is filled by importing a
# grown export file (a million records in a minute, where seeding through
# the API at the plan's rate would take 17), then exported while the
# server's RSS is sampled every 0.2 s. SQLite, dedicated tier.
#
#   bench/export-1m.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin tenantry
BIN=target/release/tenantry
DATA=$(mktemp -d)
PORT=18097
TENANTRY_DATA_DIR=$DATA TENANTRY_LISTEN=127.0.0.1:$PORT TENANTRY_ADMIN_EMAIL=a@example.com TENANTRY_ADMIN_PASSWORD='Bench-Admin-Passw0rd!' TENANTRY_IMPORT_MAX_BYTES=4000000000 $BIN serve > $DATA/server.log 2>&1 &
PID=$!
trap 'kill $PID; rm -rf $DATA' EXIT
B=http://127.0.0.1:$PORT
for i in $(seq 1 100); do curl -sf $B/readyz >/dev/null && break; sleep 0.1; done
T=$(curl -s $B/api/v1/auth/login -d '{"email":"a@example.com","password":"Bench-Admin-Passw0rd!"}' | jq -r .access_token)
curl -s $B/api/v1/tenants -H "authorization: Bearer $T" -d '{"name":"Seed","slug":"seed1","plan":"custom","isolation":"dedicated"}' >/dev/null
curl -s $B/api/v1/users -H "authorization: Bearer $T" -H 'x-tenant-slug: seed1' -d '{"email":"u@seed1.example","password":"User-Passw0rd-1!","name":"U","role":"admin"}' > /dev/null
U=$(curl -s $B/api/v1/auth/login -d '{"email":"u@seed1.example","password":"User-Passw0rd-1!","tenant":"seed1"}' | jq -r .access_token)
curl -s $B/api/v1/collections/complaints/records -H "authorization: Bearer $U" -d '{"title":"Complaint 0","status":"open","ward":3}' > /dev/null
wait_job() { while true; do J=$(curl -s $B/api/v1/jobs/$1 -H "authorization: Bearer $T"); S=$(echo "$J" | jq -r .status); [ "$S" = succeeded ] && { echo "$J"; return; }; [ "$S" = failed ] && { echo "FAILED $J" >&2; exit 1; }; sleep 0.5; done; }
J=$(curl -s $B/api/v1/tenants/seed1/export -H "authorization: Bearer $T" -d '{}' | jq -r .job_id)
URL=$(wait_job $J | jq -r .result_url)
curl -s $B$URL -H "authorization: Bearer $T" > $DATA/small.ndjson
python3 - "$DATA/small.ndjson" "$DATA/big.ndjson" <<'PY'
import json, sys, uuid, time
src, dst = sys.argv[1], sys.argv[2]
lines = open(src).read().splitlines()
header = json.loads(lines[0]); N = 1_000_000
with open(dst, 'w') as out:
    header['counts']['record'] = N
    out.write(json.dumps(header) + '\n')
    for line in lines[1:]:
        item = json.loads(line)
        if item.get('type') != 'record':
            out.write(line + '\n'); continue
        base = int(time.time() * 1000)
        for n in range(N):
            item['id'] = str(uuid.UUID(int=(base << 80) | (0x7 << 76) | (n + 1) | (0x8 << 60)))
            item['data'] = {"title": f"Complaint {n}", "status": "resolved" if n % 3 == 0 else "open", "ward": n % 7}
            out.write(json.dumps(item) + '\n')
PY
ls -la $DATA/big.ndjson
curl -s $B/api/v1/tenants -H "authorization: Bearer $T" -d '{"name":"Big","slug":"big1","plan":"custom","isolation":"dedicated"}' >/dev/null
START=$(date +%s.%N)
J=$(curl -s $B/api/v1/tenants/big1/import -H "authorization: Bearer $T" -H 'content-type: application/x-ndjson' --data-binary @$DATA/big.ndjson | jq -r .job_id)
wait_job $J > /dev/null
END=$(date +%s.%N)
echo "import 1M: $(echo "$END - $START" | bc) s"
curl -s $B/api/v1/tenants/big1/usage -H "authorization: Bearer $T" | jq -c '{records, storage_bytes}'
RSS0=$(grep VmRSS /proc/$PID/status | awk '{print $2}')
J=$(curl -s $B/api/v1/tenants/big1/export -H "authorization: Bearer $T" -d '{}' | jq -r .job_id)
MAX=$RSS0
START=$(date +%s.%N)
while true; do
  R=$(grep VmRSS /proc/$PID/status | awk '{print $2}'); [ $R -gt $MAX ] && MAX=$R
  S=$(curl -s $B/api/v1/jobs/$J -H "authorization: Bearer $T" | jq -r .status)
  [ "$S" = succeeded ] && break; [ "$S" = failed ] && { echo export failed; exit 1; }
  sleep 0.2
done
END=$(date +%s.%N)
echo "export 1M: $(echo "$END - $START" | bc) s; RSS before ${RSS0} kB, peak ${MAX} kB, growth $(( (MAX - RSS0) / 1024 )) MB"
