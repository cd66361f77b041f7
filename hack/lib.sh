# Shared helpers for the hack/ scripts: pinned versions, cache paths, logging.
# Sourced, never run.
# shellcheck shell=bash
HACK_DIR=${HACK_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
REPO_ROOT=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=hack/versions.env
source "$HACK_DIR/versions.env"

# Built upstream binaries and images live outside the repository so a fresh
# clone (and CI) reuses them; delete this directory to force a cold build.
NESTOR_CACHE=${NESTOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nestor}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

upstream_bin_dir() { echo "$NESTOR_CACHE/bin/$1-$2"; }
upstream_complete() { [[ -f "$(upstream_bin_dir "$1" "$2")/.complete" ]]; }
