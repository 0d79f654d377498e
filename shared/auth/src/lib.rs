//! Authentication and authorisation (DESIGN §7): a JWT bearer token becomes a
//! [`Principal`] — the actor it speaks for, the flows it may touch and its scopes.
//!
//! Tokens are signed with HS256 (shared secret) or RS256 (a PEM public key, or a JWKS file
//! whose key is chosen by the token's `kid`). Claims:
//!
//! ```json
//! {"sub": "u1", "name": "Ada", "kind": "user", "flows": ["f1", "f2"],
//!  "scope": "read write", "exp": 1767225600}
//! ```
//!
//! `flows: ["*"]` allows every flow; `scope` is space-separated (OAuth style) or `scopes` is
//! an array; `kind` is `user` (default), `agent` or `worker`; `name` defaults to `sub`.
//! `exp` is required. Auth may be off only by configuration (the one binary on loopback),
//! and then every request is the local user with every right.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use flowsync_protocol::{Actor, ActorId, ActorKind, FlowId};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Deserializer, Serialize};

/// A secret string: never printed by `Debug`, never written by `Serialize` (both give
/// `[redacted]`).
#[derive(Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Secret(String);

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// How tokens are checked.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No tokens: every request is the local user. Only for the one binary on loopback.
    #[default]
    Off,
    /// HS256 with a shared secret.
    Hs256,
    /// RS256 with a PEM public key.
    Rs256,
    /// RS256 with the keys of a JWKS file, chosen by `kid`.
    Jwks,
}

/// Auth settings (`FLOWSYNC_AUTH__…`).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// How tokens are checked.
    pub mode: AuthMode,
    /// The HS256 secret (mode `hs256`).
    pub hs256_secret: Option<Secret>,
    /// A PEM file with the RS256 public key (mode `rs256`).
    pub rs256_public_key_file: Option<PathBuf>,
    /// A JWKS file (mode `jwks`).
    pub jwks_file: Option<PathBuf>,
    /// The required `iss`, when set.
    pub issuer: Option<String>,
    /// The required `aud`, when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds: 30, so an issuer whose clock is
    /// a little ahead does not mint tokens refused as "not valid yet".
    pub leeway_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::default(),
            hs256_secret: None,
            rs256_public_key_file: None,
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
        }
    }
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Read flows, history, events, presence.
    Read,
    /// Send ops and presence, create and delete flows.
    Write,
    /// Start and cancel executions.
    Execute,
    /// Publish execution events as a worker.
    Publish,
}

impl Scope {
    /// The scope's name in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Execute => "execute",
            Self::Publish => "publish",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "read" => Self::Read,
            "write" => Self::Write,
            "execute" => Self::Execute,
            "publish" => Self::Publish,
            _ => return None,
        })
    }
}

/// Which flows a principal may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowAccess {
    /// Every flow (`"flows": ["*"]`, or auth off).
    All,
    /// These flows only.
    Only(HashSet<FlowId>),
}

/// Who is calling and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The actor events will name.
    pub actor: Actor,
    /// The flows it may touch.
    pub flows: FlowAccess,
    /// What it may do there.
    pub scopes: HashSet<Scope>,
}

/// Why a request may not do what it asks (HTTP 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The token does not list the flow.
    #[error("this token does not give access to flow {0}")]
    Flow(FlowId),
    /// The token lacks the scope.
    #[error("this token lacks the {} scope", .0.as_str())]
    Scope(Scope),
}

impl Principal {
    /// The principal of every request when auth is off.
    pub fn local() -> Self {
        Self {
            actor: Actor {
                id: ActorId::parse("local").expect("valid id"),
                kind: ActorKind::User,
                name: "local".into(),
            },
            flows: FlowAccess::All,
            scopes: [Scope::Read, Scope::Write, Scope::Execute, Scope::Publish].into(),
        }
    }

    /// Whether the principal may touch `flow` at all.
    pub fn sees(&self, flow: &FlowId) -> bool {
        match &self.flows {
            FlowAccess::All => true,
            FlowAccess::Only(flows) => flows.contains(flow),
        }
    }

    /// Checks the principal may do `scope` on `flow`.
    pub fn check(&self, flow: &FlowId, scope: Scope) -> Result<(), Denied> {
        if !self.sees(flow) {
            return Err(Denied::Flow(flow.clone()));
        }
        self.check_scope(scope)
    }

    /// Checks the principal has `scope` (for requests not about one flow).
    pub fn check_scope(&self, scope: Scope) -> Result<(), Denied> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(Denied::Scope(scope))
        }
    }
}

/// Why a token is not accepted (HTTP 401). Messages never include the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was sent.
    #[error("a bearer token is required")]
    Missing,
    /// The token has expired.
    #[error("the token has expired")]
    Expired,
    /// The token is malformed, wrongly signed or its claims are not acceptable.
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl AuthError {
    /// The error body's `code` (DESIGN §3) for the `401` every service answers with
    /// `WWW-Authenticate: Bearer`: `token_expired` tells a client to refresh its token.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Expired => "token_expired",
            Self::Missing | Self::Invalid(_) => "unauthorized",
        }
    }
}

impl Denied {
    /// The error body's `code` for the `403`.
    pub fn code(&self) -> &'static str {
        "forbidden"
    }
}

/// The token of an `Authorization` header value `Bearer <token>` (the scheme in any case,
/// RFC 7235); `None` for any other scheme or an empty token.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A configuration that cannot work (at startup).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A setting the mode needs is missing.
    #[error("auth mode {mode:?} needs {setting}")]
    Missing {
        /// The mode.
        mode: AuthMode,
        /// The missing setting.
        setting: &'static str,
    },
    /// A key file cannot be read or parsed.
    #[error("cannot load {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The keys tokens are checked with.
enum Keys {
    Off,
    One(DecodingKey),
    Jwks(JwkSet),
}

/// Checks tokens. Built once at startup.
pub struct Authenticator {
    keys: Keys,
    validation: Validation,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.keys {
            Keys::Off => "off",
            Keys::One(_) => "single key",
            Keys::Jwks(_) => "jwks",
        };
        f.debug_struct("Authenticator")
            .field("keys", &mode)
            .finish()
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|e| SetupError::Key {
        path: path.clone(),
        reason: e.to_string(),
    })
}

impl Authenticator {
    /// Whether tokens are not checked (auth off): every caller is the same local user, so
    /// there are no subjects to keep apart.
    pub fn is_off(&self) -> bool {
        matches!(self.keys, Keys::Off)
    }

    /// Builds an authenticator, loading key files.
    pub fn new(config: &AuthConfig) -> Result<Self, SetupError> {
        let missing = |setting| SetupError::Missing {
            mode: config.mode,
            setting,
        };
        let (keys, algorithm) = match config.mode {
            AuthMode::Off => (Keys::Off, Algorithm::HS256),
            AuthMode::Hs256 => {
                let secret = config
                    .hs256_secret
                    .as_ref()
                    .ok_or_else(|| missing("hs256_secret"))?;
                (
                    Keys::One(DecodingKey::from_secret(secret.expose().as_bytes())),
                    Algorithm::HS256,
                )
            }
            AuthMode::Rs256 => {
                let path = config
                    .rs256_public_key_file
                    .as_ref()
                    .ok_or_else(|| missing("rs256_public_key_file"))?;
                let key = DecodingKey::from_rsa_pem(&read(path)?).map_err(|e| SetupError::Key {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                (Keys::One(key), Algorithm::RS256)
            }
            AuthMode::Jwks => {
                let path = config
                    .jwks_file
                    .as_ref()
                    .ok_or_else(|| missing("jwks_file"))?;
                let set: JwkSet =
                    serde_json::from_slice(&read(path)?).map_err(|e| SetupError::Key {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                (Keys::Jwks(set), Algorithm::RS256)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway_secs;
        // A token not valid yet is refused like an expired one (off by default in
        // jsonwebtoken); the same leeway applies.
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
        }
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Self { keys, validation })
    }

    /// Whether tokens are checked at all.
    pub fn is_enabled(&self) -> bool {
        !matches!(self.keys, Keys::Off)
    }

    /// The principal of a request carrying `token` (without the `Bearer ` prefix).
    pub fn authenticate(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        let key = match &self.keys {
            Keys::Off => return Ok(Principal::local()),
            Keys::One(key) => key.clone(),
            Keys::Jwks(set) => {
                let token = token.ok_or(AuthError::Missing)?;
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|e| AuthError::Invalid(e.to_string()))?;
                let kid = header
                    .kid
                    .ok_or_else(|| AuthError::Invalid("the token names no key (kid)".into()))?;
                let jwk = set
                    .find(&kid)
                    .ok_or_else(|| AuthError::Invalid(format!("unknown key {kid:?}")))?;
                DecodingKey::from_jwk(jwk).map_err(|e| AuthError::Invalid(e.to_string()))?
            }
        };
        let token = token.ok_or(AuthError::Missing)?;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            }
        })?;
        data.claims.into_principal()
    }
}

/// The claims flowsync reads.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    flows: Vec<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default, deserialize_with = "strings")]
    scopes: Vec<String>,
}

fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Option::<Vec<String>>::deserialize(d).map(Option::unwrap_or_default)
}

impl Claims {
    fn into_principal(self) -> Result<Principal, AuthError> {
        let invalid = |m: String| AuthError::Invalid(m);
        let id = ActorId::parse(&self.sub).map_err(|e| invalid(format!("sub {e}")))?;
        let kind = match self.kind.as_deref().unwrap_or("user") {
            "user" => ActorKind::User,
            "agent" => ActorKind::Agent,
            "worker" => ActorKind::Worker,
            other => {
                return Err(invalid(format!(
                    "kind {other:?} is not user, agent or worker"
                )));
            }
        };
        let flows = if self.flows.iter().any(|f| f == "*") {
            FlowAccess::All
        } else {
            FlowAccess::Only(
                self.flows
                    .iter()
                    .map(|f| {
                        FlowId::parse(f.as_str()).map_err(|e| invalid(format!("flows: {f:?} {e}")))
                    })
                    .collect::<Result<_, _>>()?,
            )
        };
        let names = self
            .scope
            .iter()
            .flat_map(|s| s.split_whitespace())
            .chain(self.scopes.iter().map(String::as_str));
        // Unknown scopes are ignored: tokens may carry scopes of other services.
        let scopes = names.filter_map(Scope::parse).collect();
        Ok(Principal {
            actor: Actor {
                name: self.name.unwrap_or_else(|| self.sub.clone()),
                id,
                kind,
            },
            flows,
            scopes,
        })
    }
}
