#!/usr/bin/env bash
# A real one-node Kubernetes cluster on this machine, from upstream parts only:
# etcd + kube-apiserver (hack/envtest.sh), kube-controller-manager, kube-scheduler,
# kubelet and kube-proxy (hack/node/build.sh), containerd, runc, the CNI plugins and
# iptables (Debian packages, installed when missing), and the catalogsync and pause
# images imported into containerd (hack/image.sh): nothing is pulled.
#
#   hack/node.sh up      # prints the admin kubeconfig's path as the last line on stdout
#   hack/node.sh down    # stops everything and undoes every change to the machine
#   hack/node.sh packages  # only installs the Debian packages it needs (make setup)
#
# CATALOGSYNC_NODE_IMAGES names an image archive built before (hack/image.sh --archive);
# without it `up` builds one. Needs root (containerd, the kubelet, iptables). One node per machine: its state lives in
# ${CATALOGSYNC_NODE_DIR:-/var/lib/catalogsync-node}; `up` first tears down a node a killed
# run left behind. See tests/integration/README.md ("The real node").
#
# The network stays on this machine: the pods' bridge cni0 holds 10.244.0.1/24, where the
# API server listens (pods reach it through the `kubernetes` Service 10.96.0.1); no
# masquerade by the CNI, no DNS servers in pods, and packets entering cni0 that would
# leave by another interface are dropped.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${CATALOGSYNC_NODE_DIR:-/var/lib/catalogsync-node}"
node=catalogsync-node
bridge=cni0
gateway=10.244.0.1
pod_cidr=10.244.0.0/24
service_cidr=10.96.0.0/16
etcd_port=23790
image="${CATALOGSYNC_IMAGE:-catalogsync.local/catalogsync:test}"
pause_image="${CATALOGSYNC_PAUSE_IMAGE:-catalogsync.local/pause:1}"
# The FORWARD rule of the network hygiene; a comment makes it easy to find and remove.
forward_rule=(FORWARD -i "$bridge" ! -o "$bridge" -m comment --comment catalogsync-node -j DROP)
# Host paths the components create outside $dir (their defaults cannot all be moved).
host_dirs=(/var/lib/kubelet /var/log/containers /var/log/pods /run/netns /run/containerd
	/usr/libexec/kubernetes /var/lib/cni)
# Sysctls the kubelet and kube-proxy may set, restored at teardown.
sysctls=(kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.conf.all.route_localnet
	net.bridge.bridge-nf-call-iptables net.ipv4.ip_forward)

log() { printf 'node: %s\n' "$*" >&2; }
die() {
	printf 'node: error: %s\n' "$*" >&2
	exit 1
}

# ---------------------------------------------------------------------------- setup

install_packages() {
	local missing=()
	command -v containerd >/dev/null || missing+=(containerd)
	command -v runc >/dev/null || missing+=(runc)
	[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
	command -v iptables >/dev/null || missing+=(iptables)
	command -v conntrack >/dev/null || missing+=(conntrack)
	command -v openssl >/dev/null || missing+=(openssl)
	((${#missing[@]} == 0)) && return
	log "installing ${missing[*]} (Debian packages)"
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# cert NAME CN [O]: a client certificate signed by the cluster CA.
cert() {
	local name="$1" cn="$2" org="${3:-}" subj="/CN=$2"
	[[ -n "$org" ]] && subj="/O=$org/CN=$cn"
	openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$name.key" -subj "$subj" \
		-out "$pki/$name.csr" 2>/dev/null
	openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
		-CAcreateserial -days 30 -out "$pki/$name.crt" -extfile <(printf 'extendedKeyUsage=clientAuth\n') 2>/dev/null
}

# kubeconfig NAME: a kubeconfig for client certificate NAME.
kubeconfig() {
	cat >"$dir/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: node
  cluster: {server: "https://$gateway:6443", certificate-authority: "$pki/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$pki/$1.crt", client-key: "$pki/$1.key"}
contexts:
- name: node
  context: {cluster: node, user: $1}
current-context: node
EOF
}

make_pki() {
	pki="$dir/pki"
	mkdir -p "$pki"
	openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" \
		-days 30 -subj /CN=catalogsync-node-ca 2>/dev/null
	openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/apiserver.key" -subj /CN=kube-apiserver \
		-out "$pki/apiserver.csr" 2>/dev/null
	openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
		-days 30 -out "$pki/apiserver.crt" -extfile <(printf '%s\n' \
			"subjectAltName=IP:$gateway,IP:10.96.0.1,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
			"extendedKeyUsage=serverAuth") 2>/dev/null
	openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
	openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
	cert admin admin system:masters
	cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
	cert controller-manager system:kube-controller-manager
	cert scheduler system:kube-scheduler
	cert kubelet "system:node:$node" system:nodes
	cert proxy system:kube-proxy
	for c in admin controller-manager scheduler kubelet proxy; do kubeconfig "$c"; done
}

# start NAME CMD...: runs CMD in its own session, logging to logs/NAME.log; its pid in pids/NAME.
start() {
	local name="$1"
	shift
	# 9>&-: the children must not hold the script's lock.
	setsid "$@" >"$dir/logs/$name.log" 2>&1 </dev/null 9>&- &
	echo $! >"$dir/pids/$name"
}

# wait_for WHAT SECONDS CMD...: retries CMD until it succeeds.
wait_for() {
	local what="$1" deadline=$((SECONDS + $2))
	shift 2
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			die "$what not ready after ${SECONDS}s; logs in $dir/logs"
		fi
		sleep 0.2
	done
}

write_configs() {
	mkdir -p "$dir/cni/net.d" "$dir/containerd"
	cat >"$dir/cni/net.d/10-catalogsync.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "catalogsync-node",
  "plugins": [{
    "type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {"type": "host-local", "dataDir": "$dir/cni/ipam",
             "ranges": [[{"subnet": "$pod_cidr", "gateway": "$gateway"}]],
             "routes": [{"dst": "0.0.0.0/0"}]}
  }]
}
EOF
	cat >"$dir/containerd/config.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
[grpc]
  address = "$dir/containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  # Root here lacks CAP_SYS_RESOURCE: runc could not lower oom_score_adj (the kubelet asks
  # -998 for the sandbox) and every sandbox failed to start.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
EOF
	# No name servers: a pod's lookups fail here instead of leaving the machine.
	printf '# no DNS on the catalogsync test node\n' >"$dir/resolv.conf"
	cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $gateway
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$pki/ca.crt"}
authorization: {mode: Webhook}
containerRuntimeEndpoint: "unix://$dir/containerd/containerd.sock"
cgroupDriver: cgroupfs
failSwapOn: false
oomScoreAdj: 0
resolvConf: "$dir/resolv.conf"
clusterDomain: cluster.local
volumePluginDir: "$dir/kubelet-plugins"
podLogsDir: "$dir/pod-logs"
serializeImagePulls: false
# Nothing can be pulled again: never collect the imported images; a small disk is fine.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
# Pod status reaches the API sooner (the run latency measured in docs/benchmarks.md).
nodeStatusUpdateFrequency: 10s
EOF
	cat >"$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$dir/proxy.kubeconfig"}
hostnameOverride: $node
mode: iptables
clusterCIDR: $pod_cidr
oomScoreAdj: 0
bindAddress: $gateway
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$gateway/32"]
# Leave the machine's conntrack sysctls and route_localnet alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
EOF
}

up() {
	[[ $EUID -eq 0 ]] || die "the node needs root (containerd, kubelet, iptables)"
	install_packages
	local assets components
	assets="$("$repo/hack/envtest.sh")"
	components="$("$repo/hack/node/build.sh")"
	# An archive built before (`make setup` writes target/image/images.tar), else built now.
	local archive="${CATALOGSYNC_NODE_IMAGES:-}"
	if [[ -z "$archive" ]]; then
		archive="$repo/target/image/images.tar"
		CATALOGSYNC_IMAGE="$image" CATALOGSYNC_PAUSE_IMAGE="$pause_image" \
			"$repo/hack/image.sh" --archive "$archive" >/dev/null
	fi
	[[ -f "$archive" ]] || die "no image archive at $archive"
	down_quietly
	local t0=$SECONDS
	mkdir -p "$dir/logs" "$dir/pids" "$dir/etcd"
	# What the teardown must give back: sysctls and which host dirs existed.
	for s in "${sysctls[@]}"; do printf '%s=%s\n' "$s" "$(sysctl -n "$s" 2>/dev/null || true)"; done >"$dir/sysctls"
	for d in "${host_dirs[@]}"; do [[ -e "$d" ]] && printf '%s\n' "$d"; done >"$dir/host-dirs-before" || true
	printf '%s\n' "$components" >"$dir/components"
	make_pki
	write_configs

	log "network: bridge $bridge $gateway/24, forwarding out of it dropped"
	ip link add "$bridge" type bridge
	ip addr add "$gateway/24" dev "$bridge"
	ip link set "$bridge" up
	iptables -I "${forward_rule[@]}"

	start etcd "$assets/etcd" --data-dir "$dir/etcd" --unsafe-no-fsync \
		--listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
		--listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
		--initial-cluster default=http://127.0.0.1:23800
	wait_for etcd 30 curl -fsS "http://127.0.0.1:$etcd_port/health"
	start kube-apiserver "$assets/kube-apiserver" \
		--etcd-servers "http://127.0.0.1:$etcd_port" \
		--bind-address "$gateway" --advertise-address "$gateway" --secure-port 6443 \
		--service-cluster-ip-range "$service_cidr" \
		--tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
		--client-ca-file "$pki/ca.crt" \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
		--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
		--kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
		--kubelet-client-key "$pki/apiserver-kubelet-client.key" \
		--kubelet-preferred-address-types InternalIP
	wait_for kube-apiserver 60 curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
		"https://$gateway:6443/readyz"
	# Without --authentication-kubeconfig they log a flood of requestheader errors.
	start kube-controller-manager "$components/kube-controller-manager" \
		--kubeconfig "$dir/controller-manager.kubeconfig" --bind-address 127.0.0.1 \
		--leader-elect=false --use-service-account-credentials \
		--service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
		--cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key"
	start kube-scheduler "$components/kube-scheduler" \
		--kubeconfig "$dir/scheduler.kubeconfig" --bind-address 127.0.0.1 --leader-elect=false
	start containerd containerd --config "$dir/containerd/config.toml"
	wait_for containerd 30 ctr --address "$dir/containerd/containerd.sock" version
	ctr --address "$dir/containerd/containerd.sock" -n k8s.io images import "$archive" >&2
	start kubelet "$components/kubelet" --config "$dir/kubelet.yaml" \
		--kubeconfig "$dir/kubelet.kubeconfig" --root-dir "$dir/kubelet" --cert-dir "$dir/kubelet/pki" \
		--hostname-override "$node" --node-ip "$gateway"
	start kube-proxy "$components/kube-proxy" --config "$dir/kube-proxy.yaml"
	local kc=(kubectl --kubeconfig "$dir/admin.kubeconfig")
	wait_for "node $node" 60 "${kc[@]}" wait --for=condition=Ready "node/$node" --timeout=1s
	# Pods need their namespace's default ServiceAccount (the controller-manager makes it).
	wait_for "the default ServiceAccount" 30 "${kc[@]}" get serviceaccount default
	log "node $node Ready in $((SECONDS - t0))s (kubeconfig $dir/admin.kubeconfig)"
	printf '%s\n' "$dir/admin.kubeconfig"
}

# ---------------------------------------------------------------------------- teardown

# stop NAME: SIGTERM, then SIGKILL after 10 s; only the pid this script recorded.
stop() {
	local f="$dir/pids/$1" pid
	[[ -f "$f" ]] || return 0
	pid="$(cat "$f")"
	if kill -TERM "$pid" 2>/dev/null; then
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

running() { [[ -f "$dir/pids/$1" ]] && kill -0 "$(cat "$dir/pids/$1")" 2>/dev/null; }

# The kubelet tears pods down through the CNI (veths, addresses); stop it only after.
remove_pods() {
	running kube-apiserver && running kubelet || return 0
	local kc=(kubectl --kubeconfig "$dir/admin.kubeconfig" --request-timeout=10s)
	"${kc[@]}" delete pods --all --all-namespaces --force --grace-period=0 --wait=false >/dev/null 2>&1 || true
	local deadline=$((SECONDS + 60))
	while ((SECONDS < deadline)); do
		local left
		# Running tasks: the pause tasks go once the kubelet stopped each sandbox (CNI DEL);
		# stopped containers stay listed until the kubelet's garbage collection.
		left="$(ctr --address "$dir/containerd/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null | wc -l || true)"
		((left == 0)) && return 0
		sleep 0.5
	done
	log "tasks still running after 60s; removing them by force"
}

# Chains the kubelet, kube-proxy and the CNI plugins add, in every table.
remove_chains() {
	local ipt
	for ipt in iptables ip6tables; do
		command -v "$ipt" >/dev/null || continue
		for table in filter nat mangle; do
			# Jumps from the built-in chains first, then the chains themselves.
			"$ipt" -t "$table" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j (KUBE|CNI)-' |
				sed 's/^-A /-D /' | while read -r rule; do
				eval "$ipt -t $table $rule" 2>/dev/null || true
			done || true
			"$ipt" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE|CNI)-/ { print $2 }' |
				while read -r chain; do "$ipt" -t "$table" -F "$chain" 2>/dev/null || true; done || true
			"$ipt" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE|CNI)-/ { print $2 }' |
				while read -r chain; do "$ipt" -t "$table" -X "$chain" 2>/dev/null || true; done || true
		done
	done
}

# Removes the kubepods cgroups (depth first: a cgroup goes only once its children have).
remove_cgroups() {
	local root
	for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
		[[ -d "$root" ]] || continue
		find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
}

down() {
	[[ -d "$dir" ]] || return 0
	[[ $EUID -eq 0 ]] || die "the node needs root to tear down"
	local components
	components="$(cat "$dir/components" 2>/dev/null || true)"
	# No new pods while the old ones go.
	stop kube-controller-manager
	stop kube-scheduler
	remove_pods
	stop kubelet
	stop kube-proxy
	[[ -x "$components/kube-proxy" ]] && "$components/kube-proxy" --cleanup >/dev/null 2>&1 || true
	stop kube-apiserver
	stop etcd
	# containerd's shims outlive it; they are ours when they serve our containerd socket.
	local sock="$dir/containerd/containerd.sock"
	stop containerd
	local pid
	for pid in $(pgrep -f containerd-shim 2>/dev/null || true); do
		tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$sock" && kill -KILL "$pid" 2>/dev/null || true
	done
	sleep 0.5
	# Mounts under our dirs, deepest first: rootfs overlays, pod volumes, netns, shm.
	awk '{ print $2 }' /proc/mounts | grep -E "^($dir|/run/netns/cni-|/run/containerd/)" | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
	remove_cgroups
	ip link del "$bridge" 2>/dev/null || true
	while iptables -D "${forward_rule[@]}" 2>/dev/null; do :; done
	remove_chains
	if [[ -f "$dir/sysctls" ]]; then
		local kv
		while IFS= read -r kv; do
			[[ -n "${kv#*=}" ]] && sysctl -qw "$kv" 2>/dev/null || true
		done <"$dir/sysctls"
	fi
	local d
	for d in "${host_dirs[@]}"; do
		grep -qxF "$d" "$dir/host-dirs-before" 2>/dev/null || rm -rf "$d"
	done
	rm -rf "$dir"
	log "torn down"
}

down_quietly() {
	if [[ -d "$dir" ]]; then
		log "tearing down the node a previous run left in $dir"
		down
	fi
}

# One node per machine: `up` and `down` never run at once.
mkdir -p "$(dirname "$dir")"
exec 9>"$(dirname "$dir")/.catalogsync-node.lock"
flock 9
case "${1:-}" in
up) up ;;
down) down ;;
packages) install_packages ;;
*) die "usage: hack/node.sh up|down|packages" ;;
esac
