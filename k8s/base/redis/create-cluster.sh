#!/bin/sh
# Forms the Redis Cluster from the redis-cluster StatefulSet's pods
# (6 pods: 3 primaries, each with 1 replica). Run by the redis-cluster-create
# Job (POSIX sh: the redis image's /bin/sh is dash).
#
# Idempotent: safe to run any number of times, also while the cluster serves
# clients. It creates the cluster only when no node sees any slot assigned;
# a cluster that exists is never re-created, resharded or reset.
#   1. Waits until every node answers PING.
#   2. If every node reports cluster_state:ok and sees every node connected
#      and not failing: nothing to do. Otherwise, if any node sees slots
#      assigned, the cluster exists and is not created again, but every node
#      is sent CLUSTER MEET with every other node's current IP (harmless for
#      nodes that already know each other; it repairs the addresses after
#      all pods got new IPs at once). Otherwise: redis-cli --cluster create.
#   3. Waits until every node reports cluster_state:ok and sees every node
#      connected and not failing; fails, printing CLUSTER NODES, if that
#      does not happen in time (e.g. a node lost its volume and came back
#      empty: that needs a person, see k8s/README.md).
#
# Environment, set by cluster-create-job.yaml:
#   STATEFULSET   name of the StatefulSet (redis-cluster)
#   SERVICE_NAME  its headless Service (redis-cluster)
#   NODE_COUNT    number of pods (6)
# Optional:
#   REDIS_PORT     client port, default 6379 (the bus port is it + 10000)
#   REDIS_NODES    space-separated host:port list instead of the pods' DNS
#                  names (for trying the script outside Kubernetes)
#   WAIT_SECONDS   how long each waiting step may take, default 600
set -eu

port=${REDIS_PORT:-6379}
wait_seconds=${WAIT_SECONDS:-600}

say() { echo "create-cluster: $*" >&2; }
fail() { say "$*"; exit 1; }

if [ -n "${REDIS_NODES:-}" ]; then
    nodes=$REDIS_NODES
else
    # Namespace-relative stable DNS names: <pod>.<headless service>. They
    # resolve before the pods are ready (publishNotReadyAddresses).
    nodes=""
    i=0
    while [ "$i" -lt "$NODE_COUNT" ]; do
        nodes="$nodes $STATEFULSET-$i.$SERVICE_NAME:$port"
        i=$((i + 1))
    done
fi
# shellcheck disable=SC2086 # split the list into words on purpose
set -- $nodes
count=$#
first=$1

# cli HOST:PORT ARGS...: one redis-cli command to one node.
cli() {
    node=$1
    shift
    redis-cli -h "${node%:*}" -p "${node##*:}" "$@"
}

# field HOST:PORT NAME: a field of CLUSTER INFO, or nothing.
field() {
    cli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

# ip_of HOST: the first IP address HOST resolves to (getaddrinfo, through
# getent ahosts: an IP address stays itself, where getent hosts would look
# up its name).
ip_of() {
    getent ahosts "$1" | awk '{ print $1; exit }'
}

# healthy HOST:PORT: whether the node reports cluster_state:ok, knows every
# node, and sees each of them connected and not failing. (cluster_state alone
# is not enough: a node that restarts reports ok from its saved nodes.conf
# until node timeout passes without hearing from its peers.)
healthy() {
    [ "$(field "$1" cluster_state)" = ok ] || return 1
    [ "$(field "$1" cluster_known_nodes)" = "$count" ] || return 1
    cli "$1" cluster nodes 2>/dev/null | tr -d '\r' | awk -v want="$count" '
        $3 ~ /fail|handshake|noaddr/ || $8 != "connected" { bad = 1 }
        END { exit bad || NR != want }'
}

deadline() { echo $(($(date +%s) + wait_seconds)); }

# 1. Every node answers PING.
until_time=$(deadline)
for node in "$@"; do
    until [ "$(cli "$node" ping 2>/dev/null)" = PONG ]; do
        [ "$(date +%s)" -lt "$until_time" ] ||
            fail "$node did not answer PING within ${wait_seconds}s"
        say "waiting for $node to answer PING"
        sleep 2
    done
done
say "all $count nodes answer PING"

# 2. Create, or leave alone.
all_healthy=yes
for node in "$@"; do
    healthy "$node" || all_healthy=no
done
state=$(field "$first" cluster_state)
known=$(field "$first" cluster_known_nodes)
# cluster_slots_assigned counts the slots assigned to any node in that
# node's view; it is 0 only on a node that has never been part of a cluster.
with_slots=0
for node in "$@"; do
    assigned=$(field "$node" cluster_slots_assigned)
    if [ "${assigned:-0}" -gt 0 ]; then
        with_slots=$((with_slots + 1))
    fi
done

if [ "$all_healthy" = yes ]; then
    say "cluster exists (cluster_state:ok, all $count nodes known and connected): nothing to do"
elif [ "$with_slots" -gt 0 ]; then
    say "cluster exists ($with_slots nodes see slots assigned; cluster_state:$state," \
        "$known nodes known on $first): not creating it again;" \
        "introducing the nodes to each other at their current IPs"
    for node in "$@"; do
        for peer in "$@"; do
            [ "$peer" != "$node" ] || continue
            peer_ip=$(ip_of "${peer%:*}")
            [ -n "$peer_ip" ] || fail "cannot resolve ${peer%:*}"
            cli "$node" cluster meet "$peer_ip" "${peer##*:}" >/dev/null ||
                fail "CLUSTER MEET $peer_ip ${peer##*:} on $node failed"
        done
    done
else
    # redis-cli 7.0 sends CLUSTER MEET with the addresses it is given, and
    # CLUSTER MEET accepts only IP addresses ("Invalid node address
    # specified" for a hostname), so the DNS names are resolved here first
    # (getent, see ip_of).
    # Clients still see the stable names: each node announces its DNS name
    # (cluster-announce-hostname) and the IPs are only for the cluster bus.
    addresses=""
    for node in "$@"; do
        ip=$(ip_of "${node%:*}")
        [ -n "$ip" ] || fail "cannot resolve ${node%:*}"
        addresses="$addresses $ip:${node##*:}"
    done
    say "creating the cluster from$addresses"
    # shellcheck disable=SC2086 # one argument per address
    redis-cli --cluster create $addresses --cluster-replicas 1 --cluster-yes
fi

# 3. Every node reports cluster_state:ok and sees all nodes connected.
until_time=$(deadline)
for node in "$@"; do
    until healthy "$node"; do
        [ "$(date +%s)" -lt "$until_time" ] || {
            cli "$node" cluster nodes >&2 || true
            fail "$node did not report cluster_state:ok with all $count nodes" \
                "connected within ${wait_seconds}s"
        }
        say "waiting for cluster_state:ok and all nodes connected on $node"
        sleep 2
    done
done
say "cluster_state:ok on all $count nodes, all connected"
cli "$first" cluster nodes
