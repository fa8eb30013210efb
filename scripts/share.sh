#!/usr/bin/env bash
# Team sharing through a DVC remote (docs/sharing.md).
#
#   scripts/share.sh remote-local PATH [NAME]          default remote = a directory (NFS, USB disk)
#   scripts/share.sh remote-s3 s3://BUCKET/PREFIX [ENDPOINT_URL] [NAME]
#                                                       default remote = S3 / MinIO / S3-compatible
#   scripts/share.sh push [-r NAME] [TARGET...]        data, rationale caches, checkpoints + run-cache
#   scripts/share.sh pull [-r NAME] [TARGET...]        the same back, verified byte for byte
#   scripts/share.sh verify [TARGET...]                re-hash workspace outputs vs dvc.lock
#
# Credentials never go through this script: put them in AWS_ACCESS_KEY_ID /
# AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or in the git-ignored .dvc/config.local with
#   dvc remote modify --local NAME access_key_id ...   (and secret_access_key)
#
# Every remote this script configures has `verify = true`, and `pull` turns it on (in
# .dvc/config.local) for whatever remote it pulls from: DVC 3.67 does not re-hash downloads
# otherwise, and a corrupted object in the remote would land in the workspace silently.
set -euo pipefail

DVC=${DVC:-dvc}
PYTHON=${PYTHON:-python}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export DVC_NO_ANALYTICS=1

die() { echo "share.sh: $*" >&2; exit 1; }

default_remote() {
  local name
  name=$($DVC remote default 2>/dev/null || true)
  [ -n "$name" ] || die "no default DVC remote: run 'make remote-local REMOTE_PATH=...' or 'make remote-s3 S3_URL=...' (docs/sharing.md)"
  echo "$name"
}

# Parse an optional leading `-r NAME`; sets REMOTE and leaves the targets in ARGS.
parse_remote() {
  REMOTE=""
  ARGS=()
  while [ $# -gt 0 ]; do
    case "$1" in
      -r|--remote) REMOTE=$2; shift 2 ;;
      *) ARGS+=("$1"); shift ;;
    esac
  done
  [ -n "$REMOTE" ] || REMOTE=$(default_remote)
}

# Outputs that `dvc status` reports as absent after a failed pull, one per line.
absent_outputs() {
  $DVC status --json "$@" 2>/dev/null | $PYTHON -c '
import json, sys
try:
    data = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
bad = set()
for changes in data.values():
    for ch in changes if isinstance(changes, list) else []:
        if isinstance(ch, dict):
            for path, state in (ch.get("changed outs") or {}).items():
                if state == "not in cache":
                    bad.add(path)
print("\n".join(sorted(bad)))'
}

cmd=${1:-}
[ -n "$cmd" ] || { sed -n '2,18p' "$0"; exit 2; }
shift

case "$cmd" in
  remote-local)
    path=${1:?usage: share.sh remote-local PATH [NAME]}
    name=${2:-local}
    mkdir -p "$path"
    path=$(cd "$path" && pwd)
    $DVC remote add --force --default "$name" "$path"
    $DVC remote modify "$name" verify true
    echo "share.sh: default DVC remote '$name' -> $path (commit .dvc/config)"
    ;;

  remote-s3)
    url=${1:?usage: share.sh remote-s3 s3://BUCKET/PREFIX [ENDPOINT_URL] [NAME]}
    endpoint=${2:-}
    name=${3:-s3}
    case "$url" in s3://*) ;; *) die "remote-s3 wants an s3:// URL, got '$url'" ;; esac
    $DVC remote add --force --default "$name" "$url"
    if [ -n "$endpoint" ]; then
      $DVC remote modify "$name" endpointurl "$endpoint"
    fi
    $DVC remote modify "$name" verify true
    if grep -qiE 'access_key_id|secret_access_key|session_token' .dvc/config; then
      die ".dvc/config holds S3 credentials: move them to .dvc/config.local (dvc remote modify --local)"
    fi
    echo "share.sh: default DVC remote '$name' -> $url${endpoint:+ (endpoint $endpoint)} (commit .dvc/config;"
    echo "          credentials: AWS_* variables or 'dvc remote modify --local $name access_key_id ...')"
    ;;

  push)
    parse_remote "$@"
    start=$(date +%s)
    $DVC push --run-cache -r "$REMOTE" ${ARGS[@]+"${ARGS[@]}"}
    # Every cached output must now be in the remote: `status --cloud` lists what is not.
    missing=$($DVC status --cloud -r "$REMOTE" --json ${ARGS[@]+"${ARGS[@]}"})
    if [ "$missing" != "{}" ]; then
      die "push to '$REMOTE' incomplete, not in the remote: $missing"
    fi
    echo "share.sh: pushed to '$REMOTE' (outputs + run-cache) in $(( $(date +%s) - start )) s"
    ;;

  pull)
    parse_remote "$@"
    # Re-hash every downloaded object (a corrupted object then fails the pull, naming the output).
    $DVC remote modify --local "$REMOTE" verify true
    start=$(date +%s)
    if ! $DVC pull --run-cache -r "$REMOTE" ${ARGS[@]+"${ARGS[@]}"}; then
      # DVC names a missing object only by its hash, and one failed download can stop the others:
      # retry each output still absent on its own; those that fail again are the damaged ones.
      bad=""
      for out in $(absent_outputs ${ARGS[@]+"${ARGS[@]}"}); do
        $DVC pull -q -r "$REMOTE" "$out" >/dev/null 2>&1 || bad="$bad $out"
      done
      [ -n "$bad" ] || die "pull from '$REMOTE' FAILED (see the DVC error above); every output pulled on retry, run it again"
      die "pull from '$REMOTE' FAILED: missing or corrupt in the remote (not checked out):$bad"
    fi
    if ! $PYTHON "$HERE/verify_outputs.py" ${ARGS[@]+"${ARGS[@]}"}; then
      die "pull from '$REMOTE' gave outputs that do not match dvc.lock (see above)"
    fi
    echo "share.sh: pulled from '$REMOTE' and verified in $(( $(date +%s) - start )) s"
    ;;

  verify)
    exec $PYTHON "$HERE/verify_outputs.py" "$@"
    ;;

  *)
    die "unknown command '$cmd' (remote-local, remote-s3, push, pull, verify)"
    ;;
esac
