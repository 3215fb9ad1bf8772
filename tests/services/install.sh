#!/usr/bin/env bash
# The engines behind the services tests (tests/test_slurm.py, tests/test_tracking_server.py): SLURM, munge and
# PostgreSQL from Debian/Ubuntu, as root. The Python side (psycopg2-binary) comes with the `cluster` extra.
#   tests/services/install.sh
set -euo pipefail
if command -v slurmctld >/dev/null && command -v munged >/dev/null && compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  slurmctld slurmd slurm-client munge postgresql >/dev/null
