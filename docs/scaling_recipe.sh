#!/bin/bash
# README "Scaling out", run end to end on one Linux machine as root (PostgreSQL runs as the postgres user):
# db-host = 127.0.0.2 and tracking-host = 127.0.0.3 via /etc/hosts, PostgreSQL 15 started by hand as its
# service would be, two worker shells in two folders. Usage: docs/scaling_recipe.sh [overrides for both
# workers], e.g. experiment=smoke sweep.n_trials=8. Leaves everything in $SCALE_DIR (default /tmp/ecosplit-scale).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
S=${SCALE_DIR:-/tmp/ecosplit-scale}; mkdir -p $S
grep -q db-host /etc/hosts || printf '127.0.0.2 db-host\n127.0.0.3 tracking-host\n' >> /etc/hosts
rm -rf $S/pgdata $S/sock $S/tracking $S/w0 $S/w1; mkdir -p $S/sock $S/tracking $S/w0 $S/w1
mkdir -p $S/pgdata $S/pglog; chown postgres $S/sock $S/pgdata $S/pglog; chmod 700 $S/pgdata; chmod 755 $S
PGBIN=/usr/lib/postgresql/15/bin
# --- the DB host's PostgreSQL service (here: started by hand as the postgres user)
runuser -u postgres -- $PGBIN/initdb -D $S/pgdata --auth-local=peer --auth-host=scram-sha-256 >/dev/null
runuser -u postgres -- $PGBIN/pg_ctl -D $S/pgdata -o "-c unix_socket_directories=$S/sock -c listen_addresses=localhost" -l $S/pglog/pg.log -w start >/dev/null
# --- README step 1 (psql -h <socket dir> stands for the service's default socket)
runuser -u postgres -- psql -h $S/sock -v ON_ERROR_STOP=1 \
  -c "CREATE ROLE ecosplit LOGIN PASSWORD 'change-me'" \
  -c "CREATE DATABASE optuna OWNER ecosplit" -c "CREATE DATABASE mlflow OWNER ecosplit"
echo "listen_addresses = 'localhost,db-host'" >> $S/pgdata/postgresql.conf
echo "host optuna,mlflow ecosplit 127.0.0.0/8 scram-sha-256" >> $S/pgdata/pg_hba.conf
runuser -u postgres -- $PGBIN/pg_ctl -D $S/pgdata -o "-c unix_socket_directories=$S/sock" -l $S/pglog/pg.log -w restart >/dev/null
# --- README step 2, on the tracking host
cd $S/tracking
export MLFLOW_BACKEND_STORE_URI='postgresql://ecosplit:change-me@db-host:5432/mlflow'
$REPO/.venv/bin/mlflow server --host tracking-host --port 5055 --allowed-hosts tracking-host:5055 \
  --serve-artifacts --artifacts-destination ./mlflow-artifacts > $S/mlflow.log 2>&1 &
MLFLOW_PID=$!
unset MLFLOW_BACKEND_STORE_URI
for i in $(seq 60); do curl -sf http://tracking-host:5055/health >/dev/null && break; sleep 1; done
# --- README step 3, two workers (their own folders, as on two machines)
worker() {
  cd $S/w$1
  export WORKER_ID=$1
  export ECOSPLIT_OPTUNA_URL='postgresql://ecosplit:change-me@db-host:5432/optuna'
  $REPO/.venv/bin/python $REPO/sweep.py -m 'sweep.storage=${oc.env:ECOSPLIT_OPTUNA_URL}' \
    sweep.name=team tracking.uri=http://tracking-host:5055 \
    hydra.sweeper.sampler.seed=$WORKER_ID hydra.sweep.dir=multirun/worker-$WORKER_ID \
    data.root=${MNIST_ROOT:-$REPO/data} "${@:2}"
}
START=$(date +%s)
worker 0 "$@" > $S/w0.log 2>&1 &
W0=$!
worker 1 "$@" > $S/w1.log 2>&1 &
W1=$!
rc0=0; wait $W0 || rc0=$?; rc1=0; wait $W1 || rc1=$?; echo "worker 0 exit $rc0, worker 1 exit $rc1"
echo "wall $(( $(date +%s) - START )) s"
$REPO/.venv/bin/python - <<'PY'
import optuna
from mlflow.tracking import MlflowClient
st = optuna.load_study(study_name="team-scalar", storage="postgresql://ecosplit:change-me@db-host:5432/optuna")
print("study team-scalar:", [t.state.name for t in st.trials].count("COMPLETE"), "COMPLETE of", len(st.trials))
c = MlflowClient("http://tracking-host:5055")
for e in c.search_experiments():
    runs = c.search_runs([e.experiment_id], max_results=1000)
    top = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    stores = sorted({r.info.artifact_uri.split(":", 1)[0] for r in runs})  # mlflow-artifacts: through the server
    print(f"experiment {e.name}: {len(runs)} runs, {len(top)} top-level, artifacts in {stores}")
print("registered:", [(m.name, [v.version for v in c.search_model_versions(f"name='{m.name}'")]) for m in c.search_registered_models()])
PY
kill $MLFLOW_PID; wait $MLFLOW_PID 2>/dev/null || true
runuser -u postgres -- $PGBIN/pg_ctl -D $S/pgdata -m fast stop >/dev/null
