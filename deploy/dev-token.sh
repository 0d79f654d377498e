#!/usr/bin/env bash
# Mints an HS256 token for local use: every flow, every scope, valid 30 days.
# Usage: deploy/dev-token.sh [secret] [subject]   (secret: $FLOWSYNC_DEV_SECRET or compose's default)
set -euo pipefail
SECRET=${1:-${FLOWSYNC_DEV_SECRET:-flowsync-local-dev-secret-change-me}}
SUB=${2:-dev}
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
claims=$(printf '{"sub":"%s","name":"%s","kind":"user","flows":["*"],"scope":"read write execute publish","exp":%d}' \
  "$SUB" "$SUB" "$(( $(date +%s) + 30 * 86400 ))" | b64url)
signature=$(printf '%s.%s' "$header" "$claims" | openssl dgst -sha256 -hmac "$SECRET" -binary | b64url)
printf '%s.%s.%s\n' "$header" "$claims" "$signature"
