//! Identifier newtypes. A value of these types is always valid: the only ways in are
//! [`parse`](FlowId::parse) and deserialisation, which calls it.

use std::borrow::Cow;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string is empty.
    #[error("must not be empty")]
    Empty,
    /// The string is longer than the type allows.
    #[error("is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Length of the rejected string, in bytes (every allowed character is one byte).
        len: usize,
        /// The type's limit.
        max: usize,
    },
    /// The string is `.` or `..`, which a URL path resolves away (`/v1/flows/..` is
    /// `/v1`): such an id could never be named in one.
    #[error("must not be . or ..")]
    DotSegment,
    /// The string holds a character outside `A-Z a-z 0-9 _ - . : ~`.
    #[error("contains {found:?}; allowed are letters, digits and _ - . : ~")]
    BadChar {
        /// The first offending character.
        found: char,
    },
}

/// The characters an id may hold. Deliberately ASCII and free of `{`, `}`, `/`, spaces and
/// quotes, so an id is safe in a URL path, a Redis key hash tag and a log line.
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '~')
}

fn check(s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    // Length first: a hostile megabyte-long "id" is refused without scanning it.
    if s.len() > max {
        return Err(IdError::TooLong { len: s.len(), max });
    }
    if s == "." || s == ".." {
        return Err(IdError::DotSegment);
    }
    match s.chars().find(|c| !allowed(*c)) {
        Some(found) => Err(IdError::BadChar { found }),
        None => Ok(()),
    }
}

/// The regular expression the JSON Schema advertises for every id type.
const ID_PATTERN: &str = "^(?!\\.\\.?$)[A-Za-z0-9_.:~-]+$";

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Longest accepted value, in bytes (= characters: every allowed character is ASCII).
            pub const MAX_LEN: usize = $max;

            /// Validates `s` and wraps it.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check(&s, Self::MAX_LEN)?;
                Ok(Self(s))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": $max,
                    "pattern": ID_PATTERN,
                })
            }
        }
    };
}

id_type!(
    /// A flow (canvas) id.
    FlowId,
    128
);
id_type!(
    /// A node id, unique within its flow.
    NodeId,
    128
);
id_type!(
    /// An edge id, unique within its flow.
    EdgeId,
    128
);
id_type!(
    /// A client-made op id; the key of idempotent retries (DESIGN §1.7).
    OpId,
    128
);
id_type!(
    /// The sending client's id (one per browser tab or agent session).
    ClientId,
    128
);
id_type!(
    /// An execution id.
    ExecutionId,
    128
);
id_type!(
    /// The id of an actor: a token's `sub`.
    ActorId,
    256
);
id_type!(
    /// One SSE connection, named in `READY` and `PRESENCE`.
    ConnectionId,
    128
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        let id = NodeId::parse("n1_A-b.c:d~e").unwrap();
        assert_eq!(id.as_str(), "n1_A-b.c:d~e");
    }

    #[test]
    fn rejects_empty_long_and_bad_characters() {
        assert_eq!(FlowId::parse(""), Err(IdError::Empty));
        assert_eq!(
            OpId::parse("x".repeat(129)),
            Err(IdError::TooLong { len: 129, max: 128 })
        );
        assert!(OpId::parse("x".repeat(128)).is_ok());
        for bad in ["a b", "a/b", "{a}", "é", "a\"", "a\u{0}", "👍"] {
            assert!(
                matches!(NodeId::parse(bad), Err(IdError::BadChar { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn rejects_the_ids_a_url_would_resolve_away() {
        for dots in [".", ".."] {
            assert_eq!(FlowId::parse(dots), Err(IdError::DotSegment));
        }
        assert!(FlowId::parse("...").is_ok());
        assert!(FlowId::parse(".a").is_ok());
    }

    #[test]
    fn deserialisation_goes_through_parse() {
        let err = serde_json::from_str::<EdgeId>("\"a/b\"").unwrap_err();
        assert!(err.to_string().contains("'/'"), "{err}");
        let ok: EdgeId = serde_json::from_str("\"e1\"").unwrap();
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"e1\"");
    }
}
