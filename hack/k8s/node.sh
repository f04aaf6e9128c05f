#!/usr/bin/env bash
# The real worker node of the local cluster: containerd + runc + CNI bridge from Debian, a
# kubelet, kube-proxy and CoreDNS built by hack/k8s/build.sh, and the images
# hack/images/build.sh built, imported into containerd. hack/k8s/cluster.sh calls it.
#
#   hack/k8s/node.sh up      after the control plane is up (needs CLUSTER_DIR's pki/, kubeconfig)
#   hack/k8s/node.sh down    delete its pods, stop every process it started, unmount, clean up
#
# One real node per machine (the kubelet's port, the bridge and the cgroup root are
# machine-wide); a second cluster asking for one is refused with the owner's state dir.
# The node is named trainwright-real-0, labelled trainwright.io/real-node=true and
# trainwright.io/device.product=Trainwright-CPU, advertises REAL_NODE_RANKS (default 2)
# `trainwright.io/cpu-rank`: the trainer's CPU device (catalog GPU type "CPU"), one per
# torchrun rank, and is tainted trainwright.io/cpu-rank=present:NoSchedule, as GPU node
# pools are tainted nvidia.com/gpu, so only pods that tolerate it (the trainer pods
# that request the device, the operator's when told to) land there.
set -euo pipefail

K8S_VERSION=v1.34.4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${TRAINWRIGHT_CACHE:-$HOME/.cache/trainwright}
bin=${K8S_BIN:-$cache/k8s/$K8S_VERSION/bin}
state=$(realpath -m "${CLUSTER_DIR:-$repo/.cluster}")
node=$state/node
images=$cache/images/oci
croot=$cache/containerd
node_name=trainwright-real-0
ranks=${REAL_NODE_RANKS:-2}
ready_timeout_s=${REAL_NODE_READY_TIMEOUT_S:-120}
owner_file=/run/trainwright-real-node.owner
cgroup_root=trainwright
bridge=tw0
pod_cidr=100.65.0.0/16
node_pod_subnet=100.65.0.0/24
service_cidr=100.64.0.0/16
dns_ip=100.64.0.10
dns_port=1053
rank_resource=trainwright.io/cpu-rank
sock=$node/containerd/containerd.sock

log() { echo "node: $*"; }
die() {
	echo "node: error: $*" >&2
	exit 1
}
kubectl_() { "$bin/kubectl" --kubeconfig "$state/kubeconfig" "$@"; }
alive() { [ -s "$node/$1.pid" ] && kill -0 "$(cat "$node/$1.pid")" 2>/dev/null; }
start() {
	local name=$1
	shift
	"$@" >"$node/$name.log" 2>&1 &
	echo $! >"$node/$name.pid"
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_for WHAT PROCESS TIMEOUT COMMAND...: poll; on death or timeout, show the process's
# last error lines (klog E-lines first) and fail naming WHAT.
wait_for() {
	local what=$1 proc=$2 timeout=$3
	shift 3
	local deadline=$((SECONDS + timeout))
	until "$@"; do
		if ! alive "$proc" || [ $SECONDS -ge $deadline ]; then
			echo "node: last errors of $proc ($node/$proc.log):" >&2
			{ grep -E '^E[0-9]{4}|level=(error|fatal)|Error|error' "$node/$proc.log" || tail -n 20 "$node/$proc.log"; } |
				tail -n 15 >&2 || true
			if alive "$proc"; then die "timed out after ${timeout}s waiting for $what"; fi
			die "$proc exited while waiting for $what"
		fi
		sleep 0.5
	done
}

preflight() {
	[ "$(id -u)" -eq 0 ] || die "the real node needs root (containerd, the kubelet's mounts and cgroups)."
	local b
	for b in kubelet kube-proxy coredns kubectl; do
		[ -x "$bin/$b" ] || die "$bin/$b is missing; run 'make k8s-bin' (hack/k8s/build.sh) first."
	done
	for b in containerd containerd-shim-runc-v2 runc ctr iptables; do
		command -v "$b" >/dev/null || die "$b is missing; run 'make system-deps' (Debian's containerd, runc, iptables)."
	done
	[ -x /usr/lib/cni/bridge ] || die "the CNI plugins are missing (/usr/lib/cni/bridge); run 'make system-deps'."
	local image
	for image in pause operator trainer; do
		[ -s "$images/$image/index.json" ] || die "the $image image is not built ($images/$image); run 'make images'."
	done
	[ -s "$state/pki/ca.key" ] || die "no control plane in $state; start it with 'make cluster-up'."
	if [ -s "$owner_file" ] && [ "$(cat "$owner_file")" != "$state" ]; then
		local other
		other=$(cat "$owner_file")
		if [ -s "$other/node/kubelet.pid" ] && kill -0 "$(cat "$other/node/kubelet.pid")" 2>/dev/null; then
			die "the real node is already running for the cluster in $other (one per machine); stop it with 'CLUSTER_DIR=$other make cluster-down', or start this cluster with REAL_NODE=0."
		fi
	fi
}

node_ip() { hostname -I | awk '{print $1}'; }

# sign NAME SUBJECT [SAN]: a key and certificate signed by the cluster CA.
sign() {
	local name=$1 subject=$2 san=${3:-} pki=$node/pki
	openssl req -newkey rsa:2048 -nodes -subj "$subject" -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
	if [ -n "$san" ]; then
		printf 'subjectAltName=%s\n' "$san" >"$pki/$name.ext"
		openssl x509 -req -in "$pki/$name.csr" -CA "$state/pki/ca.crt" -CAkey "$state/pki/ca.key" \
			-CAcreateserial -days 30 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
	else
		openssl x509 -req -in "$pki/$name.csr" -CA "$state/pki/ca.crt" -CAkey "$state/pki/ca.key" \
			-CAcreateserial -days 30 -out "$pki/$name.crt" 2>/dev/null
	fi
	chmod 600 "$pki/$name.key"
}

# kubeconfig_for NAME: a kubeconfig that authenticates with NAME's client certificate.
kubeconfig_for() {
	local name=$1 server
	server=$(awk '/server:/ {print $2; exit}' "$state/kubeconfig")
	cat >"$node/$name.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: trainwright-local
  cluster: {server: $server, certificate-authority: $state/pki/ca.crt}
users:
- name: $name
  user: {client-certificate: $node/pki/$name.crt, client-key: $node/pki/$name.key}
contexts:
- name: trainwright-local
  context: {cluster: trainwright-local, user: $name}
current-context: trainwright-local
KC
	chmod 600 "$node/$name.kubeconfig"
}

# import_images: the images hack/images/build.sh wrote, into containerd's k8s.io namespace
# (where the kubelet looks), each only when containerd lacks that digest under that name.
# The pods use them with imagePullPolicy IfNotPresent, under their usual names.
import_images() {
	local image name digest have t0
	for image in pause operator trainer; do
		name=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["manifests"][0]; print(m["annotations"]["io.containerd.image.name"], m["digest"])' \
			"$images/$image/index.json")
		digest=${name#* }
		name=${name% *}
		have=$(ctr --address "$sock" -n k8s.io images ls "name==$name" 2>/dev/null | awk 'NR == 2 {print $3}')
		if [ "$have" = "$digest" ]; then
			log "containerd has $name ($digest)"
			continue
		fi
		log "importing $name ($(du -sh --apparent-size "$images/$image" | cut -f1); the trainer's 6 GB take 1-3 min the first time)"
		t0=$SECONDS
		if ! tar -C "$images/$image" -cf - . |
			ctr --address "$sock" -n k8s.io images import --snapshotter overlayfs - >>"$node/images-import.log" 2>&1; then
			die "importing $name into containerd failed; see $node/images-import.log"
		fi
		log "  imported in $((SECONDS - t0)) s"
	done
	# Nothing is pulled from a registry: a missing image fails at once, never leaves the host.
	local host
	for host in docker.io registry.k8s.io; do
		mkdir -p "$node/certs.d/$host"
		printf 'server = "http://127.0.0.1:9"\n' >"$node/certs.d/$host/hosts.toml"
	done
}

start_containerd() {
	mkdir -p "$node/containerd" "$croot" "$node/cni" "$node/cni-ipam"
	cat >"$node/containerd.toml" <<TOML
version = 2
root = "$croot/root"
state = "$node/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$node/containerd/containerd.sock"
[ttrpc]
  address = "$node/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$croot/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10.1"
  # The sandbox lacks CAP_SYS_RESOURCE: without this every pod sandbox fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$node/certs.d"
TOML
	cat >"$node/cni/10-trainwright.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "trainwright", "plugins": [
  {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$node/cni-ipam",
            "ranges": [[{"subnet": "$node_pod_subnet"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
JSON
	start containerd containerd --config "$node/containerd.toml"
	containerd_up() { ctr --address "$sock" version >/dev/null 2>&1; }
	wait_for "containerd's socket" containerd 30 containerd_up
}

kubelet_config() {
	local ip=$1
	mkdir -p "$node/kubelet" "$node/pod-logs"
	printf '# pods with dnsPolicy Default: no upstream resolver on this machine\n' >"$node/resolv.conf"
	cat >"$node/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroups are v1 here and there is no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$cgroup_root
containerRuntimeEndpoint: unix://$node/containerd/containerd.sock
address: $ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
tlsCertFile: $node/pki/kubelet-serving.crt
tlsPrivateKeyFile: $node/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $state/pki/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [$dns_ip]
clusterDomain: cluster.local
resolvConf: $node/resolv.conf
podLogsDir: $node/pod-logs
failSwapOn: false
maxPods: 40
serializeImagePulls: false
runtimeRequestTimeout: 15m
# Images are imported, never pulled (no registry is reachable): an image the kubelet's GC
# removed could not come back until the next cluster-up, so GC is off (100 disables it).
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 256Mi, nodefs.available: 5%, imagefs.available: 5%}
registerWithTaints:
- {key: trainwright.io/cpu-rank, value: present, effect: NoSchedule}
YAML
}

cgroups_create() {
	local hierarchy
	for hierarchy in /sys/fs/cgroup/*/; do
		[ -d "$hierarchy" ] && [ "$(basename "$hierarchy")" != unified ] || continue
		mkdir -p "$hierarchy$cgroup_root"
	done
}

start_kubelet() {
	local ip=$1
	kubelet_config "$ip"
	cgroups_create
	start kubelet "$bin/kubelet" --config "$node/kubelet.yaml" --kubeconfig "$node/kubelet.kubeconfig" \
		--root-dir "$node/kubelet" --hostname-override "$node_name" --node-ip "$ip" \
		--node-labels "trainwright.io/real-node=true,trainwright.io/device.product=Trainwright-CPU" --v 1
	node_ready() {
		[ "$(kubectl_ get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
	}
	wait_for "node $node_name to be Ready (kubelet)" kubelet "$ready_timeout_s" node_ready
	# An extended resource the kubelet keeps in status once set (Kubernetes docs, "Advertise
	# Extended Resources for a Node"): one per trainer rank this node can run on its CPU.
	kubectl_ patch node "$node_name" --subresource=status --type=json \
		-p "[{\"op\": \"add\", \"path\": \"/status/capacity/${rank_resource/\//~1}\", \"value\": \"$ranks\"}]" >/dev/null
	# Planning reads allocatable, which the kubelet derives from capacity at its next
	# status update: wait for it, so nothing planned right after cluster-up misses the node.
	ranks_allocatable() {
		[ "$(kubectl_ get node "$node_name" -o jsonpath="{.status.allocatable.${rank_resource//./\\.}}" 2>/dev/null)" = "$ranks" ]
	}
	wait_for "$ranks $rank_resource in the node's allocatable" kubelet 60 ranks_allocatable
}

start_kube_proxy() {
	start kube-proxy "$bin/kube-proxy" --kubeconfig "$node/kube-proxy.kubeconfig" \
		--hostname-override "$node_name" --proxy-mode iptables --cluster-cidr "$pod_cidr" \
		--metrics-bind-address "127.0.0.1:$(free_port)" --healthz-bind-address "127.0.0.1:$(free_port)" \
		--conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0 \
		--iptables-localhost-nodeports=false
	# Pods may reach this machine and each other, nothing beyond it.
	iptables -N TRAINWRIGHT-EGRESS 2>/dev/null || iptables -F TRAINWRIGHT-EGRESS
	iptables -A TRAINWRIGHT-EGRESS -s "$pod_cidr" -d "$pod_cidr" -j RETURN
	iptables -A TRAINWRIGHT-EGRESS -s "$pod_cidr" -j DROP
	iptables -C FORWARD -j TRAINWRIGHT-EGRESS 2>/dev/null || iptables -I FORWARD 1 -j TRAINWRIGHT-EGRESS
}

start_coredns() {
	local ip=$1
	kubectl_ apply -f - >/dev/null <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "trainwright:coredns"}
rules:
- {apiGroups: [""], resources: [services, pods, namespaces], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "trainwright:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "trainwright:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "trainwright:coredns"}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $dns_ip
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: $dns_port}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: $dns_port}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-host
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: trainwright.io-node-sh}
addressType: IPv4
endpoints: [{addresses: ["$ip"], conditions: {ready: true}}]
ports:
- {name: dns, port: $dns_port, protocol: UDP}
- {name: dns-tcp, port: $dns_port, protocol: TCP}
YAML
	local health_port
	health_port=$(free_port)
	cat >"$node/Corefile" <<COREFILE
.:$dns_port {
    bind $ip
    errors
    health 127.0.0.1:$health_port
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $node/coredns.kubeconfig trainwright-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
COREFILE
	start coredns "$bin/coredns" -conf "$node/Corefile"
	wait_for "CoreDNS's health endpoint" coredns 30 curl -fs "http://127.0.0.1:$health_port/health" -o /dev/null
}

cmd_up() {
	preflight
	if alive kubelet; then
		log "already up ($node_name, state in $node); importing images that changed"
		import_images
		return 0
	fi
	clean_stale
	local t0=$SECONDS ip
	ip=$(node_ip)
	[ -n "$ip" ] || die "cannot find this machine's IP address (hostname -I); the kubelet refuses loopback."
	mkdir -p "$node/pki"
	echo "$state" >"$owner_file"
	trap 'rc=$?; if [ $rc -ne 0 ]; then echo "node: stopping the partial node; logs are in $node" >&2; cmd_down >/dev/null 2>&1 || true; fi' EXIT
	sign kubelet "/O=system:nodes/CN=system:node:$node_name"
	sign kubelet-serving "/CN=$node_name" "IP:$ip,DNS:$node_name"
	sign kube-proxy "/CN=system:kube-proxy"
	sign coredns "/CN=trainwright:coredns"
	kubeconfig_for kubelet
	kubeconfig_for kube-proxy
	kubeconfig_for coredns
	log "starting containerd (root $croot, state $node/containerd)"
	start_containerd
	import_images
	log "starting the kubelet on $ip as $node_name"
	start_kubelet "$ip"
	log "starting kube-proxy and CoreDNS ($dns_ip -> $ip:$dns_port)"
	start_kube_proxy
	start_coredns "$ip"
	trap - EXIT
	log "ready in $((SECONDS - t0)) s: $node_name with $ranks $rank_resource, taint $rank_resource=present:NoSchedule"
}

# --- down ------------------------------------------------------------------------------
stop_pid() {
	local name=$1 pid i
	alive "$name" || { rm -f "$node/$name.pid"; return 0; }
	pid=$(cat "$node/$name.pid")
	kill "$pid" 2>/dev/null || true
	for i in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
	rm -f "$node/$name.pid"
}

delete_pods() {
	# Let the kubelet tear its pods down (containers, sandboxes, CNI) while it still runs.
	[ -s "$state/kubeconfig" ] && alive kubelet || return 0
	kubectl_ delete pods -A --field-selector "spec.nodeName=$node_name" --grace-period 0 --force \
		--wait=false >/dev/null 2>&1 || return 0
	local i
	for i in $(seq 1 60); do
		[ -z "$(ctr --address "$node/containerd/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null)" ] && return 0
		sleep 0.5
	done
}

kill_containers() {
	local sock=$node/containerd/containerd.sock c
	alive containerd || return 0
	for c in $(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
		ctr --address "$sock" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
	done
	sleep 0.5
	for c in $(ctr --address "$sock" -n k8s.io containers ls -q 2>/dev/null); do
		ctr --address "$sock" -n k8s.io tasks delete -f "$c" >/dev/null 2>&1 || true
		ctr --address "$sock" -n k8s.io containers delete "$c" >/dev/null 2>&1 || true
	done
}

kill_shims() {
	# containerd's shims outlive it by design; ours name our socket on their command line.
	local pid
	for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $node/containerd/containerd.sock" || true); do
		kill -9 "$pid" 2>/dev/null || true
	done
}

unmount_under() {
	local prefix=$1 mnt
	# Deepest first; lazily, so a mount still busy goes once its last user does.
	# (awk, not grep: no match is not a failure under pipefail)
	awk -v p="$prefix" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r mnt; do
		umount -l "$mnt" 2>/dev/null || true
	done
}

remove_cgroups() {
	# A cgroup goes once its last process has exited; killed containers take a moment.
	local hierarchy attempt left
	for attempt in 1 2 3 4 5 6 7 8 9 10; do
		left=0
		for hierarchy in /sys/fs/cgroup/*/; do
			[ -d "$hierarchy$cgroup_root" ] || continue
			find "$hierarchy$cgroup_root" -depth -type d -exec rmdir {} \; 2>/dev/null || true
			[ -d "$hierarchy$cgroup_root" ] && left=1
		done
		[ "$left" = 0 ] && return 0
		sleep 0.5
	done
	log "some cgroups under /$cgroup_root are still busy; the next node start reuses them"
}

cmd_down() {
	[ -d "$node" ] || return 0
	delete_pods
	stop_pid kubelet
	kill_containers
	stop_pid containerd
	kill_shims
	stop_pid coredns
	stop_pid kube-proxy
	clean_host
	if [ -s "$owner_file" ] && [ "$(cat "$owner_file")" = "$state" ]; then rm -f "$owner_file"; fi
	log "stopped $node_name"
}

# clean_host: what a node leaves on the machine besides its processes: Service rules, the
# egress rule, pod network namespaces, the bridge, mounts under its dirs, its cgroups.
clean_host() {
	if [ -x "$bin/kube-proxy" ]; then "$bin/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
	if iptables -C FORWARD -j TRAINWRIGHT-EGRESS 2>/dev/null; then iptables -D FORWARD -j TRAINWRIGHT-EGRESS; fi
	iptables -F TRAINWRIGHT-EGRESS 2>/dev/null && iptables -X TRAINWRIGHT-EGRESS 2>/dev/null || true
	local netns
	for netns in /var/run/netns/cni-*; do
		[ -e "$netns" ] || continue
		ip netns delete "$(basename "$netns")" 2>/dev/null || true
	done
	ip link delete "$bridge" 2>/dev/null || true
	unmount_under "$node"
	unmount_under "$croot/root/io.containerd.grpc.v1.cri/sandboxes"
	unmount_under "$croot/root/io.containerd.runtime.v2.task"
	remove_cgroups
}

# clean_stale: a node whose processes died without `down` (a killed session, a crash)
# left all of the above; kill what still runs from its state dir, then clean the host.
clean_stale() {
	local old pid
	[ -s "$owner_file" ] || return 0
	old=$(cat "$owner_file")
	if [ -s "$old/node/kubelet.pid" ] && kill -0 "$(cat "$old/node/kubelet.pid")" 2>/dev/null; then
		return 0 # alive: preflight refused it already, or it is ours
	fi
	log "cleaning up after a real node that was not stopped (state dir $old)"
	for pid in $(pgrep -f -- "$old/node/" || true); do
		kill -9 "$pid" 2>/dev/null || true
	done
	node=$old/node clean_host
	rm -f "$owner_file"
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
*)
	echo "usage: $0 up|down" >&2
	exit 2
	;;
esac
