#!/usr/bin/env bash
# A single-node k3s. kubelet may set the two listen-queue sysctls netprof's fixes propose in a
# pod spec (they are namespaced but not in Kubernetes' "safe" set). Traefik is left out: the
# demo needs no ingress.
set -euo pipefail

: "${K3S_VERSION:?set by the Vagrantfile}"
installer=/usr/local/share/k3s-install.sh

if ! command -v k3s >/dev/null || ! k3s --version | grep -qF "${K3S_VERSION}"; then
  mkdir -p "$(dirname "$installer")"
  curl -sfL --retry 3 -o "$installer" https://get.k3s.io
  INSTALL_K3S_VERSION="$K3S_VERSION" \
  INSTALL_K3S_EXEC="server --write-kubeconfig-mode=644 --disable=traefik --kubelet-arg=allowed-unsafe-sysctls=net.core.somaxconn,net.ipv4.tcp_max_syn_backlog" \
    sh "$installer"
fi

export KUBECONFIG=/etc/rancher/k3s/k3s.yaml
for _ in $(seq 1 90); do
  if kubectl get nodes 2>/dev/null | grep -q " Ready"; then
    break
  fi
  sleep 2
done
kubectl wait --for=condition=Ready node --all --timeout=60s
kubectl -n kube-system rollout status deployment/coredns --timeout=180s

# kubectl for the vagrant user without sudo.
grep -q KUBECONFIG /home/vagrant/.profile 2>/dev/null \
  || echo 'export KUBECONFIG=/etc/rancher/k3s/k3s.yaml' >> /home/vagrant/.profile
