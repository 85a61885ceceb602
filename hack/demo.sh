#!/usr/bin/env bash
# `make demo`: the whole product on this machine, from a fresh clone.
#
# Builds what is missing (kube-apiserver + etcd from pinned Go modules, the SCIM
# servers' virtualenv, catalogsync), starts `catalogsync dev up` (local control
# plane with the CRDs, SCIM servers for an identity domain and two seeded apps,
# the controller, the dev job runner), applies examples/ with kubectl, requests a
# synchronization of both apps and shows the runs until their outcome.
#
#   hack/demo.sh            # run, show, clean up
#   hack/demo.sh --keep     # keep everything running until Ctrl-C
#   hack/demo.sh --node     # the same story on a real one-node cluster (hack/node.sh, root):
#                           # deploy/ installed as shipped, each run a Job pod
#
# Every process it starts is stopped on exit, on error and on Ctrl-C.
set -euo pipefail

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
keep=false
node=false
make_target=demo
for arg in "$@"; do
	case "$arg" in
	--keep) keep=true ;;
	--node) node=true make_target=demo-node ;;
	-h | --help) usage; exit 0 ;;
	*) echo "unknown argument: $arg" >&2; usage >&2; exit 2 ;;
	esac
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
demo="${CATALOGSYNC_DEMO_DIR:-$repo/.demo}"
mkdir -p "$demo"
started=$SECONDS

if [[ -t 1 ]]; then bold=$'\033[1m' dim=$'\033[2m' red=$'\033[31m' off=$'\033[0m'; else bold='' dim='' red='' off=''; fi
heading() { printf '\n%s== %s%s\n' "$bold" "$*" "$off"; }
say() { printf '   %s\n' "$*"; }
show() { printf '%s   $ %s%s\n' "$dim" "$*" "$off"; }
die() { printf '%serror:%s %s\n' "$red" "$off" "$*" >&2; exit 1; }
elapsed() { local s=$(($1)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

# --- cleanup: every child of this script, on any exit ------------------------
pids=()
node_up=false
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if ((${#pids[@]})); then
		printf '\n%s== stopping everything the demo started%s\n' "$bold" "$off"
		for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
		for pid in "${pids[@]}"; do
			for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
			kill -KILL "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
		done
		say "stopped (logs kept in $demo)"
	fi
	if $node_up; then
		printf '%s== tearing the node down%s\n' "$bold" "$off"
		hack/node.sh down 2>&1 | sed 's/^/   /'
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a long command with its output in a log, printing a progress line meanwhile.
progress() {
	local label="$1" log="$2"
	shift 2
	"$@" >"$log" 2>&1 &
	local pid=$! t0=$SECONDS last=-1
	pids+=("$pid")
	while kill -0 "$pid" 2>/dev/null; do
		local t=$((SECONDS - t0))
		if [[ -t 1 ]]; then
			printf '\r   %s… %s ' "$label" "$(elapsed "$t")"
		elif ((t / 20 != last)); then
			last=$((t / 20))
			((t > 0)) && printf '   %s… %s\n' "$label" "$(elapsed "$t")"
		fi
		sleep 1
	done
	local rc=0
	wait "$pid" || rc=$?
	pids=("${pids[@]/$pid/}")
	pids=(${pids[@]+"${pids[@]}"})
	[[ -t 1 ]] && printf '\r\033[K'
	if ((rc != 0)); then
		tail -n 30 "$log" >&2
		die "$label failed (exit $rc); full log: $log"
	fi
	say "$label: done in $(elapsed $((SECONDS - t0)))"
}

# --- 1. tools ------------------------------------------------------------------
heading "1. Checking the tools"
missing=()
for tool in cargo python3 kubectl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ! command -v go >/dev/null && [[ -z "${KUBEBUILDER_ASSETS:-}" ]] &&
	! ls "${CATALOGSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/catalogsync}"/envtest/*/kube-apiserver >/dev/null 2>&1; then
	missing+=("go (>= 1.24, to build kube-apiserver and etcd once)")
fi
((${#missing[@]} == 0)) || die "missing: ${missing[*]}"
say "cargo, python3, kubectl$(command -v go >/dev/null && echo ", go"): found"

# --- 2. builds -------------------------------------------------------------------
heading "2. Building what is missing (cached afterwards)"
if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/kube-apiserver" && -x "$KUBEBUILDER_ASSETS/etcd" ]]; then
	say "control plane binaries: $KUBEBUILDER_ASSETS"
else
	progress "building kube-apiserver and etcd (first run only, 6-12 min)" "$demo/envtest.log" hack/envtest.sh
	KUBEBUILDER_ASSETS="$(tail -n 1 "$demo/envtest.log")"
	export KUBEBUILDER_ASSETS
fi
progress "preparing the SCIM servers (scim2-server in a virtualenv)" "$demo/scim-setup.log" hack/scim/setup.sh
python="$(tail -n 1 "$demo/scim-setup.log")"
progress "building catalogsync (first run 3-5 min)" "$demo/cargo.log" cargo build --locked --features dev
target="${CARGO_TARGET_DIR:-$repo/target}"
# A private copy: a shared target dir may be rebuilt by someone else meanwhile.
mkdir -p "$demo/bin"
cp "$target/debug/catalogsync" "$demo/bin/catalogsync"
bin="$demo/bin/catalogsync"

# --- 3. dev up -------------------------------------------------------------------
if $node; then
	heading "3. The node: etcd, kube-apiserver, controller-manager, scheduler, containerd, kubelet, kube-proxy"
	progress "building the node's components (first run only, about 6 min)" "$demo/node-build.log" hack/node/build.sh
	progress "building the release image (static binary, FROM scratch; first run 3-5 min)" "$demo/image.log" \
		hack/image.sh --archive target/image/images.tar
	node_up=true
	progress "bringing the node up" "$demo/node.log" env CATALOGSYNC_NODE_IMAGES="$repo/target/image/images.tar" hack/node.sh up
	node_kubeconfig="$(tail -n 1 "$demo/node.log")"
	grep -E '^node: ' "$demo/node.log" | sed 's/^/   /'
	mkdir -p "$demo/install"
	printf 'resources: [%s/deploy]\nimages:\n- name: catalogsync\n  newName: catalogsync.local/catalogsync\n  newTag: test\n' \
		"$(realpath --relative-to="$demo/install" "$repo")" >"$demo/install/kustomization.yaml"
	show "kubectl apply -k deploy/ (image catalogsync.local/catalogsync:test, set by kustomize)"
	command kubectl --kubeconfig "$node_kubeconfig" apply -k "$demo/install" | sed 's/^/   /'
	command kubectl --kubeconfig "$node_kubeconfig" -n catalogsync-system rollout status \
		deployment/catalogsync-controller --timeout=180s | sed 's/^/   /'
	heading "3b. Starting the SCIM servers on the node's bridge address"
	devup_args=(--node "$node_kubeconfig")
else
	heading "3. Starting the control plane, SCIM servers, controller and job runner"
	devup_args=()
fi
show "catalogsync dev up --state-dir $demo/run ${devup_args[*]}"
# Empty before starting: the redirection below happens in the child, after we read on.
rm -f "$demo/run/env"
: >"$demo/dev-up.log"
"$bin" dev up --state-dir "$demo/run" --repo "$repo" --scim-python "$python" ${devup_args[@]+"${devup_args[@]}"} >"$demo/dev-up.log" 2>&1 &
devup=$!
pids+=("$devup")
shown=0
until [[ -f "$demo/run/env" ]]; do
	kill -0 "$devup" 2>/dev/null || { cat "$demo/dev-up.log" >&2; die "dev up exited; log: $demo/dev-up.log"; }
	lines=$(wc -l <"$demo/dev-up.log")
	if ((lines > shown)); then sed -n "$((shown + 1)),${lines}p" "$demo/dev-up.log" | sed 's/^/   /'; shown=$lines; fi
	sleep 0.2
done
sed -n "$((shown + 1)),\$p" "$demo/dev-up.log" | sed 's/^/   /'
# shellcheck disable=SC1091
source "$demo/run/env"
export KUBECONFIG
kubectl() { command kubectl --cache-dir "$demo/run/kubectl-cache" "$@"; }

# --- 4. examples -------------------------------------------------------------------
heading "4. Applying examples/ (URLs and tokens pointed at the local SCIM servers)"
show "kubectl apply -f examples/"
for f in examples/*.yaml; do
	# The local SCIM servers speak plain http: each URL gets the `insecure: true` opt-in.
	sed -e "s#^\( *\)url: https://idcs-123.identity.example.com/admin/v1#\1url: $IAM_URL\n\1insecure: true#" \
		-e "s#^\( *\)url: https://api.example-saas.com/scim/v2#\1url: $SLACK_URL\n\1insecure: true#" \
		-e "s#^\( *\)url: https://jira.example-saas.com/scim/v2#\1url: $JIRA_URL\n\1insecure: true#" \
		-e "s#replace-with-identity-domain-bearer-token#$IAM_TOKEN#" \
		-e "s#replace-with-slack-scim-bearer-token#$SLACK_TOKEN#" \
		-e "s#replace-with-jira-scim-bearer-token#$JIRA_TOKEN#" "$f"
	echo "---"
done | kubectl apply -f - | sed 's/^/   /'

# --- 5. provisioning ---------------------------------------------------------------
heading "5. Provisioning: connectivity checked, grant groups in the identity domain"
show "kubectl wait --for=condition=Ready identitydomain/corp catalogapp/slack catalogapp/jira"
kubectl wait --for=condition=Ready identitydomain/corp catalogapp/slack catalogapp/jira --timeout=120s >/dev/null ||
	{ kubectl get catalogapp -o yaml >&2; die "the apps did not become Ready"; }
kubectl get catalogapp -o custom-columns='APP:.metadata.name,PROVISIONING:.status.conditions[?(@.type=="ProvisioningEnabled")].reason,SYNCHRONIZATION:.status.conditions[?(@.type=="SynchronizationEnabled")].reason,GRANT GROUP:.spec.provisioning.grantGroup' | sed 's/^/   /'

# --- 6. runs -------------------------------------------------------------------
heading "6. Requesting a synchronization of both apps"
token="demo-$(date +%s)"
show "kubectl annotate catalogapp slack jira catalogsync.io/requested-at=$token --overwrite"
kubectl annotate catalogapp slack jira "catalogsync.io/requested-at=$token" --overwrite | sed 's/^/   /'
say "(each app: Provision first, then Import once it ended; the example SyncRun slack-plan, a dry run, goes first: concurrencyPolicy Forbid)"

heading "7. Watching the runs (status.conditions[Synchronizing] of each app)"
declare -A seen=()
t0=$SECONDS
while :; do
	done_apps=0
	for app in slack jira; do
		line="$(kubectl get catalogapp "$app" -o jsonpath='{.status.lastHandledRequestedAt}{"|"}{.status.conditions[?(@.type=="Synchronizing")].status}{"|"}{.status.conditions[?(@.type=="Synchronizing")].message}{"|"}{.status.lastRun.name}{" "}{.status.lastRun.phase}')"
		IFS='|' read -r handled syncing message last <<<"$line"
		if [[ "$handled" == "$token" && "$syncing" == "False" ]]; then
			done_apps=$((done_apps + 1))
			message="finished: $last"
		fi
		if [[ "${seen[$app]:-}" != "$message" ]]; then
			seen[$app]="$message"
			printf '   %6s  %-6s %s\n' "$(elapsed $((SECONDS - t0)))" "$app" "$message"
		fi
	done
	((done_apps == 2)) && break
	((SECONDS - t0 < 300)) || die "the runs did not finish in 5 minutes; logs in $demo/run"
	sleep 0.5
done

# --- 8. outcome -------------------------------------------------------------------
heading "8. Outcome"
jp() { kubectl get catalogapp "$1" -o jsonpath="$2"; }
slack_phase="$(jp slack '{.status.lastRun.phase}')"
say "slack: $slack_phase — $(jp slack '{.status.lastRun.message}')"
say "       counts: $(jp slack '{.status.lastRun.counts}')"
jira_phase="$(jp jira '{.status.lastRun.phase}')"
say "jira:  $jira_phase — $(jp jira '{.status.lastRun.message}')"
say "       LimitExceeded: $(jp jira '{.status.conditions[?(@.type=="LimitExceeded")].message}')"
# The two groups each app owns in the identity domain: who is granted, whose account is
# recorded (linked). Pending users are granted, never recorded, never removed.
members() {
	curl -sf -H "Authorization: Bearer $IAM_TOKEN" -G "$IAM_URL/Groups" \
		--data-urlencode "filter=displayName eq \"$1\"" --data-urlencode "attributes=members" |
		python3 -c 'import json,sys; r=json.load(sys.stdin)["Resources"]; print(len(r[0].get("members", [])) if r else 0)'
}
for app in slack jira; do
	say "$app groups: $(members "$app-users") granted (${app}-users), $(members "$app-users-accounts") recorded (${app}-users-accounts)"
done
[[ "$slack_phase" == "Succeeded" && "$jira_phase" == "LimitExceeded" ]] ||
	die "expected slack Succeeded and jira LimitExceeded; see kubectl get syncrun -o yaml and $demo/run/*.log"

heading "9. kubectl get catalogsync"
show "kubectl get catalogsync"
kubectl get catalogsync | sed 's/^/   /'

if $keep; then
	heading "Explore further (in another terminal; Ctrl-C here stops everything)"
else
	heading "Explore further (run make $make_target DEMO_ARGS=--keep to keep it running, then in another terminal)"
fi
cat <<EOF
   export KUBECONFIG=$KUBECONFIG
   kubectl get catalogsync                       # everything, as above
   kubectl get syncrun -o wide                   # runs with their messages
   kubectl describe catalogapp jira              # conditions and events: what to change
   kubectl get syncrun -l catalogsync.io/app=slack -o yaml   # counts, planned, items
   kubectl patch syncpolicy default --type merge -p '{"spec":{"limits":{"maxDeletes":40}}}'
   kubectl annotate catalogapp jira catalogsync.io/requested-at="\$(date +%s)" --overwrite
EOF
if $node; then
	cat <<EOF
   kubectl -n catalogsync-system get pods        # the controller replicas; runs are Job pods
   kubectl get pods -l catalogsync.io/app        # the sync pods
   logs: kubectl -n catalogsync-system logs deploy/catalogsync-controller; $demo/run/scim.log
EOF
else
	cat <<EOF
   curl -s $CATALOGSYNC_METRICS | grep catalogsync_
   logs: $demo/run/controller.log, $demo/run/job-runner.log, $demo/run/scim.log
EOF
fi

if $keep; then
	heading "Running until Ctrl-C ($(elapsed $((SECONDS - started))) so far)"
	wait "$devup" || true
else
	say ""
	say "done in $(elapsed $((SECONDS - started))); to keep it running: make $make_target DEMO_ARGS=--keep"
fi
