#!/usr/bin/env bash
# Three pushgate nodes on this machine sharing one local Redis: a cluster to
# look at. Starts redis-server on 127.0.0.1:6390 (its data under
# deploy/local-cluster/data), builds the gateway, and runs nodes n1, n2, n3:
#
#   node  HTTP                    gRPC (peers)
#   n1    http://127.0.0.1:8081   127.0.0.1:7701
#   n2    http://127.0.0.1:8082   127.0.0.1:7702
#   n3    http://127.0.0.1:8083   127.0.0.1:7703
#
# They connect as component push.localhost (secret s3cr3t) to an XMPP server
# on 127.0.0.1:5347 (2 streams for the whole cluster; without a server they
# retry and say why). Then:
#
#   curl -s 127.0.0.1:8081/readyz        # members, shards owned and assigned
#   curl -s 127.0.0.1:8082/metrics | grep pushgate_cluster_
#   tail -f deploy/local-cluster/data/n3.log
#
# Stop one node (kill the PID it prints) and watch the others take its shards
# over after the lease (10 s); Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR="$(pwd)/deploy/local-cluster/data"
mkdir -p "$DIR"

command -v redis-server >/dev/null || { echo "redis-server is needed (apt install redis-server)"; exit 1; }
cargo build --release --locked
BIN=target/release/pushgate

pids=()
cleanup() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

redis-server --port 6390 --bind 127.0.0.1 --dir "$DIR" --appendonly yes \
    --save '' --daemonize no --logfile "$DIR/redis.log" &
pids+=($!)
for _ in $(seq 50); do
    redis-cli -p 6390 ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis-cli -p 6390 ping >/dev/null || { echo "redis-server did not start; see $DIR/redis.log"; exit 1; }

for i in 1 2 3; do
    cat > "$DIR/n$i.toml" <<TOML
[component]
jid = "push.localhost"
secret = "s3cr3t"

[[component.servers]]
host = "127.0.0.1"
port = 5347
connections = 2

[store]
backend = "redis"
url = "redis://127.0.0.1:6390/0"

[http]
listen = "127.0.0.1:808$i"

[cluster]
node_id = "n$i"
listen = "127.0.0.1:770$i"
secret = "local-cluster-secret-0123456789"
TOML
    "$BIN" check-config --config "$DIR/n$i.toml"
    "$BIN" --config "$DIR/n$i.toml" 2>"$DIR/n$i.log" &
    pids+=($!)
    echo "n$i: pid $!, http://127.0.0.1:808$i, log $DIR/n$i.log"
done

sleep 3
curl -s 127.0.0.1:8081/readyz; echo
wait
