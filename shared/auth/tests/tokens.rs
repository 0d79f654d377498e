//! Tokens of every mode, accepted and refused.

use std::path::PathBuf;

use flowsync_auth::*;
use flowsync_protocol::{ActorKind, FlowId};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn in_an_hour() -> i64 {
    chrono::Utc::now().timestamp() + 3600
}

fn hs(claims: &Value, secret: &str) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn rs(claims: &Value, kid: Option<&str>) -> String {
    let key = EncodingKey::from_rsa_pem(&std::fs::read(fixture("test-rsa-private.pem")).unwrap())
        .unwrap();
    let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key).unwrap()
}

fn hs256() -> Authenticator {
    Authenticator::new(&AuthConfig {
        mode: AuthMode::Hs256,
        hs256_secret: Some(Secret::new("s3cret")),
        ..AuthConfig::default()
    })
    .unwrap()
}

#[test]
fn hs256_tokens_become_principals() {
    let auth = hs256();
    let token = hs(
        &json!({"sub":"agent-7","name":"Planner","kind":"agent","flows":["f1"],"scope":"read write","exp":in_an_hour()}),
        "s3cret",
    );
    let p = auth.authenticate(Some(&token)).unwrap();
    assert_eq!(
        (p.actor.id.as_str(), p.actor.kind, p.actor.name.as_str()),
        ("agent-7", ActorKind::Agent, "Planner")
    );
    let f1 = FlowId::parse("f1").unwrap();
    let f2 = FlowId::parse("f2").unwrap();
    assert_eq!(p.check(&f1, Scope::Write), Ok(()));
    assert_eq!(
        p.check(&f1, Scope::Execute),
        Err(Denied::Scope(Scope::Execute))
    );
    assert_eq!(p.check(&f2, Scope::Read), Err(Denied::Flow(f2.clone())));
    let all = hs(
        &json!({"sub":"w","flows":["*"],"scopes":["publish"],"exp":in_an_hour()}),
        "s3cret",
    );
    let p = auth.authenticate(Some(&all)).unwrap();
    assert_eq!(p.check(&f2, Scope::Publish), Ok(()));
    assert_eq!(p.actor.name, "w", "name defaults to sub");
}

#[test]
fn bad_tokens_are_refused() {
    let auth = hs256();
    assert_eq!(auth.authenticate(None), Err(AuthError::Missing));
    let expired = hs(
        &json!({"sub":"u","flows":["*"],"exp":chrono::Utc::now().timestamp() - 3600}),
        "s3cret",
    );
    assert_eq!(auth.authenticate(Some(&expired)), Err(AuthError::Expired));
    for bad in [
        hs(&json!({"sub":"u","exp":in_an_hour()}), "other-secret"),
        hs(&json!({"sub":"u"}), "s3cret"),
        hs(&json!({"exp":in_an_hour()}), "s3cret"),
        hs(&json!({"sub":"u/1","exp":in_an_hour()}), "s3cret"),
        hs(
            &json!({"sub":"u","kind":"system","exp":in_an_hour()}),
            "s3cret",
        ),
        hs(
            &json!({"sub":"u","flows":["a b"],"exp":in_an_hour()}),
            "s3cret",
        ),
        rs(&json!({"sub":"u","exp":in_an_hour()}), None),
        "not.a.token".into(),
        String::new(),
    ] {
        assert!(
            matches!(auth.authenticate(Some(&bad)), Err(AuthError::Invalid(_))),
            "{bad} accepted"
        );
    }
}

#[test]
fn a_token_not_valid_yet_is_refused_beyond_the_leeway() {
    let auth = hs256();
    let now = chrono::Utc::now().timestamp();
    let at = |nbf: i64| {
        hs(
            &json!({"sub": "a", "exp": in_an_hour(), "nbf": nbf}),
            "s3cret",
        )
    };
    assert!(matches!(
        auth.authenticate(Some(&at(now + 600))),
        Err(AuthError::Invalid(_))
    ));
    // Within the leeway (clock skew): accepted.
    let leeway = AuthConfig::default().leeway_secs as i64;
    assert!(auth.authenticate(Some(&at(now + leeway / 2))).is_ok());
    assert!(auth.authenticate(Some(&at(now - 60))).is_ok());
}

#[test]
fn rs256_with_a_pem_key_and_with_jwks() {
    let pem = Authenticator::new(&AuthConfig {
        mode: AuthMode::Rs256,
        rs256_public_key_file: Some(fixture("test-rsa-public.pem")),
        ..AuthConfig::default()
    })
    .unwrap();
    let token = rs(
        &json!({"sub":"u","flows":["*"],"scope":"read","exp":in_an_hour()}),
        Some("test-key-1"),
    );
    assert_eq!(
        pem.authenticate(Some(&token)).unwrap().actor.id.as_str(),
        "u"
    );
    // An HS256 token signed with the public key as secret (algorithm confusion) is refused.
    let confused = hs(
        &json!({"sub":"u","exp":in_an_hour()}),
        &std::fs::read_to_string(fixture("test-rsa-public.pem")).unwrap(),
    );
    assert!(matches!(
        pem.authenticate(Some(&confused)),
        Err(AuthError::Invalid(_))
    ));

    let jwks = Authenticator::new(&AuthConfig {
        mode: AuthMode::Jwks,
        jwks_file: Some(fixture("test-jwks.json")),
        ..AuthConfig::default()
    })
    .unwrap();
    assert!(jwks.authenticate(Some(&token)).is_ok());
    let no_kid = rs(&json!({"sub":"u","exp":in_an_hour()}), None);
    assert!(matches!(
        jwks.authenticate(Some(&no_kid)),
        Err(AuthError::Invalid(_))
    ));
    let unknown = rs(&json!({"sub":"u","exp":in_an_hour()}), Some("other"));
    assert!(matches!(
        jwks.authenticate(Some(&unknown)),
        Err(AuthError::Invalid(_))
    ));
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let auth = Authenticator::new(&AuthConfig {
        mode: AuthMode::Hs256,
        hs256_secret: Some(Secret::new("k")),
        issuer: Some("https://idp".into()),
        audience: Some("flowsync".into()),
        ..AuthConfig::default()
    })
    .unwrap();
    let good = hs(
        &json!({"sub":"u","iss":"https://idp","aud":"flowsync","exp":in_an_hour()}),
        "k",
    );
    assert!(auth.authenticate(Some(&good)).is_ok());
    let wrong = hs(
        &json!({"sub":"u","iss":"https://evil","aud":"flowsync","exp":in_an_hour()}),
        "k",
    );
    assert!(auth.authenticate(Some(&wrong)).is_err());
}

#[test]
fn setup_errors_and_auth_off() {
    let e = Authenticator::new(&AuthConfig {
        mode: AuthMode::Hs256,
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("hs256_secret"), "{e}");
    let e = Authenticator::new(&AuthConfig {
        mode: AuthMode::Rs256,
        rs256_public_key_file: Some(fixture("missing.pem")),
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("missing.pem"), "{e}");
    let off = Authenticator::new(&AuthConfig::default()).unwrap();
    assert!(!off.is_enabled());
    assert_eq!(off.authenticate(None).unwrap(), Principal::local());
}

#[test]
fn secrets_never_print() {
    let config = AuthConfig {
        mode: AuthMode::Hs256,
        hs256_secret: Some(Secret::new("hunter2")),
        ..AuthConfig::default()
    };
    assert!(!format!("{config:?}").contains("hunter2"));
    assert!(!format!("{:?}", hs256()).contains("s3cret"));
}

#[test]
fn bearer_tokens_are_read_in_one_place() {
    use flowsync_auth::bearer_token;
    assert_eq!(bearer_token("Bearer abc"), Some("abc"));
    assert_eq!(bearer_token("bearer  abc "), Some("abc"));
    assert_eq!(
        bearer_token("BEARER abc"),
        Some("abc"),
        "the scheme in any case"
    );
    assert_eq!(bearer_token("Basic abc"), None);
    assert_eq!(bearer_token("Bearer "), None);
    assert_eq!(bearer_token("Bearerabc"), None);
    assert_eq!(flowsync_auth::AuthError::Expired.code(), "token_expired");
    assert_eq!(flowsync_auth::AuthError::Missing.code(), "unauthorized");
}
