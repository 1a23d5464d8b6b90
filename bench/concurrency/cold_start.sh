#!/usr/bin/env bash
# The first N runs of a new project, released together: do they duplicate shared rows?
#
#   bash bench/concurrency/cold_start.sh [N] [PG_BASE_URL]     (default 10, postgresql://127.0.0.1)
#
# A new git project (`smt init`, `smt configure -e python -m main.py -g uuid`), copied to a
# new PostgreSQL database with `smtmigrate createdb` + `copy --widen --switch` before any run,
# then N runs of smt_runs.py; prints the rows of the tables Sumatra fills with get_or_create
# (one of each is meant) and what `smt list` shows. Leaves the project and the database
# (named in its output) for a look; drop the database when done.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/../../.venv/bin"
N="${1:-10}"
BASE="${2:-postgresql://127.0.0.1}"
export PATH="$VENV:$PATH" GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@smtmigrate.invalid
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@smtmigrate.invalid
DIR="$(mktemp -d -t smtmigrate-cold-XXXXXX)"
cd "$DIR"
git init -q .
printf 'import sys, time\nopen(sys.argv[1]).read()\ntime.sleep(0.2)\n' > main.py
printf 'n = 10\nrate = 2.5\n' > default.param
printf '.smt\nData\n' > .gitignore
git add -A && git commit -qm init
smt init "cold$N" > /dev/null
smt configure -e python -m main.py -g uuid > /dev/null 2>&1
DB="smtm_bench_cold_${N}_$(date +%s)"
smtmigrate createdb "$BASE/$DB" > /dev/null
smtmigrate copy . "$BASE/$DB" --widen --switch . | tail -1
python "$HERE/smt_runs.py" . "$N"
for t in executable repository launchmode datastore platforminformation dependency parameterset; do
    echo "$t rows: $(psql -At "$BASE/$DB" -c "SELECT count(*) FROM django_store_$t")"
done
echo "smt list: $(smt list | wc -l) labels; project in $DIR, database $DB"
