#!/usr/bin/env bash
# `make demo`: the whole story on the local control plane.
#   1. start the local control plane with fake GPU nodes (or reuse a running one)
#   2. install the CRDs, start the operator in the background
#   3. apply examples/ and wait until every TrainingJob is past Pending and every
#      CapacityPlan has a recommendation
#   4. print the resources with their plans, and how to look further / stop
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CLUSTER_DIR=${CLUSTER_DIR:-$repo/.cluster}
cache=${TRAINWRIGHT_CACHE:-$HOME/.cache/trainwright}
bin=${K8S_BIN:-$cache/k8s/v1.34.4/bin}
timeout_s=${DEMO_TIMEOUT_S:-120}
state=$CLUSTER_DIR

say() { printf '\n==> %s\n' "$*"; }
die() {
	echo "demo: error: $*" >&2
	exit 1
}

[ -x .venv/bin/trainwright ] || die ".venv/bin/trainwright is missing; run 'make install' first."

say "local control plane"
bash hack/k8s/cluster.sh up
export KUBECONFIG=$state/kubeconfig
kubectl() { "$bin/kubectl" "$@"; }

say "CRDs"
kubectl apply -f crds/
kubectl wait --for condition=Established --timeout 60s -f crds/ >/dev/null

say "operator"
operator_alive() { [ -s "$state/operator.pid" ] && kill -0 "$(cat "$state/operator.pid")" 2>/dev/null; }
if operator_alive; then
	echo "operator already running (pid $(cat "$state/operator.pid"))"
	metrics_port=$(cat "$state/operator.metrics-port" 2>/dev/null || echo "?")
else
	metrics_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	nohup .venv/bin/trainwright operator --all-namespaces --metrics-port "$metrics_port" \
		>"$state/operator.log" 2>&1 &
	echo $! >"$state/operator.pid"
	echo "$metrics_port" >"$state/operator.metrics-port"
	echo "started operator (pid $(cat "$state/operator.pid")), log: $state/operator.log"
fi

say "examples"
kubectl apply -f examples/

say "waiting up to ${timeout_s}s for the operator to plan every example"
# Prints what has not happened yet, one line each; nothing once everything has.
pending_work() {
	local name phase rec
	for name in $(kubectl get tj -o jsonpath='{.items[*].metadata.name}'); do
		phase=$(kubectl get tj "$name" -o jsonpath='{.status.phase}')
		case "$phase" in
		"" | Pending) echo "TrainingJob $name has phase '${phase:-none}', not yet past Pending" ;;
		esac
	done
	for name in $(kubectl get cplan -o jsonpath='{.items[*].metadata.name}'); do
		rec=$(kubectl get cplan "$name" -o jsonpath='{.status.recommendation}')
		[ -n "$rec" ] || echo "CapacityPlan $name has no status.recommendation"
	done
}
deadline=$((SECONDS + timeout_s))
while true; do
	missing=$(pending_work)
	[ -z "$missing" ] && break
	if ! operator_alive; then
		tail -n 20 "$state/operator.log" >&2 || true
		die "the operator exited; see $state/operator.log"
	fi
	if [ $SECONDS -ge $deadline ]; then
		echo "$missing" >&2
		die "after ${timeout_s}s the operator had not planned everything (above); see $state/operator.log"
	fi
	sleep 1
done

say "resources"
kubectl get tj,cplan -o wide
for name in $(kubectl get tj -o jsonpath='{.items[*].metadata.name}'); do
	say "TrainingJob $name: status.plan"
	kubectl get tj "$name" -o jsonpath='{.status.plan}' | python3 -m json.tool
done
for name in $(kubectl get cplan -o jsonpath='{.items[*].metadata.name}'); do
	say "CapacityPlan $name: status.recommendation"
	kubectl get cplan "$name" -o jsonpath='{.status.recommendation}' | python3 -m json.tool
done

cat <<EOF

Look further:
  export KUBECONFIG=$KUBECONFIG
  $bin/kubectl get tj,cplan,jobs,pods -o wide
  $bin/kubectl describe tj llama8b-lora
  $bin/kubectl get nodes -L nvidia.com/gpu.product,nvidia.com/gpu.count
  operator log: $state/operator.log    metrics: http://127.0.0.1:$metrics_port/metrics
Stop everything (operator included): make cluster-down
EOF
