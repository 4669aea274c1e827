#!/bin/sh
# Uploads UPLOAD_BYTES random bytes to the tus endpoint TUSK_URL (e.g.
# http://tusk:80/files/) in two PATCHes, checks every status and offset, downloads the upload
# and compares sha256. Needs sh, curl, head, tail, wc, tr, sha256sum. Exit 0: passed.
set -eu
: "${TUSK_URL:?TUSK_URL, e.g. http://tusk/files/}"
UPLOAD_BYTES="${UPLOAD_BYTES:-1048576}"
WORK_DIR="${WORK_DIR:-/tmp}"
cd "$WORK_DIR"

fail() { echo "FAIL: $*" >&2; exit 1; }
# header NAME FILE: the value of response header NAME (case-insensitive) in a curl -D dump.
header() {
  tr -d '\r' < "$2" | while IFS= read -r line; do
    case "$(printf '%s' "${line%%:*}" | tr 'A-Z' 'a-z')" in
      "$1") printf '%s\n' "${line#*:}" | sed 's/^ *//' ;;
    esac
  done | tail -n 1
}
# request OUT_HEADERS METHOD URL [curl args...]: prints the status code.
request() {
  out="$1"; method="$2"; url="$3"; shift 3
  curl -sS -o body.out -D "$out" -w '%{http_code}' -X "$method" "$url" \
    -H 'Tus-Resumable: 1.0.0' "$@"
}

head -c "$UPLOAD_BYTES" /dev/urandom > upload.bin
size=$(wc -c < upload.bin | tr -d ' ')
half=$((size / 2))
head -c "$half" upload.bin > part1.bin
tail -c "$((size - half))" upload.bin > part2.bin
want=$(sha256sum < upload.bin | cut -d' ' -f1)

status=$(request post.h POST "$TUSK_URL" -H "Upload-Length: $size" \
  -H 'Upload-Metadata: filename aGVsbS10ZXN0LmJpbg==')
[ "$status" = 201 ] || fail "POST $TUSK_URL answered $status"
location=$(header location post.h)
[ -n "$location" ] || fail "POST answered no Location"
case "$location" in
  http://*|https://*) url="$location" ;;
  /*) url="$(printf '%s' "$TUSK_URL" | sed 's|^\(https\{0,1\}://[^/]*\).*|\1|')$location" ;;
  *) fail "odd Location: $location" ;;
esac
echo "created $url ($size bytes)"

offset=0
for part in part1.bin part2.bin; do
  status=$(request patch.h PATCH "$url" -H "Upload-Offset: $offset" \
    -H 'Content-Type: application/offset+octet-stream' --data-binary "@$part")
  [ "$status" = 204 ] || fail "PATCH at $offset answered $status"
  offset=$((offset + $(wc -c < "$part" | tr -d ' ')))
  got=$(header upload-offset patch.h)
  [ "$got" = "$offset" ] || fail "PATCH: Upload-Offset $got, expected $offset"
  status=$(request head.h HEAD "$url" -I)
  [ "$status" = 200 ] || fail "HEAD answered $status"
  got=$(header upload-offset head.h)
  [ "$got" = "$offset" ] || fail "HEAD: Upload-Offset $got, expected $offset"
  echo "patched to $offset"
done

# -L: with S3 storage and presigned GETs Tusk answers 302 to the bucket.
status=$(curl -sS -L -o download.bin -w '%{http_code}' "$url")
[ "$status" = 200 ] || fail "GET answered $status"
got=$(sha256sum < download.bin | cut -d' ' -f1)
[ "$got" = "$want" ] || fail "GET: sha256 $got, uploaded $want"
echo "PASS: $size bytes uploaded and read back, sha256 $want"
