#!/usr/bin/env bash
# Build llama.cpp's llama-quantize and llama-simple from the sources the llama-cpp-python
# source distribution on PyPI vendors (no other download), for the exporter's K-quants
# and greedy-token check. Usage: build_llama_cpp.sh DEST_BIN_DIR [VERSION]
# Then: export TRAINWRIGHT_LLAMA_CPP_BIN=DEST_BIN_DIR (or put it on PATH).
# Needs cmake, ninja or make, and a C++17 compiler; about 10 CPU-minutes.
set -euo pipefail
dest="${1:?usage: build_llama_cpp.sh DEST_BIN_DIR [VERSION]}"
version="${2:-0.3.36}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python -m pip download --no-deps --no-binary :all: -d "$work" "llama-cpp-python==${version}"
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
src="$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF -DGGML_NATIVE=OFF \
  -DBUILD_SHARED_LIBS=OFF
cmake --build "$work/build" -j"$(nproc)" --target llama-quantize llama-simple
mkdir -p "$dest"
cp "$work/build/bin/llama-quantize" "$work/build/bin/llama-simple" "$dest/"
echo "llama-quantize and llama-simple in $dest"
