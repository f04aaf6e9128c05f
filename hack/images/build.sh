#!/usr/bin/env bash
# Builds the cluster's images without a Docker engine, from Debian packages and PyPI wheels:
#
#   registry.k8s.io/pause:3.10.1     the pod sandbox (Kubernetes' own pause.c, built static)
#   trainwright/operator:<version>   `trainwright operator`; the operator's pinned deps, no torch
#   trainwright/trainer:<version>    the trainer on CPU: torch + trainer-image/requirements.txt,
#                                    and llama.cpp's llama-quantize and llama-simple for exports
#
#   hack/images/build.sh [pause|operator|trainer ...]    (default: all three)
#
# Layers: a Debian bookworm minbase root (debootstrap) with Python 3.11 and the images'
# users; a virtualenv at /opt/venv with the pinned requirements, installed offline from
# wheels downloaded on this host; the project's code. Each layer is built in an overlay
# over the ones below it (in a private mount namespace, so nothing stays mounted), cached
# under $TRAINWRIGHT_CACHE/images by the sha256 of its inputs, and written as a
# deterministic tar (hack/images/oci.py), so the same inputs give the same image digest.
# Images land as OCI layouts in $TRAINWRIGHT_CACHE/images/oci/<name>; hack/k8s/node.sh
# pushes them to the node's loopback registry.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${TRAINWRIGHT_CACHE:-$HOME/.cache/trainwright}
work=$cache/images
k8s_mod=$cache/go/mod/k8s.io/kubernetes@v1.34.4
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
base_packages=python3,python3-venv,libgomp1,ca-certificates
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/pyproject.toml")
torch_version=$(sed -n 's/^ARG TORCH_VERSION=//p' "$repo/trainer-image/Dockerfile")
python=${PYTHON:-$repo/.venv/bin/python}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1704067200}

say() { echo "images: $*" >&2; }
die() {
	echo "images: error: $*" >&2
	exit 1
}
[ "$(id -u)" -eq 0 ] || die "building the images needs root (debootstrap, chroot and overlay mounts)."
command -v debootstrap >/dev/null || die "debootstrap is missing; run 'make system-deps'."
[ -x "$python" ] || die "$python is missing; run 'make install' first."
mkdir -p "$work/layers" "$work/oci" "$work/wheels"

key() { sha256sum | cut -c1-16; }
layer_tar() { echo "$work/layers/$1.tar"; }

# run_in ROOTFS COMMAND...: COMMAND chrooted into ROOTFS with /proc, /dev and the wheel
# dir mounted, in a private mount namespace (the mounts vanish with it).
run_in() {
	local root=$1
	shift
	unshare -m --propagation private bash -euo pipefail -c '
		root=$1; wheels=$2; shift 2
		mount -t proc proc "$root/proc"
		mount --rbind /dev "$root/dev"
		mkdir -p "$root/wheels" && mount --bind -o ro "$wheels" "$root/wheels"
		exec chroot "$root" /usr/bin/env -i PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"
	' run_in "$root" "$work/wheels" "$@"
}

# overlay_run LOWER_DIRS UPPER COMMAND...: COMMAND chrooted into an overlay of
# LOWER_DIRS (colon-separated, top first) with UPPER as the writable layer.
overlay_run() {
	local lower=$1 upper=$2
	shift 2
	local scratch
	scratch=$(mktemp -d "$work/.overlay.XXXXXX")
	mkdir -p "$upper" "$scratch/work" "$scratch/merged"
	unshare -m --propagation private bash -euo pipefail -c '
		lower=$1; upper=$2; scratch=$3; wheels=$4; shift 4
		mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$scratch/work" "$scratch/merged"
		root=$scratch/merged
		mount -t proc proc "$root/proc"
		mount --rbind /dev "$root/dev"
		mkdir -p "$root/wheels" && mount --bind -o ro "$wheels" "$root/wheels"
		chroot "$root" /usr/bin/env -i PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
			PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 "$@" >&2
	' overlay_run "$lower" "$upper" "$scratch" "$work/wheels" "$@"
	rm -rf "$scratch"
	# The mount points the overlay created for /proc, /dev and /wheels are not content.
	rmdir "$upper/wheels" 2>/dev/null || true
	if find "$upper" -type c -print -quit | grep -q .; then
		die "the layer in $upper deletes files of the layer below (overlay whiteouts); that is not supported"
	fi
}

# --- the Debian root ----------------------------------------------------------------------
base_key=$(printf '%s\n' "$suite" "$base_packages" "users:trainer=1000:0,operator=65532:65532" | key)
base_root=$work/base-$base_key
build_base() {
	if [ -f "$base_root/.done" ]; then
		say "reusing the Debian $suite root $base_root"
		return
	fi
	rm -rf "$base_root" "$base_root.tmp"
	say "debootstrap $suite minbase with $base_packages (about 3 min; log: $work/debootstrap.log)"
	local t0=$SECONDS
	if ! debootstrap --variant=minbase --include="$base_packages" "$suite" "$base_root.tmp" "$mirror" \
		>"$work/debootstrap.log" 2>&1; then
		tail -n 20 "$work/debootstrap.log" >&2
		die "debootstrap of Debian $suite from $mirror failed (log above)."
	fi
	local r=$base_root.tmp
	# Users: the trainer as in trainer-image/Dockerfile (1000, group 0, so any UID with
	# group 0 works too); the operator as a fixed non-root UID.
	echo 'trainer:x:1000:0::/home/trainer:/bin/sh' >>"$r/etc/passwd"
	echo 'operator:x:65532:65532::/home/operator:/usr/sbin/nologin' >>"$r/etc/passwd"
	echo 'operator:x:65532:' >>"$r/etc/group"
	mkdir -p "$r/home/trainer" "$r/home/operator" "$r/checkpoints" "$r/tmp/trainwright"
	chown 1000:0 "$r/home/trainer" "$r/checkpoints" "$r/tmp/trainwright"
	chmod 0775 "$r/home/trainer" "$r/checkpoints" "$r/tmp/trainwright"
	chown 65532:65532 "$r/home/operator"
	# What differs between two debootstraps of the same packages: logs, caches, ids.
	rm -rf "$r"/var/cache/apt/* "$r"/var/lib/apt/lists/* "$r"/var/log/* "$r"/var/cache/ldconfig/aux-cache \
		"$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old
	: >"$r/etc/machine-id"
	find "$r/usr/lib/python3"* -name '__pycache__' -prune -exec rm -rf {} +
	mv "$r" "$base_root"
	touch "$base_root/.done"
	say "Debian root ready in $((SECONDS - t0)) s ($(du -sh "$base_root" | cut -f1))"
}

base_layer() {
	local out
	out=$(layer_tar "base-$base_key")
	if [ ! -s "$out" ]; then
		say "writing the base layer"
		"$python" "$here/oci.py" layer "$base_root" "$out.tmp" --exclude .done --exclude proc --exclude sys \
			--exclude dev >/dev/null
		mv "$out.tmp" "$out"
	fi
	echo "$out"
}

# --- wheels, downloaded on this host ---------------------------------------------------
# fetch_wheels REQUIREMENTS: every requirement as a wheel in $work/wheels. Packages PyPI
# ships only as source (deepspeed) are built into wheels here, against this host's venv.
fetch_wheels() {
	local req=$1
	say "downloading wheels for $(basename "$req") into $work/wheels (pip's cache makes a second run quick)"
	if ! "$python" -m pip download --quiet --progress-bar off --dest "$work/wheels" \
		--prefer-binary -r "$req" >"$work/pip-download.log" 2>&1; then
		tail -n 20 "$work/pip-download.log" >&2
		die "pip download for $req failed (log above)."
	fi
	local sdist
	for sdist in "$work/wheels"/*.tar.gz; do
		[ -e "$sdist" ] || continue
		say "building a wheel from $(basename "$sdist")"
		if ! DS_BUILD_OPS=0 "$python" -m pip wheel --quiet --no-deps --no-build-isolation \
			--wheel-dir "$work/wheels" "$sdist" >"$work/pip-wheel.log" 2>&1; then
			tail -n 20 "$work/pip-wheel.log" >&2
			die "building a wheel from $sdist failed (log above)."
		fi
		rm -f "$sdist"
	done
}

# deps_layer NAME REQUIREMENTS: /opt/venv with exactly REQUIREMENTS, as a layer.
deps_layer() {
	local name=$1 req=$2 k upper out
	k=$( (echo "$base_key"; cat "$req") | key)
	upper=$work/$name-deps-$k
	out=$(layer_tar "$name-deps-$k")
	if [ -s "$out" ]; then
		echo "$out"
		return
	fi
	if [ ! -f "$upper/.done" ]; then
		fetch_wheels "$req"
		rm -rf "$upper"
		say "installing $(grep -cv '^\s*\(#\|$\)' "$req") pinned requirements into /opt/venv of the $name image (offline, from the wheels)"
		local t0=$SECONDS
		cp "$req" "$work/requirements-$name.txt"
		mkdir -p "$upper/tmp"
		cp "$req" "$upper/tmp/requirements.txt"
		overlay_run "$base_root" "$upper" /bin/sh -c '
			python3 -m venv /opt/venv &&
			/opt/venv/bin/pip install --quiet --no-index --find-links /wheels --no-compile -r /tmp/requirements.txt &&
			/opt/venv/bin/python -m compileall -q -j 2 --invalidation-mode unchecked-hash /opt/venv/lib >/dev/null &&
			rm -f /tmp/requirements.txt'
		rm -rf "$upper/root" "$upper/tmp"
		touch "$upper/.done"
		say "$name requirements installed in $((SECONDS - t0)) s ($(du -sh "$upper/opt" | cut -f1))"
	fi
	if [ ! -s "$out" ]; then
		say "writing the $name dependency layer"
		"$python" "$here/oci.py" layer "$upper" "$out.tmp" --prefix opt/venv >/dev/null
		mv "$out.tmp" "$out"
	fi
	rm -rf "$upper" # the tar holds it; the installed tree would only double the disk used
	echo "$out"
}

# app_layer NAME: the project's packages in the venv's site-packages and the `trainwright`
# command, from the sources (no build step: both packages are pure Python).
app_layer() {
	local name=$1 k stage out site
	k=$( (cd "$repo" && find operator/trainwright trainer-image/trainwright_trainer -type f \
		! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum; echo "$version") | key)
	out=$(layer_tar "$name-app-$k")
	if [ ! -s "$out" ]; then
		stage=$(mktemp -d "$work/.app.XXXXXX")
		site=$stage/opt/venv/lib/python3.11/site-packages
		mkdir -p "$site" "$stage/opt/venv/bin"
		# Both packages, as `pip install .` puts them in either image: the operator imports
		# the trainer's config, exit codes and data readers (no torch), the trainer the
		# operator's vocabulary.
		cp -r "$repo/operator/trainwright" "$repo/trainer-image/trainwright_trainer" "$site/"
		find "$site" -name '__pycache__' -prune -exec rm -rf {} +
		mkdir -p "$site/trainwright-$version.dist-info"
		printf 'Metadata-Version: 2.1\nName: trainwright\nVersion: %s\n' "$version" \
			>"$site/trainwright-$version.dist-info/METADATA"
		printf '[console_scripts]\ntrainwright = trainwright.cli:main\n' \
			>"$site/trainwright-$version.dist-info/entry_points.txt"
		cat >"$stage/opt/venv/bin/trainwright" <<'PY'
#!/opt/venv/bin/python
import sys

from trainwright.cli import main

sys.exit(main())
PY
		chmod 0755 "$stage/opt/venv/bin/trainwright"
		"$python" "$here/oci.py" layer "$stage" "$out.tmp" --prefix opt/venv >/dev/null
		rm -rf "$stage"
		mv "$out.tmp" "$out"
	fi
	# Older app layers of this image (other sources) are a second's work to rebuild.
	find "$work/layers" -name "$name-app-*.tar" ! -name "$(basename "$out")" -mmin +60 -delete
	echo "$out"
}

# image NAME REF CONFIG_JSON LAYER...: the OCI layout $work/oci/NAME; prints the digest.
image() {
	local name=$1 ref=$2 config=$3
	shift 3
	local args=() l digest
	for l in "$@"; do args+=(--layer "$l"); done
	echo "$config" >"$work/$name-config.json"
	digest=$("$python" "$here/oci.py" image "$work/oci/$name" --ref "$ref" \
		--config "$work/$name-config.json" "${args[@]}")
	echo "$ref" >"$work/oci/$name/ref"
	local bytes=0
	for l in "$@"; do bytes=$((bytes + $(stat -c %s "$l"))); done
	say "$ref $digest ($((bytes / 1024 / 1024)) MiB in ${#@} layers)"
}

build_pause() {
	local src=$k8s_mod/build/pause/linux/pause.c k stage out
	[ -r "$src" ] || die "$src is missing; run 'make k8s-bin' first (it downloads the Kubernetes module)."
	k=$( (cat "$src"; gcc --version | head -n1) | key)
	out=$(layer_tar "pause-$k")
	if [ ! -s "$out" ]; then
		say "compiling Kubernetes' pause.c (static)"
		stage=$(mktemp -d "$work/.pause.XXXXXX")
		gcc -Os -Wall -Werror -static -DVERSION=v3.10.1-trainwright -o "$stage/pause" "$src"
		strip "$stage/pause"
		"$python" "$here/oci.py" layer "$stage" "$out.tmp" --prefix pause >/dev/null
		rm -rf "$stage"
		mv "$out.tmp" "$out"
	fi
	image pause registry.k8s.io/pause:3.10.1 '{"Entrypoint":["/pause"],"User":"65535:65535"}' "$out"
}

build_operator() {
	local req=$repo/operator/requirements.txt deps app
	[ -r "$req" ] || die "$req is missing: the operator's pinned requirements."
	build_base
	deps=$(deps_layer operator "$req")
	app=$(app_layer operator)
	image operator "trainwright/operator:$version" '{
		"Entrypoint": ["/opt/venv/bin/trainwright", "operator"],
		"User": "65532:65532",
		"WorkingDir": "/home/operator",
		"Env": ["PATH=/opt/venv/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "HOME=/home/operator"],
		"ExposedPorts": {"8080/tcp": {}}
	}' "$(base_layer)" "$deps" "$app"
}

# llama_layer: llama.cpp's llama-quantize and llama-simple (the exporter's K-quants and
# greedy-token check), built once from the llama-cpp-python sdist on PyPI into
# $TRAINWRIGHT_CACHE/llama.cpp/<version>/bin, where the tests find them too.
llama_layer() {
	local version bin_dir k stage out
	version=$(sed -n 's/^version="\${2:-\(.*\)}"$/\1/p' "$repo/trainer-image/build_llama_cpp.sh")
	[ -n "$version" ] || die "no default version in trainer-image/build_llama_cpp.sh."
	bin_dir=$cache/llama.cpp/$version/bin
	if [ ! -x "$bin_dir/llama-quantize" ] || [ ! -x "$bin_dir/llama-simple" ]; then
		say "building llama.cpp $version's llama-quantize and llama-simple (once; about 5 min on 2 cores; log: $work/llama-cpp.log)"
		local t0=$SECONDS
		if ! PATH=$(dirname "$python"):$PATH bash "$repo/trainer-image/build_llama_cpp.sh" "$bin_dir" "$version" \
			>"$work/llama-cpp.log" 2>&1; then
			tail -n 20 "$work/llama-cpp.log" >&2
			die "building llama.cpp $version failed (log above); it needs cmake and a C++17 compiler."
		fi
		say "llama.cpp built in $((SECONDS - t0)) s"
	fi
	k=$(cat "$bin_dir/llama-quantize" "$bin_dir/llama-simple" | key)
	out=$(layer_tar "llama-cpp-$k")
	if [ ! -s "$out" ]; then
		stage=$(mktemp -d "$work/.llama.XXXXXX")
		mkdir -p "$stage/opt/llama.cpp/bin"
		cp "$bin_dir/llama-quantize" "$bin_dir/llama-simple" "$stage/opt/llama.cpp/bin/"
		"$python" "$here/oci.py" layer "$stage" "$out.tmp" --prefix opt/llama.cpp >/dev/null
		rm -rf "$stage"
		mv "$out.tmp" "$out"
	fi
	echo "$out"
}

build_trainer() {
	local req=$work/requirements-trainer.in deps app llama
	[ -n "$torch_version" ] || die "no 'ARG TORCH_VERSION=' in trainer-image/Dockerfile."
	# One list of pins for both trainer images: the Dockerfile's torch and requirements.txt.
	{
		echo "torch==$torch_version"
		grep -v '^\s*\(#\|$\)' "$repo/trainer-image/requirements.txt"
	} >"$req.tmp"
	mv "$req.tmp" "$req"
	build_base
	deps=$(deps_layer trainer "$req")
	llama=$(llama_layer)
	app=$(app_layer trainer)
	image trainer "trainwright/trainer:$version" '{
		"Entrypoint": ["torchrun"],
		"Cmd": ["--standalone", "--nproc-per-node=1", "-m", "trainwright_trainer", "train", "--config", "/etc/trainwright/config.yaml"],
		"User": "1000:0",
		"WorkingDir": "/home/trainer",
		"Env": ["PATH=/opt/venv/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1",
		        "HOME=/home/trainer", "HF_HOME=/home/trainer/.cache/huggingface", "HF_HUB_OFFLINE=1",
		        "TRANSFORMERS_OFFLINE=1", "TOKENIZERS_PARALLELISM=false", "DS_BUILD_OPS=0", "DS_ACCELERATOR=cpu",
		        "TRAINWRIGHT_LLAMA_CPP_BIN=/opt/llama.cpp/bin"],
		"ExposedPorts": {"29500/tcp": {}, "9464/tcp": {}}
	}' "$(base_layer)" "$deps" "$llama" "$app"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pause operator trainer)
t_all=$SECONDS
for t in "${targets[@]}"; do
	case "$t" in
	pause) build_pause ;;
	operator) build_operator ;;
	trainer) build_trainer ;;
	*) die "unknown image '$t'; the images are pause, operator and trainer." ;;
	esac
done
say "done in $((SECONDS - t_all)) s"
