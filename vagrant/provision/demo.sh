#!/usr/bin/env bash
# The demo workloads (vagrant/demo/workloads.yaml), applied and waited for.
set -euo pipefail

export KUBECONFIG=/etc/rancher/k3s/k3s.yaml
manifest=/opt/netprof/vagrant/demo/workloads.yaml

kubectl apply -f "$manifest"
for deployment in backlog backlog-load sink lossy steady dns-heavy; do
  kubectl -n netprof-demo rollout status "deployment/$deployment" --timeout=300s
done
kubectl -n netprof-demo get pods -o wide
echo "demo: running. In the VM: sudo netprof   (docs/vagrant.md says what to look for)"
