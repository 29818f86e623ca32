# Shared by compose/up, compose/down, compose/deisctl and compose/e2e (sourced, not run).
#
# Environment:
#   DEIS_CLUSTER        the compose project, i.e. which cluster (default deis); each has its own
#                       containers, volumes, network and credentials
#   DEIS_CLUSTER_STATE  where each cluster's generated credentials are kept
#                       (default ~/.local/state/deis-cluster/<cluster>, mode 0700)
#   DEIS_HTTP_PORT DEIS_HTTPS_PORT DEIS_GIT_PORT DEIS_NATS_PORT
#                       the front door on 127.0.0.1 (8080, 8443, 2222, 4222)

cluster=${DEIS_CLUSTER:-${COMPOSE_PROJECT_NAME:-deis}}
export COMPOSE_PROJECT_NAME=$cluster
compose_file=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/docker-compose.yml
state=${DEIS_CLUSTER_STATE:-${XDG_STATE_HOME:-$HOME/.local/state}/deis-cluster/$cluster}
http_port=${DEIS_HTTP_PORT:-8080}
https_port=${DEIS_HTTPS_PORT:-8443}
git_port=${DEIS_GIT_PORT:-2222}
nats_port=${DEIS_NATS_PORT:-4222}
export DEIS_HTTP_PORT=$http_port DEIS_HTTPS_PORT=$https_port DEIS_GIT_PORT=$git_port DEIS_NATS_PORT=$nats_port

# docker-compose 1.x or the `docker compose` plugin, whichever is installed.
if docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose_cmd=(docker-compose)
else
  echo "neither 'docker compose' nor 'docker-compose' is installed (Debian: apt-get install docker-compose)" >&2
  exit 1
fi
compose() { "${compose_cmd[@]}" -f "$compose_file" -p "$cluster" "$@"; }

# The cluster network's subnet, fixed per cluster so that a node keeps its address when it is
# restarted (the store's monitors are known by address). The network's own when it exists, else
# the one kept in $state/subnet while no other network or route overlaps it, else the first /24
# of 10.213.0.0/16 that none overlaps (kept there). Nodes are .11-.13; Docker hands out .128 and up
# to everything else on the network.
cluster_subnet() {
  local subnet
  subnet=$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "${cluster}_cluster" 2>/dev/null || true)
  if [ -z "$subnet" ]; then
    local taken kept=
    # shellcheck disable=SC2046
    taken=$( { docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' $(docker network ls -q) 2>/dev/null || true
               ip -4 route show 2>/dev/null | awk '$1 ~ /\// {print $1}'; } | tr ' ' '\n' | grep . || true)
    [ -f "$state/subnet" ] && kept=$(cat "$state/subnet")
    subnet=$(KEPT=$kept TAKEN=$taken python3 - <<'PY'
import ipaddress, os
taken = []
for t in os.environ["TAKEN"].split():
    try:
        taken.append(ipaddress.ip_network(t, strict=False))
    except ValueError:
        pass
def free(n):
    return not any(n.overlaps(t) for t in taken if t.version == 4)
kept = os.environ["KEPT"].strip()
if kept and free(ipaddress.ip_network(kept)):
    print(kept)
else:
    print(next((str(n) for n in ipaddress.ip_network("10.213.0.0/16").subnets(new_prefix=24) if free(n)), ""))
PY
)
    [ -n "$subnet" ] || { echo "no free /24 in 10.213.0.0/16 for the cluster network" >&2; return 1; }
    mkdir -p "$state" && chmod 700 "$state" && printf '%s\n' "$subnet" > "$state/subnet"
  fi
  local prefix=${subnet%.*}
  export DEIS_SUBNET=$subnet DEIS_SUBNET_DYNAMIC=$prefix.128/25
  export DEIS_NODE1_IP=$prefix.11 DEIS_NODE2_IP=$prefix.12 DEIS_NODE3_IP=$prefix.13
}
cluster_subnet

# Credentials: one random password per DEIS_SECRET_* the compose file names (plus etcd's root
# and deisctl's), generated once per cluster and kept in $state/secrets.env. A service added to
# the compose file gets its passwords on the next `up`.
load_secrets() {
  mkdir -p "$state" && chmod 700 "$state"
  local file=$state/secrets.env name
  touch "$file" && chmod 600 "$file"
  local names
  names=$( { grep -oE 'DEIS_SECRET_[A-Z0-9_]+' "$compose_file"; printf '%s\n' DEIS_SECRET_ETCD_ROOT DEIS_SECRET_ETCD_DEISCTL; } | sort -u)
  for name in $names; do
    grep -q "^$name=" "$file" && continue
    case "$name" in
      DEIS_SECRET_NKEY_*)
        # An NATS account key pair (ed25519, NATS's own encoding), made by deisctl: the seed is
        # the secret (the controller signs with it), the public key goes to the NATS members as
        # DEIS_NKEY_<NAME>_PUBLIC.
        local pair
        pair=$(docker run --rm deis/deisctl deisctl nkey) || { echo "deisctl nkey failed (is deis/deisctl built?)" >&2; return 1; }
        printf '%s=%s\n' "$name" "$(sed -n 1p <<<"$pair")" >> "$file"
        printf 'DEIS_NKEY_%s_PUBLIC=%s\n' "${name#DEIS_SECRET_NKEY_}" "$(sed -n 2p <<<"$pair")" >> "$file" ;;
      *) printf '%s=%s\n' "$name" "$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')" >> "$file" ;;
    esac
  done
  set -a
  # shellcheck disable=SC1090
  . "$file"
  set +a
}

# Runs deisctl in a throwaway container on the cluster's network, with the host's engine (to
# start, stop and read the parts' containers) and deisctl's own etcd user.
deisctl() {
  local tty=()
  [ -t 0 ] && [ -t 1 ] && tty=(-t)
  docker run --rm -i "${tty[@]}" --network "${cluster}_cluster" \
    -v /var/run/docker.sock:/var/run/docker.sock \
    -e DEIS_DEISCTL_CLUSTER="$cluster" \
    -e DEIS_DEISCTL_ETCD__ENDPOINTS='["http://node1:2379","http://node2:2379","http://node3:2379"]' \
    -e DEIS_DEISCTL_ETCD__USER=deisctl \
    -e DEIS_DEISCTL_ETCD__PASSWORD="$DEIS_SECRET_ETCD_DEISCTL" \
    deis/deisctl deisctl "$@"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
