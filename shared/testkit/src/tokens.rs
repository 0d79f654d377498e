//! HS256 tokens for tests, signed with one secret every test's services are given.

use serde_json::json;

/// The HS256 secret of the test kit's tokens (at least 32 bytes, as the services require).
pub const SECRET: &str = "flowsync-test-secret-of-at-least-32-bytes";

/// Auth settings that accept the kit's tokens.
pub fn hs256() -> flowsync_auth::AuthConfig {
    flowsync_auth::AuthConfig {
        mode: flowsync_auth::AuthMode::Hs256,
        hs256_secret: Some(flowsync_auth::Secret::new(SECRET)),
        ..flowsync_auth::AuthConfig::default()
    }
}

/// A token for `sub` of `kind` (`user`, `agent`, `worker`) on `flows` (`*`: all) with the
/// space-separated `scope`, valid for an hour.
pub fn token(sub: &str, kind: &str, flows: &[&str], scope: &str) -> String {
    token_signed(sub, kind, flows, scope, 3600, SECRET)
}

/// Like [`token`], valid for `ttl` seconds (negative: already expired) and signed with
/// `secret` (another issuer's key, for refusals).
pub fn token_signed(
    sub: &str,
    kind: &str,
    flows: &[&str],
    scope: &str,
    ttl: i64,
    secret: &str,
) -> String {
    let claims = json!({"sub": sub, "kind": kind, "flows": flows, "scope": scope,
                        "exp": chrono::Utc::now().timestamp() + ttl});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("an HS256 token encodes")
}
