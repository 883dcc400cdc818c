#!/bin/sh
# Starts one node of the redis-cluster StatefulSet (POSIX sh: the redis
# image's /bin/sh is dash).
#
# Environment, set by statefulset.yaml:
#   POD_NAME, POD_NAMESPACE, POD_IP   from the downward API
#   SERVICE_NAME                      the headless Service (redis-cluster)
# Optional:
#   CLUSTER_DOMAIN     the cluster's DNS domain; by default read from the
#                      search path kubelet writes to /etc/resolv.conf
#                      ("<ns>.svc.<domain> svc.<domain> <domain>"), else
#                      cluster.local
#   ANNOUNCE_HOSTNAME  the hostname to announce; by default the pod's stable
#                      DNS name <pod>.<service>.<namespace>.svc.<domain>
#   REDIS_CONF         default /etc/redis/redis.conf
#   DATA_DIR           where nodes.conf is; default /data
# Arguments are passed on to redis-server after the config file.
set -eu

conf=${REDIS_CONF:-/etc/redis/redis.conf}
data=${DATA_DIR:-/data}

if [ -z "${ANNOUNCE_HOSTNAME:-}" ]; then
    domain=${CLUSTER_DOMAIN:-}
    if [ -z "$domain" ] && [ -r /etc/resolv.conf ]; then
        domain=$(awk '$1 == "search" {
            for (i = 2; i <= NF; i++) if ($i ~ /^svc\./) { print substr($i, 5); exit }
        }' /etc/resolv.conf)
    fi
    domain=${domain:-cluster.local}
    ANNOUNCE_HOSTNAME="$POD_NAME.$SERVICE_NAME.$POD_NAMESPACE.svc.$domain"
fi

# A recreated pod has a new IP, but nodes.conf on its volume still records
# the old one for "myself". Put the current IP there before Redis reads it;
# the other nodes learn the new address when this node next talks to them.
# (If every pod got a new IP at once, nobody can reach anybody: running the
# redis-cluster-create Job again introduces them to each other anew.)
if [ -n "${POD_IP:-}" ] && [ -f "$data/nodes.conf" ]; then
    sed -i -e "/myself/ s/^\([0-9a-f]\{40\}\) [^ ]*:\([0-9]\{1,5\}@\)/\1 $POD_IP:\2/" \
        "$data/nodes.conf"
fi

echo "start-node: announcing hostname $ANNOUNCE_HOSTNAME" >&2
exec redis-server "$conf" --cluster-announce-hostname "$ANNOUNCE_HOSTNAME" "$@"
