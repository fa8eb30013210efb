#!/usr/bin/env bash
# Team sharing through a DVC remote (docs/sharing.md).
#
#   scripts/share.sh remote-local PATH [NAME]          default remote = a directory (NFS, USB disk)
#   scripts/share.sh remote-s3 s3://BUCKET/PREFIX [ENDPOINT_URL] [NAME]
#                                                       default remote = S3 / MinIO / S3-compatible
#   scripts/share.sh push [-r NAME] [TARGET...]        data, rationale caches, checkpoints + run-cache
#                                                       (and, without TARGET, the study students of the
#                                                       DVC subrepo models/study)
#   scripts/share.sh pull [-r NAME] [TARGET...]        the same back, verified byte for byte (the
#                                                       study students: cd models/study && dvc pull)
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
# DVC subrepos (their own .dvc/, the root's cache): the study students, which the pipeline's
# `dvc status` does not list. The remote commands configure them too; `push` pushes them.
SUBREPOS="models/study"

in_subrepos() {  # run `dvc "$@"` in every subrepo present
  local d
  for d in $SUBREPOS; do
    if [ -d "$d/.dvc" ]; then
      (cd "$d" && $DVC "$@") || return 1
    fi
  done
}

die() { echo "share.sh: $*" >&2; exit 1; }

default_remote() {
  local name rc=0
  # `dvc remote default` prints "No default remote set" on stdout with rc 1: never a remote's name
  name=$($DVC remote default 2>/dev/null) || rc=$?
  if [ "$rc" -ne 0 ] || [ -z "$name" ] || [ -z "$(remote_url "$name")" ]; then
    die "no DVC remote is configured (nothing was transferred): run 'make remote-local REMOTE_PATH=...' or
  'make remote-s3 S3_URL=...' (docs/sharing.md), or pass one with -r NAME / REMOTE=NAME"
  fi
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
  [ -n "$(remote_url "$REMOTE")" ] || die "no DVC remote named '$REMOTE' (configured: $($DVC remote list 2>/dev/null | awk '{print $1}' | tr '\n' ' '))"
}

# Can the remote be reached at all? At most ~15 s, before DVC's own retries (minutes) start, and
# names the cause: a folder that is not there (not mounted), an endpoint that does not answer, or
# (S3) credentials the server refuses / a bucket that does not exist. SHARE_SKIP_REACHABILITY=1 skips it.
check_reachable() {
  local name=$1 url endpoint
  [ "${SHARE_SKIP_REACHABILITY:-0}" = 1 ] && return 0
  url=$(remote_url "$name")
  endpoint=$($DVC config "remote.$name.endpointurl" 2>/dev/null || true)
  $PYTHON - "$name" "$url" "$endpoint" <<'PY' || exit 1
import os
import socket
import sys
from urllib.parse import urlsplit

name, url, endpoint = sys.argv[1:4]
TIMEOUT = 5.0


def die(msg):
    print(f"share.sh: remote '{name}' ({url}): {msg} (nothing was transferred)", file=sys.stderr)
    sys.exit(1)


def connect(where, host, port):
    try:
        socket.create_connection((host, port), timeout=TIMEOUT).close()
    except OSError as e:
        die(f"unreachable endpoint {where}: {type(e).__name__}: {e}. Check the address, the network/VPN, or "
            "that the server runs")


parts = urlsplit(url)
if parts.scheme in ("", "file") or len(parts.scheme) == 1:  # a path (C:\... on Windows)
    path = parts.path if parts.scheme == "file" else url
    if not os.path.isdir(path):
        die(f"unreachable: the folder {path} does not exist here (a network share not mounted, or a typo)")
    if not os.access(path, os.R_OK | os.X_OK):
        die(f"the folder {path} is not readable by this user")
elif parts.scheme == "s3":
    ep = urlsplit(endpoint) if endpoint else None
    if ep is not None:
        connect(endpoint, ep.hostname, ep.port or (443 if ep.scheme == "https" else 80))
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        sys.exit(0)  # dvc-s3 not installed: DVC will say so
    cfg = Config(connect_timeout=TIMEOUT, read_timeout=TIMEOUT, retries={"max_attempts": 1})
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint or None, config=cfg)
        s3.head_bucket(Bucket=parts.netloc)
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", "")) or str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "401"):
            die(f"credentials refused by the server (HTTP {code}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                f"or 'dvc remote modify --local {name} access_key_id ...', and the bucket policy")
        if code in ("404", "NoSuchBucket"):
            die(f"the bucket '{parts.netloc}' does not exist at {endpoint or 'AWS'}")
        die(f"the server answered {code}: {e}")
    except BotoCoreError as e:
        die(f"unreachable endpoint {endpoint or 'AWS S3'}: {type(e).__name__}: {e}")
elif parts.hostname:
    port = parts.port or {"https": 443, "http": 80, "ssh": 22, "sftp": 22, "webdav": 80, "webdavs": 443}.get(
        parts.scheme, 443
    )
    connect(f"{parts.hostname}:{port}", parts.hostname, port)
PY
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

remote_url() {
  $DVC config "remote.$1.url" 2>/dev/null  # by name, resolved: any path a filesystem allows
}

# An S3 remote needs credentials from somewhere boto3 looks (never .dvc/config, which is committed).
# Checked before push and pull so a missing key fails in a second with the fix, not after a scan.
# SHARE_SKIP_CREDENTIAL_CHECK=1 skips it (e.g. an EC2 instance role, which this check cannot see).
check_s3_credentials() {
  local name=$1 url
  url=$(remote_url "$name")
  case "$url" in s3://*) ;; *) return 0 ;; esac
  if grep -qiE 'access_key_id|secret_access_key|session_token' .dvc/config 2>/dev/null; then
    die ".dvc/config holds S3 credentials: move them to .dvc/config.local (dvc remote modify --local)"
  fi
  [ "${SHARE_SKIP_CREDENTIAL_CHECK:-0}" = 1 ] && return 0
  [ -n "${AWS_ACCESS_KEY_ID:-}" ] && [ -n "${AWS_SECRET_ACCESS_KEY:-}" ] && return 0
  [ -n "${AWS_PROFILE:-}${AWS_WEB_IDENTITY_TOKEN_FILE:-}${AWS_CONTAINER_CREDENTIALS_FULL_URI:-}" ] && return 0
  [ -n "${AWS_CONTAINER_CREDENTIALS_RELATIVE_URI:-}" ] && return 0
  [ -s "${AWS_SHARED_CREDENTIALS_FILE:-$HOME/.aws/credentials}" ] && return 0
  for key in access_key_id profile credentialpath; do  # (dvc config prints nothing for an unset key)
    [ -n "$($DVC config "remote.$name.$key" 2>/dev/null)" ] && return 0
  done
  die "remote '$name' is $url but no S3 credentials were found (nothing was transferred). Set
  AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or store them outside git with
    dvc remote modify --local $name access_key_id ...
    dvc remote modify --local $name secret_access_key ...
  (an instance role: SHARE_SKIP_CREDENTIAL_CHECK=1)"
}

# What to do about outputs a pull could not get: which stage makes each (dvc.lock), and how to
# put a good copy back in the remote or rebuild it here.
recovery_steps() {
  local remote=$1
  shift
  $PYTHON - "$remote" "$@" <<'PY'
import sys
from pathlib import Path

import yaml

remote, outs = sys.argv[1], sys.argv[2:]
lock = yaml.safe_load(Path("dvc.lock").read_text()) if Path("dvc.lock").exists() else {}
owner = {}
for stage, st in (lock.get("stages") or {}).items():
    for o in st.get("outs") or []:
        owner[o["path"]] = (stage, o.get("md5", "?"))
print("share.sh: how to recover (the remote lacks a good copy of these objects):", file=sys.stderr)
for out in outs:
    stage, md5 = next(((s, m) for p, (s, m) in owner.items() if out == p or out.startswith(p + "/")), ("?", "?"))
    print(f"  {out}  (object md5 {md5}, made by stage '{stage}')", file=sys.stderr)
    print(f"    1. on a machine whose {out} is intact (`scripts/share.sh verify {out}` passes):", file=sys.stderr)
    print(f"       dvc push -r {remote} {out}      # re-uploads the missing/corrupt object", file=sys.stderr)
    print(f"       then here: make pull               # or scripts/share.sh pull -r {remote} {out}", file=sys.stderr)
    if stage != "?":
        print(f"    2. or rebuild it here: dvc repro {stage}   (re-runs that stage and what depends on it),",
              file=sys.stderr)
        print(f"       then make push to repair the remote for everyone", file=sys.stderr)
PY
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
    in_subrepos remote add --force --default "$name" "$path"
    in_subrepos remote modify "$name" verify true
    echo "share.sh: default DVC remote '$name' -> $path (commit .dvc/config and $SUBREPOS/.dvc/config)"
    ;;

  remote-s3)
    url=${1:?usage: share.sh remote-s3 s3://BUCKET/PREFIX [ENDPOINT_URL] [NAME]}
    endpoint=${2:-}
    name=${3:-s3}
    case "$url" in s3://*) ;; *) die "remote-s3 wants an s3:// URL, got '$url'" ;; esac
    $DVC remote add --force --default "$name" "$url"
    in_subrepos remote add --force --default "$name" "$url"
    if [ -n "$endpoint" ]; then
      $DVC remote modify "$name" endpointurl "$endpoint"
      in_subrepos remote modify "$name" endpointurl "$endpoint"
    fi
    $DVC remote modify "$name" verify true
    in_subrepos remote modify "$name" verify true
    if grep -qiE 'access_key_id|secret_access_key|session_token' .dvc/config; then
      die ".dvc/config holds S3 credentials: move them to .dvc/config.local (dvc remote modify --local)"
    fi
    echo "share.sh: default DVC remote '$name' -> $url${endpoint:+ (endpoint $endpoint)} (commit .dvc/config;"
    echo "          credentials: AWS_* variables or 'dvc remote modify --local $name access_key_id ...')"
    ;;

  push)
    parse_remote "$@"
    check_s3_credentials "$REMOTE"
    check_reachable "$REMOTE"
    start=$(date +%s)
    $DVC push --run-cache -r "$REMOTE" ${ARGS[@]+"${ARGS[@]}"}
    # Every cached output must now be in the remote: `status --cloud` lists what is not.
    missing=$($DVC status --cloud -r "$REMOTE" --json ${ARGS[@]+"${ARGS[@]}"})
    if [ "$missing" != "{}" ]; then
      die "push to '$REMOTE' incomplete, not in the remote: $missing"
    fi
    if [ ${#ARGS[@]} -eq 0 ]; then  # the study students too (a subrepo without this remote: skipped, said)
      in_subrepos push -r "$REMOTE" || echo "share.sh: the study students ($SUBREPOS) were not pushed to '$REMOTE'" >&2
    fi
    echo "share.sh: pushed to '$REMOTE' (outputs + run-cache) in $(( $(date +%s) - start )) s"
    ;;

  pull)
    parse_remote "$@"
    check_s3_credentials "$REMOTE"
    check_reachable "$REMOTE"
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
      [ -n "$bad" ] || die "pull from '$REMOTE' FAILED (see the DVC error above), yet no output is missing here now:
  every output is in the workspace (a retry pulled the rest, or they were there already); what failed is
  DVC's run-cache or a transient error. Run it again to be sure; 'scripts/share.sh verify' checks the files"
      echo "share.sh: pull from '$REMOTE' FAILED: missing or corrupt in the remote (not checked out):$bad" >&2
      # shellcheck disable=SC2086
      recovery_steps "$REMOTE" $bad
      exit 1
    fi
    if ! $PYTHON "$HERE/verify_outputs.py" ${ARGS[@]+"${ARGS[@]}"}; then
      die "pull from '$REMOTE' gave outputs that do not match dvc.lock (see above): re-run the pull; if it
  repeats, the remote holds a bad copy: push a verified one (scripts/share.sh verify, then dvc push -r $REMOTE)"
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
