#!/usr/bin/env bash
# Debian packages the test suite and the local cluster start for real:
#   prometheus, promtool         the Prometheus tests and the dashboards' queries
#   containerd, runc, CNI        the real worker node (hack/k8s/node.sh)
#   iptables, conntrack          kube-proxy's Service rules on the real node
#   debootstrap                  the images' Debian root filesystem (hack/images/build.sh)
#   g++, cmake                   llama.cpp's quantizer for the trainer image's exporter
#   openssl, curl                certificates and readiness probes of the control plane
set -euo pipefail
need=()
want() { # want COMMAND-OR-PATH PACKAGE
	if [[ $1 == /* ]]; then [ -e "$1" ] || need+=("$2"); else command -v "$1" >/dev/null || need+=("$2"); fi
}
want prometheus prometheus
want promtool prometheus
want openssl openssl
want curl curl
want containerd containerd
want runc runc
want /usr/lib/cni/bridge containernetworking-plugins
want iptables iptables
want conntrack conntrack
want debootstrap debootstrap
want gcc gcc
want g++ g++
want cmake cmake
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
echo "system-deps: installing Debian packages: ${need[*]} (apt-get update first; about a minute)"
$SUDO apt-get update -qq
# The tests start their own servers; keep the packages' services from starting at
# install (policy-rc.d exit 101 = "action forbidden"), so nothing is left running
# and nothing needs killing by name.
policy=/usr/sbin/policy-rc.d
had_policy=0; [ -e "$policy" ] && had_policy=1
if [ "$had_policy" -eq 0 ]; then printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null; $SUDO chmod +x "$policy"; fi
if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/tmp/trainwright-apt.log 2>&1; then
	tail -n 20 /tmp/trainwright-apt.log >&2
	[ "$had_policy" -eq 0 ] && $SUDO rm -f "$policy"
	echo "system-deps: error: apt-get install ${need[*]} failed (log above, whole log in /tmp/trainwright-apt.log)" >&2
	exit 1
fi
if [ "$had_policy" -eq 0 ]; then $SUDO rm -f "$policy"; fi
echo "system-deps: installed ${need[*]}"
