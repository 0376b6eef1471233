#!/usr/bin/env bash
# Fuzz a running Switchyard API with schemathesis, bounded in time.
#
#   run-schemathesis.sh BASE_URL API_KEY
#
# BASE_URL: e.g. http://127.0.0.1:18181 (the schema is BASE_URL/openapi.json).
# API_KEY:  an ordinary (non-admin) user's key; use a user of its own: the run
#           creates threads, conversations and runs under it.
#
# Fails (exit 1) when any request answered 5xx (check not_a_server_error), or
# when the server stopped answering (connection refused/reset), or when
# schemathesis could not run (bad schema, bad options: exit 2). Read timeouts
# on slow or long-lived responses are listed but do not fail the run.
#
# Deterministic: a fixed seed, Hypothesis' derandomized mode, one worker and
# a fixed number of examples (no --max-time: with it schemathesis repeats
# fuzzing and stateful cycles until the budget is spent, so the work done
# would depend on the machine's speed). The same server build and the same
# seed send the same requests. About 65-90 s on a 2-core machine; a hard
# limit interrupts it (SIGINT, so the report is still written) after
# ST_HARD_LIMIT seconds.
#
# Environment:
#   SCHEMATHESIS         the schemathesis executable (default: .tools/schemathesis/bin/schemathesis,
#                        looked up in the current directory, then in the repository
#                        root above this script)
#   ST_MAX_EXAMPLES      examples per operation (default 50)
#   ST_SEED              generation seed (default 1)
#   ST_WORKERS           concurrent workers (default 1; more is faster but not reproducible)
#   ST_REQUEST_TIMEOUT   per-request timeout in seconds (default 10)
#   ST_HARD_LIMIT        seconds after which the run is interrupted (default 150)
#   ST_REPORT_DIR        where junit.xml and the full output go (default: a new temp dir)
set -uo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 BASE_URL API_KEY" >&2
    exit 2
fi
base_url=${1%/}
api_key=$2

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
st=${SCHEMATHESIS:-}
if [[ -z $st ]]; then
    for candidate in "$PWD/.tools/schemathesis/bin/schemathesis" "$script_dir/../../.tools/schemathesis/bin/schemathesis"; do
        if [[ -x $candidate ]]; then st=$candidate; break; fi
    done
fi
if [[ -z $st ]] || ! command -v "$st" >/dev/null 2>&1; then
    echo "schemathesis not found: set SCHEMATHESIS or run scripts/install-test-tools.sh" >&2
    exit 2
fi
st=$(realpath "$(command -v "$st")")

max_examples=${ST_MAX_EXAMPLES:-50}
seed=${ST_SEED:-1}
workers=${ST_WORKERS:-1}
hard_limit=${ST_HARD_LIMIT:-150}
request_timeout=${ST_REQUEST_TIMEOUT:-10}
report_dir=${ST_REPORT_DIR:-$(mktemp -d -t schemathesis-XXXXXX)}
mkdir -p "$report_dir"
report_dir=$(realpath "$report_dir")
junit=$report_dir/junit.xml
output=$report_dir/output.txt
config=$report_dir/schemathesis.toml

# Per-operation settings. `GET /api/conversations/{id}/thinking` waits up to
# five minutes for a run to show up, sending only keep-alives: keep it short.
# Event streams are read until they end, 20 events arrive, or the request
# timeout passes; none of that is an error.
cat >"$config" <<'EOF'
[[operations]]
include-path = "/api/conversations/{id}/thinking"
request-timeout = 2

[operations.generation]
max-examples = 5
EOF

# The key must work, or every request would be a 401 and nothing tested.
me_status=$(curl -s -o /dev/null -w '%{http_code}' -m 10 -H "Authorization: Bearer $api_key" "$base_url/v1/me")
if [[ $me_status != 200 ]]; then
    echo "GET $base_url/v1/me with the given key answered ${me_status:-nothing}, not 200: is the server up and the key valid?" >&2
    exit 2
fi

start=$(date +%s)
# SIGINT at the hard limit: schemathesis stops and still writes its report.
# From the report's folder, where schemathesis keeps its cache of crashes
# (`.schemathesis/`), not the caller's.
cd "$report_dir" || exit 2
timeout --signal=INT --kill-after=20 "$hard_limit" \
    "$st" --config-file "$config" run "$base_url/openapi.json" \
    --url "$base_url" \
    -H "Authorization: Bearer $api_key" \
    --checks not_a_server_error \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$max_examples" \
    --seed "$seed" \
    --generation-deterministic \
    --workers "$workers" \
    --request-timeout "$request_timeout" \
    --suppress-health-check all \
    --no-color \
    --report junit --report-junit-path "$junit" \
    >"$output" 2>&1
st_status=$?
elapsed=$(($(date +%s) - start))

# Decide from the JUnit report: <failure> is a failed check (here: a 5xx),
# <error> a network or internal error.
python3 - "$junit" "$output" "$st_status" "$elapsed" "$report_dir" <<'PY'
import re
import sys
import xml.etree.ElementTree as ET

junit, output, st_status, elapsed, report_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
text = open(output, encoding="utf-8", errors="replace").read()

server_errors, fatal, timeouts = [], [], []
try:
    root = ET.parse(junit).getroot()
except (OSError, ET.ParseError) as exc:
    root = None
    fatal.append(f"no JUnit report ({exc})")
if root is not None:
    for case in root.iter("testcase"):
        name = case.get("name", "?")
        for failure in case.findall("failure"):
            body = failure.text or ""
            statuses = sorted(set(re.findall(r"^\[(5\d\d)\]", body, re.M))) or ["5xx"]
            # The failing request is the last one (stateful failures show the whole sequence).
            curls = [l.strip() for l in body.splitlines() if l.strip().startswith("curl ")]
            curl = curls[-1] if curls else ""
            server_errors.append((name, ",".join(statuses), failure.get("message", ""), curl))
        for error in case.findall("error"):
            body = error.text or ""
            if re.search(r"Read timed out|ReadTimeout", body):
                timeouts.append(name)
            else:
                fatal.append(f"{name}: " + " ".join(body.split())[:200])

m = re.search(r"^Test cases:\s*\n?\s*(.*)$", text, re.M)
cases = m.group(1).strip() if m else "?"
interrupted = st_status in (124, 130)
if interrupted:
    # The hard limit hit (SIGINT): what ran is reported, and fails only on 5xx.
    if root is not None:
        fatal[:] = [f for f in fatal if not f.startswith("no JUnit report")]
elif st_status not in (0, 1):
    fatal.append(f"schemathesis exited {st_status}"
                 + (" (killed after the hard time limit)" if st_status == 137 else ""))

print(f"schemathesis: {elapsed}s, test cases: {cases}")
for name, status, code, curl in server_errors:
    print(f"  5xx  {name}  [{status}] {code}")
    if curl:
        print(f"       {curl[:300]}")
for line in fatal:
    print(f"  ERROR {line}")
if timeouts:
    print(f"  note: read timeouts (not failing): {', '.join(sorted(set(timeouts)))}")
if interrupted:
    print("  note: interrupted at the hard time limit (ST_HARD_LIMIT); the run is incomplete")
if st_status not in (0, 1, 124, 130):
    print("  last lines of schemathesis' output:")
    for line in text.strip().splitlines()[-8:]:
        print(f"    {line}")
print(f"full output and JUnit report: {report_dir}")
if server_errors or fatal:
    print(f"FAILED: {len(server_errors)} operation(s) answered 5xx, {len(fatal)} error(s)")
    sys.exit(1)
print("OK: no 5xx")
PY
