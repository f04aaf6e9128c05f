#!/usr/bin/env bash
# `make demo`: the whole story on the local control plane.
#   1. start the local control plane with fake GPU nodes and the real node (or reuse them)
#   2. write a tiny model and its data to the demo's volumes; install the operator (CRDs
#      included) with its Helm chart, as a user does, its pod on the real node
#   3. apply examples/ and wait
#      until every TrainingJob is past Pending, every CapacityPlan has a recommendation,
#      and the tiny model trained for real on the real node (tiny-cpu: Succeeded)
#   4. wait for its export (tiny-cpu-export) and print the model card and Ollama Modelfile
#   5. print the resources with their plans, and how to look further / stop
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CLUSTER_DIR=${CLUSTER_DIR:-$repo/.cluster}
cache=${TRAINWRIGHT_CACHE:-$HOME/.cache/trainwright}
bin=${K8S_BIN:-$cache/k8s/v1.34.4/bin}
timeout_s=${DEMO_TIMEOUT_S:-120}
# The first real run pulls the 6 GB trainer image into containerd; later ones reuse it.
train_timeout_s=${DEMO_TRAIN_TIMEOUT_S:-900}
demo_root=/var/lib/trainwright-demo
state=$CLUSTER_DIR

say() { printf '\n==> %s\n' "$*"; }
die() {
	echo "demo: error: $*" >&2
	exit 1
}

[ -x .venv/bin/trainwright ] || die ".venv/bin/trainwright is missing; run 'make install' first."

say "local control plane"
echo "(a fresh machine has already spent 25-45 min in 'make' building the binaries and"
echo " images; from here the cluster starts in about a minute, and the real training run"
echo " takes 2-3 min, plus a few minutes the first time for pulling the trainer image)"
bash hack/k8s/cluster.sh up
export KUBECONFIG=$state/kubeconfig
kubectl() { "$bin/kubectl" "$@"; }

say "a tiny model and its data for the real run ($demo_root)"
# The demo's PersistentVolumes (examples/storage.yaml) are hostPath directories on the
# real node, which is this machine; the trainer runs as UID 1000, group 0.
mkdir -p "$demo_root/datasets/tiny" "$demo_root/checkpoints"
if ! kubectl get tj tiny-cpu >/dev/null 2>&1; then
	# A new cluster: the last demo's run and export on these host volumes would be resumed
	# (a finished run) and refused (an export never overwrites one).
	rm -rf "$demo_root/checkpoints/tiny-cpu" "$demo_root/checkpoints/models/tiny-cpu" \
		"$demo_root/checkpoints/exports/tiny-cpu"
fi
if [ ! -s "$demo_root/datasets/models/tiny-llama/config.json" ]; then
	PYTHONPATH=tests .venv/bin/python -c 'import sys; from pathlib import Path; from trainer_fixtures import build_tiny_model; build_tiny_model(Path(sys.argv[1]))' \
		"$demo_root/datasets/models/tiny-llama"
fi
cp tests/data/trainer/text.txt "$demo_root/datasets/tiny/text.txt"
chown -R 1000:0 "$demo_root/datasets" "$demo_root/checkpoints"
chmod -R g+rwX "$demo_root/datasets" "$demo_root/checkpoints"
echo "tiny Llama in $demo_root/datasets/models/tiny-llama, corpus in $demo_root/datasets/tiny"

say "the operator, installed with its Helm chart, running on the real node"
# As a user installs it (README), plus what the local cluster needs: the pod tolerates the
# real node's taint (the only node whose pods run) and mounts the demo's datasets volume
# read-only, where tiny-cpu's spec.model.configPath is (the operator reads it to plan).
helm=$cache/tools/bin/helm
[ -x "$helm" ] || die "$helm is missing; run 'make tools' first."
# --take-ownership/--force-conflicts: CRDs applied earlier with kubectl (e2e, older demos).
"$helm" upgrade --install trainwright helm/trainwright --namespace trainwright-system \
	--create-namespace --take-ownership --force-conflicts \
	--set-json 'operator.tolerations=[{"key":"trainwright.io/cpu-rank","operator":"Exists","effect":"NoSchedule"}]' \
	--set-json 'operator.nodeSelector={"trainwright.io/real-node":"true"}' \
	--set-json "operator.extraVolumes=[{\"name\":\"demo-datasets\",\"hostPath\":{\"path\":\"$demo_root/datasets\",\"type\":\"Directory\"}}]" \
	--set-json "operator.extraVolumeMounts=[{\"name\":\"demo-datasets\",\"mountPath\":\"$demo_root/datasets\",\"readOnly\":true}]"
kubectl -n trainwright-system rollout status deployment/trainwright --timeout 180s
operator_alive() {
	[ "$(kubectl -n trainwright-system get deployment trainwright -o jsonpath='{.status.readyReplicas}')" = 1 ]
}

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
		kubectl -n trainwright-system logs deployment/trainwright --tail 20 >&2 || true
		die "the operator's pod is not ready (its log above)"
	fi
	if [ $SECONDS -ge $deadline ]; then
		echo "$missing" >&2
		die "after ${timeout_s}s the operator had not planned everything (above); see kubectl -n trainwright-system logs deployment/trainwright"
	fi
	sleep 1
done

say "waiting up to ${train_timeout_s}s for the real training run (tiny-cpu) on trainwright-real-0"
deadline=$((SECONDS + train_timeout_s))
last=""
while true; do
	phase=$(kubectl get tj tiny-cpu -o jsonpath='{.status.phase}')
	[ "$phase" = Succeeded ] && break
	[ "$phase" = Failed ] && { kubectl describe tj tiny-cpu >&2; die "tiny-cpu failed (above)"; }
	line="tiny-cpu: ${phase:-Pending}, step $(kubectl get tj tiny-cpu -o jsonpath='{.status.progress.step}')/60; pods: $(kubectl get pods -l trainwright.io/job=tiny-cpu --no-headers 2>/dev/null | awk '{printf "%s %s; ", $1, $3}')"
	[ "$line" != "$last" ] && echo "$line" && last=$line
	[ $SECONDS -ge $deadline ] && die "tiny-cpu did not finish in ${train_timeout_s}s; see kubectl describe tj tiny-cpu"
	sleep 3
done
echo "tiny-cpu Succeeded; its checkpoints: $(ls "$demo_root/checkpoints/tiny-cpu" | tr '\n' ' ')"

say "waiting for the export of tiny-cpu (tiny-cpu-export: merge, safetensors, GGUF, Ollama)"
deadline=$((SECONDS + train_timeout_s))
while true; do
	phase=$(kubectl get mexport tiny-cpu-export -o jsonpath='{.status.phase}')
	[ "$phase" = Succeeded ] && break
	[ "$phase" = Failed ] && { kubectl describe mexport tiny-cpu-export >&2; die "tiny-cpu-export failed (above)"; }
	[ $SECONDS -ge $deadline ] && die "tiny-cpu-export did not finish in ${train_timeout_s}s; see kubectl describe mexport tiny-cpu-export"
	sleep 3
done
kubectl get mexport tiny-cpu-export
exported=$demo_root/checkpoints/exports/tiny-cpu
say "the model card ($(find "$exported" -name README.md | head -n1))"
cat "$(find "$exported" -name README.md | head -n1)"
say "the Ollama Modelfile ($(find "$exported" -name Modelfile | head -n1))"
cat "$(find "$exported" -name Modelfile | head -n1)"

say "resources"
kubectl get nodes -L trainwright.io/real-node,nvidia.com/gpu.product
kubectl get tj,cplan -o wide
kubectl get pods -o wide -l trainwright.io/job=tiny-cpu
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
  $bin/kubectl get nodes -L nvidia.com/gpu.product,nvidia.com/gpu.count,trainwright.io/real-node
  $bin/kubectl logs -l trainwright.io/job=tiny-cpu,batch.kubernetes.io/job-completion-index=0   # the real trainer (rank 0)
  $bin/kubectl -n trainwright-system logs deployment/trainwright     # the operator
  metrics: http://$(kubectl -n trainwright-system get service trainwright-metrics -o jsonpath='{.spec.clusterIP}' 2>/dev/null || echo '<ClusterIP>'):8080/metrics
  uninstall: $cache/tools/bin/helm uninstall trainwright -n trainwright-system (CRDs and your objects stay)
Stop everything (operator included): make cluster-down
EOF
