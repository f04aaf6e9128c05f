#!/usr/bin/env bash
# The local control plane: etcd + kube-apiserver + kube-controller-manager +
# kube-scheduler + kwok, with fake GPU nodes from an inventory file, and a real worker
# node (containerd, kubelet, kube-proxy, CoreDNS: hack/k8s/node.sh) unless REAL_NODE=0.
#
#   hack/k8s/cluster.sh up       start it (or say it is already up)
#   hack/k8s/cluster.sh down     stop it and remove its state (idempotent)
#   hack/k8s/cluster.sh status   say whether it is up
#
# Environment:
#   CLUSTER_DIR            state dir (default: <repo>/.cluster): kubeconfig, logs, pids, certs
#   TRAINWRIGHT_INVENTORY  fake GPU node inventory (default: hack/k8s/inventory.yaml)
#   TRAINWRIGHT_CACHE      where hack/k8s/build.sh put the binaries (default ~/.cache/trainwright)
#   K8S_BIN                the binary dir itself, overriding the cache layout
#   REAL_NODE              1 (default): also start the real node (root, images built); 0: kwok only
#   KUEUE                  1 (default): also run Kueue (built by hack/k8s/kueue/build.sh) as a
#                          process on loopback, its webhooks registered, with the queues of
#                          hack/k8s/kueue/queues.yaml (docs/queues.md); 0: no Kueue
set -euo pipefail

K8S_VERSION=v1.34.4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${TRAINWRIGHT_CACHE:-$HOME/.cache/trainwright}
bin=${K8S_BIN:-$cache/k8s/$K8S_VERSION/bin}
state=$(realpath -m "${CLUSTER_DIR:-$repo/.cluster}")
inventory=${TRAINWRIGHT_INVENTORY:-$here/inventory.yaml}
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
ready_timeout_s=${CLUSTER_READY_TIMEOUT_S:-120}
real_node=${REAL_NODE:-1}
kueue=${KUEUE:-1}
kueue_dir=$cache/kueue/$(cat "$here/kueue/VERSION")
# Where Kueue v0.17 reads the metrics and the visibility server's tls.crt and tls.key.
kueue_cert_mounts=(/etc/kueue/metrics/certs /visibility)
# Services and pods use the shared address space (RFC 6598), so no cluster address is
# mistaken for, or sent to, a private network; DNS is 100.64.0.10 (hack/k8s/node.sh).
service_cidr=100.64.0.0/16
service_api_ip=100.64.0.1

log() { echo "cluster: $*"; }
die() {
	echo "cluster: error: $*" >&2
	exit 1
}

pick_python() {
	local candidate
	for candidate in "$repo/.venv/bin/python" python3; do
		if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import yaml' 2>/dev/null; then
			echo "$candidate"
			return 0
		fi
	done
	die "needs a Python with PyYAML to read the inventory; run 'make install' first."
}

free_port() {
	"$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

alive() {
	local pidfile=$state/$1.pid
	[ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

kubectl_() { "$bin/kubectl" --kubeconfig "$state/kubeconfig" "$@"; }

apiserver_ready() {
	local server token
	[ -s "$state/kubeconfig" ] || return 1
	server=$(awk '/server:/ {print $2; exit}' "$state/kubeconfig")
	token=$(awk '/token:/ {print $2; exit}' "$state/kubeconfig")
	curl -fs --max-time 5 --cacert "$state/pki/ca.crt" -H "Authorization: Bearer $token" \
		"$server/readyz" -o /dev/null
}

# wait_for DESCRIPTION COMPONENT COMMAND...: poll COMMAND until it succeeds; fail
# naming what did not happen (and the log to read) if COMPONENT died or time ran out.
wait_for() {
	local what=$1 component=$2
	shift 2
	local deadline=$((SECONDS + ready_timeout_s))
	until "$@"; do
		if [ -n "$component" ] && ! alive "$component"; then
			tail -n 20 "$state/$component.log" >&2 || true
			die "$component exited while waiting for $what; see $state/$component.log"
		fi
		if [ $SECONDS -ge $deadline ]; then
			die "timed out after ${ready_timeout_s}s waiting for $what; logs are in $state/"
		fi
		sleep 0.3
	done
}

start() {
	local name=$1
	shift
	"$bin/$name" "$@" >"$state/$name.log" 2>&1 &
	echo $! >"$state/$name.pid"
}

any_running() {
	local pid
	for pid in "$@"; do
		kill -0 "$pid" 2>/dev/null && return 0
	done
	return 1
}

# stop_all: SIGTERM every process of the cluster at once (the state is thrown away,
# so there is no order to keep), wait up to 5 s, then SIGKILL what is left.
stop_all() {
	local name pid pids=() names=()
	if [ -d "$state/node" ]; then bash "$here/node.sh" down || true; fi
	for name in operator kueue "${components[@]}"; do
		if alive "$name"; then
			pids+=("$(cat "$state/$name.pid")")
			names+=("$name")
		fi
	done
	if [ ${#pids[@]} -gt 0 ]; then
		kill "${pids[@]}" 2>/dev/null || true
		local i j
		for i in $(seq 1 50); do
			any_running "${pids[@]}" || break
			sleep 0.1
		done
		for j in "${!pids[@]}"; do
			if kill -0 "${pids[$j]}" 2>/dev/null; then
				log "${names[$j]} (pid ${pids[$j]}) did not stop in 5 s; killing it"
				kill -9 "${pids[$j]}" 2>/dev/null || true
			fi
		done
	fi
	for name in operator kueue "${components[@]}"; do
		rm -f "$state/$name.pid"
	done
}

cmd_down() {
	if [ ! -d "$state" ]; then
		log "not running (no $state)"
		return 0
	fi
	stop_all
	rm -rf "$state"
	log "stopped; removed $state"
}

all_alive() {
	local c
	for c in "${components[@]}"; do
		alive "$c" || return 1
	done
	[ "$kueue" != 1 ] || alive kueue
}

usage_hint() {
	cat <<EOF
cluster: up ($(kubectl_ get nodes -l type=kwok --no-headers 2>/dev/null | wc -l) fake GPU nodes, $(kubectl_ get nodes -l trainwright.io/real-node=true --no-headers 2>/dev/null | wc -l) real node); use it with
  export KUBECONFIG=$state/kubeconfig
  $bin/kubectl get nodes -L nvidia.com/gpu.product,nvidia.com/gpu.count,trainwright.io/real-node
logs: $state/*.log    stop: make cluster-down  (or hack/k8s/cluster.sh down)
EOF
	if [ "$kueue" = 1 ]; then
		echo "Kueue: LocalQueues team-a, team-b (namespace default) -> ClusterQueue trainwright; docs/queues.md"
	fi
}

# Kueue runs as a process on loopback like the control plane: its webhook serves with a
# certificate signed by the cluster's CA, and the webhook configurations and the CRDs'
# conversion webhooks point at https://127.0.0.1:<port> (hack/k8s/kueue/render.py).
start_kueue() {
	local out=$state/kueue webhook_port metrics_port visibility_port
	mkdir -p "$out/certs"
	openssl req -newkey rsa:2048 -nodes -subj /CN=kueue-webhook \
		-keyout "$out/certs/tls.key" -out "$out/certs/tls.csr" 2>/dev/null
	# The visibility server is reached through its Service's name (the aggregation layer).
	printf 'subjectAltName=IP:127.0.0.1,IP:%s,DNS:localhost,DNS:kueue-visibility-server.kueue-system.svc\n' \
		"$host_ip" >"$out/certs/san.ext"
	openssl x509 -req -in "$out/certs/tls.csr" -CA "$state/pki/ca.crt" -CAkey "$state/pki/ca.key" \
		-CAcreateserial -days 30 -extfile "$out/certs/san.ext" -out "$out/certs/tls.crt" 2>/dev/null
	chmod 600 "$out/certs/tls.key"
	webhook_port=$(free_port)
	kueue_health_port=$(free_port)
	metrics_port=$(free_port)
	visibility_port=$(free_port)
	"$python" "$here/kueue/render.py" "$kueue_dir" "$out" "$state/pki/ca.crt" "$host_ip" \
		"$webhook_port" "$kueue_health_port" "$metrics_port" "$visibility_port" "$inventory"
	# Kueue checks its CRDs when it starts, so they go first; server-side apply because
	# the Workload CRD is too large for the last-applied annotation.
	kubectl_ apply --server-side -f "$out/crds.yaml" >/dev/null
	kubectl_ wait --for condition=Established --timeout "${ready_timeout_s}s" -f "$out/crds.yaml" >/dev/null ||
		die "Kueue's CRDs were not established within ${ready_timeout_s}s"
	kubectl_ create namespace kueue-system >/dev/null
	# Without internal cert management Kueue reads its metrics and visibility server
	# certificates from fixed paths (a pod's Secret mounts); a private mount namespace binds
	# this cluster's certificate there, so clusters side by side do not share one. The
	# mount points are empty directories, made once.
	mkdir -p "${kueue_cert_mounts[@]}"
	local binds="" dir
	for dir in "${kueue_cert_mounts[@]}"; do
		binds+="mount --bind '$out/certs' '$dir' && "
	done
	unshare --mount --propagation private -- sh -c "${binds}exec \"\$0\" \"\$@\"" \
		"$kueue_dir/bin/kueue" --config "$out/config.yaml" \
		--kubeconfig "$state/kubeconfig" --visibility-server-port "$visibility_port" \
		>"$state/kueue.log" 2>&1 &
	echo $! >"$state/kueue.pid"
}

# A Job that names a LocalQueue and is created running comes back suspended: the API
# server called Kueue's mutating webhook (a server-side dry run, nothing is stored).
kueue_webhook_answers() {
	local suspended
	suspended=$(kubectl_ create --dry-run=server -o jsonpath='{.spec.suspend}' -f - 2>/dev/null <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: kueue-webhook-probe, namespace: default, labels: {kueue.x-k8s.io/queue-name: team-a}}
spec:
  suspend: false
  template:
    spec:
      restartPolicy: Never
      containers: [{name: probe, image: probe}]
EOF
	)
	[ "$suspended" = true ]
}

finish_kueue() {
	kueue_ready() { curl -fs --max-time 2 "http://127.0.0.1:$kueue_health_port/readyz" -o /dev/null; }
	wait_for "Kueue to be ready (/readyz)" kueue kueue_ready
	kubectl_ apply -f "$state/kueue/webhooks.yaml" >/dev/null
	wait_for "Kueue's webhook to suspend a queued Job" kueue kueue_webhook_answers
	kubectl_ apply -f "$state/kueue/queues.yaml" >/dev/null
	cluster_queue_active() {
		[ "$(kubectl_ get clusterqueues.kueue.x-k8s.io trainwright \
			-o jsonpath='{.status.conditions[?(@.type=="Active")].status}' 2>/dev/null)" = True ]
	}
	wait_for "ClusterQueue trainwright to be Active" kueue cluster_queue_active
	kubectl_ apply -f "$state/kueue/visibility.yaml" >/dev/null 2>&1
	visibility_available() {
		[ "$(kubectl_ get apiservice v1beta2.visibility.kueue.x-k8s.io \
			-o jsonpath='{.status.conditions[?(@.type=="Available")].status}' 2>/dev/null)" = True ]
	}
	wait_for "Kueue's visibility API (APIService v1beta2.visibility.kueue.x-k8s.io) to be Available" \
		kueue visibility_available
}

write_pki() {
	local pki=$state/pki
	mkdir -p "$pki"
	openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=trainwright-local-ca \
		-keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver \
		-keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
	printf 'subjectAltName=IP:127.0.0.1,IP:%s,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:%s\n' \
		"$host_ip" "$service_api_ip" >"$pki/san.ext"
	openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
		-CAcreateserial -days 30 -extfile "$pki/san.ext" -out "$pki/apiserver.crt" 2>/dev/null
	# The apiserver's client certificate towards kubelets (logs, exec, port-forward).
	openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
		-keyout "$pki/apiserver-kubelet-client.key" -out "$pki/apiserver-kubelet-client.csr" 2>/dev/null
	openssl x509 -req -in "$pki/apiserver-kubelet-client.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
		-CAcreateserial -days 30 -out "$pki/apiserver-kubelet-client.crt" 2>/dev/null
	# The aggregation layer's front proxy (Kueue's visibility API): its own CA, so no other
	# client certificate can pass for it.
	openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=trainwright-front-proxy-ca \
		-keyout "$pki/front-proxy-ca.key" -out "$pki/front-proxy-ca.crt" 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj /CN=front-proxy-client \
		-keyout "$pki/front-proxy-client.key" -out "$pki/front-proxy-client.csr" 2>/dev/null
	openssl x509 -req -in "$pki/front-proxy-client.csr" -CA "$pki/front-proxy-ca.crt" \
		-CAkey "$pki/front-proxy-ca.key" -CAcreateserial -days 30 -out "$pki/front-proxy-client.crt" 2>/dev/null
	openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
	openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
	# One static admin token (group system:masters); the cluster listens on loopback only.
	token=$(openssl rand -hex 16)
	echo "$token,admin,admin-uid,\"system:masters\"" >"$pki/tokens.csv"
	chmod 600 "$pki"/*.key "$pki/tokens.csv"
}

write_kubeconfig() {
	local port=$1
	cat >"$state/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: trainwright-local
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $state/pki/ca.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: trainwright-local
  context: {cluster: trainwright-local, user: admin}
current-context: trainwright-local
EOF
	chmod 600 "$state/kubeconfig"
}

cmd_up() {
	local b
	for b in "${components[@]}" kubectl; do
		[ -x "$bin/$b" ] || die "$bin/$b is missing; run 'make k8s-bin' (hack/k8s/build.sh) first."
	done
	if [ "$kueue" = 1 ]; then
		[ -x "$kueue_dir/bin/kueue" ] ||
			die "$kueue_dir/bin/kueue is missing; run 'make k8s-bin' (hack/k8s/build.sh) first, or set KUEUE=0."
		[ "$(id -u)" = 0 ] ||
			die "Kueue runs in a private mount namespace, which needs root; run as root or set KUEUE=0."
	fi
	command -v openssl >/dev/null || die "openssl is missing; run 'make system-deps'."
	python=$(pick_python)
	[ -r "$inventory" ] || die "cannot read the inventory file $inventory (TRAINWRIGHT_INVENTORY)."
	if [ -d "$state" ]; then
		if all_alive && apiserver_ready; then
			log "already up in $state"
			if [ "$real_node" = 1 ]; then bash "$here/node.sh" up; fi
			usage_hint
			return 0
		fi
		log "found a stale or partial cluster in $state; cleaning it up"
		cmd_down >/dev/null
	fi
	# Fail on a bad inventory before starting anything.
	local nodes_json
	nodes_json=$("$python" "$here/nodes.py" "$inventory") || exit 2

	local t0=$SECONDS
	mkdir -p "$state"
	# A failed start stops what it started and keeps the logs for reading.
	trap 'rc=$?; if [ $rc -ne 0 ]; then stop_all; echo "cluster: stopped the partial cluster; logs are in $state" >&2; fi' EXIT
	# Pods on the real node reach the apiserver (Service kubernetes) at this machine's address.
	host_ip=$(hostname -I | awk '{print $1}')
	[ -n "$host_ip" ] || die "cannot find this machine's IP address (hostname -I)."
	write_pki
	local etcd_port etcd_peer_port api_port
	etcd_port=$(free_port)
	etcd_peer_port=$(free_port)
	api_port=$(free_port)
	write_kubeconfig "$api_port"

	log "starting etcd on 127.0.0.1:$etcd_port"
	start etcd --name trainwright-local --data-dir "$state/etcd" \
		--listen-client-urls "http://127.0.0.1:$etcd_port" \
		--advertise-client-urls "http://127.0.0.1:$etcd_port" \
		--listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
		--initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
		--initial-cluster "trainwright-local=http://127.0.0.1:$etcd_peer_port" \
		--unsafe-no-fsync --quota-backend-bytes=$((2 * 1024 * 1024 * 1024)) \
		--log-level warn
	wait_for "etcd to be healthy" etcd curl -fs "http://127.0.0.1:$etcd_port/health" -o /dev/null

	log "starting kube-apiserver on https://127.0.0.1:$api_port"
	local pki=$state/pki
	# The default admission plugins of 1.34 stay on (NamespaceLifecycle,
	# ServiceAccount, ResourceQuota, ...); the controller-manager below creates the
	# default ServiceAccounts. CEL validation of CRDs is on by default in 1.34.
	# Aggregated APIs (Kueue's visibility API) are dialled at their Endpoints' address
	# (--enable-aggregator-routing): there is no kube-proxy without the real node.
	# APISERVER_PROFILING=true serves /debug/pprof (a CPU profile of a benchmark run).
	start kube-apiserver \
		--etcd-servers "http://127.0.0.1:$etcd_port" \
		--bind-address 0.0.0.0 --secure-port "$api_port" --advertise-address "$host_ip" \
		--tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
		--client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
		--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
		--kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
		--kubelet-client-key "$pki/apiserver-kubelet-client.key" \
		--kubelet-certificate-authority "$pki/ca.crt" \
		--kubelet-preferred-address-types InternalIP \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$pki/sa.pub" \
		--service-account-signing-key-file "$pki/sa.key" \
		--service-cluster-ip-range "$service_cidr" \
		--requestheader-client-ca-file "$pki/front-proxy-ca.crt" \
		--requestheader-allowed-names front-proxy-client \
		--requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
		--requestheader-extra-headers-prefix X-Remote-Extra- \
		--proxy-client-cert-file "$pki/front-proxy-client.crt" \
		--proxy-client-key-file "$pki/front-proxy-client.key" \
		--enable-aggregator-routing=true \
		--allow-privileged=true --profiling="${APISERVER_PROFILING:-false}" \
		--cert-dir "$state/certs"
	wait_for "kube-apiserver /readyz" kube-apiserver apiserver_ready

	log "starting kube-controller-manager, kube-scheduler and kwok"
	# Default controllers: job, garbage collector, namespace, serviceaccount(-token),
	# endpointslice, node lifecycle, podgc, ttl-after-finished, replicaset, ...
	start kube-controller-manager \
		--kubeconfig "$state/kubeconfig" --leader-elect=false \
		--bind-address 127.0.0.1 --secure-port 0 \
		--root-ca-file "$pki/ca.crt" \
		--service-account-private-key-file "$pki/sa.key" \
		--use-service-account-credentials=false \
		--kube-api-qps 100 --kube-api-burst 200 \
		--concurrent-job-syncs 20 --concurrent-gc-syncs 40
	start kube-scheduler \
		--kubeconfig "$state/kubeconfig" --leader-elect=false \
		--bind-address 127.0.0.1 --secure-port 0 \
		--kube-api-qps 100 --kube-api-burst 200
	start kwok \
		--kubeconfig "$state/kubeconfig" --config "$here/kwok.yaml" \
		--manage-all-nodes=false \
		--manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
		--node-lease-duration-seconds 40

	default_sa() { kubectl_ get serviceaccount default -n default -o name >/dev/null 2>&1; }
	wait_for "the default ServiceAccount (controller-manager)" kube-controller-manager default_sa
	if [ "$kueue" = 1 ]; then
		log "starting Kueue $(cat "$here/kueue/VERSION")"
		start_kueue
	fi

	log "registering fake GPU nodes from $inventory"
	echo "$nodes_json" | kubectl_ apply -f - >/dev/null
	local expected
	expected=$("$python" -c 'import json, sys; print(len(json.load(sys.stdin)["items"]))' <<<"$nodes_json")
	nodes_ready() {
		local ready
		ready=$(kubectl_ get nodes -l type=kwok --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l)
		[ "$ready" -ge "$expected" ]
	}
	wait_for "$expected fake nodes to be Ready (kwok)" kwok nodes_ready
	for b in kube-scheduler kube-controller-manager; do
		alive "$b" || die "$b exited; see $state/$b.log"
	done
	if [ "$kueue" = 1 ]; then
		finish_kueue
		log "Kueue ready: ClusterQueue trainwright, LocalQueues default/team-a and default/team-b"
	fi
	if [ "$real_node" = 1 ]; then
		bash "$here/node.sh" up
	fi
	trap - EXIT
	log "ready in $((SECONDS - t0)) s"
	usage_hint
}

cmd_status() {
	if [ -d "$state" ] && all_alive && apiserver_ready; then
		usage_hint
		return 0
	fi
	log "not running (state dir: $state)"
	return 1
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
	echo "usage: $0 up|down|status" >&2
	exit 2
	;;
esac
