//! The loader: defaults, then a TOML file (`FLOWSYNC_CONFIG` or the one binary's
//! `--config`), then `FLOWSYNC_<SECTION>__<KEY>` variables (and the top-level
//! `FLOWSYNC_LISTEN`, `FLOWSYNC_DATA_DIR`), then flags.
//!
//! A `FLOWSYNC_*` variable is either a setting or a [`Switch`] of the process; anything
//! else is refused with its name, so a misspelt variable never goes unnoticed, and a
//! switch (`FLOWSYNC_LOG_JSON`, which every image sets) never reaches the model.

use std::path::{Path, PathBuf};

use crate::{Program, Settings};

/// A `FLOWSYNC_*` variable that is not a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    /// The variable.
    pub name: &'static str,
    /// Who reads it, and what it does.
    pub meaning: &'static str,
}

/// The `FLOWSYNC_*` variables that are not settings: switches of the process itself, and
/// variables of the tools around it that may share its environment. Variables starting
/// with [`TEST_PREFIX`] belong to the test kit.
pub const SWITCHES: &[Switch] = &[
    Switch {
        name: "FLOWSYNC_CONFIG",
        meaning: "a TOML file of settings, read after the defaults and before the variables",
    },
    Switch {
        name: "FLOWSYNC_LOG_JSON",
        meaning: "set (to anything): logs are JSON lines",
    },
    Switch {
        name: "FLOWSYNC_URL",
        meaning: "clients and agents: the server's address",
    },
    Switch {
        name: "FLOWSYNC_TOKEN",
        meaning: "clients and agents: their bearer token",
    },
    Switch {
        name: "FLOWSYNC_DEV_SECRET",
        meaning: "docker-compose and `deploy/dev-token.sh`: the development HS256 secret",
    },
    Switch {
        name: "FLOWSYNC_PORT",
        meaning: "docker-compose: the port the proxy is published on (127.0.0.1:8080)",
    },
];

/// Variables of the test kit (`FLOWSYNC_TEST_MONGO_URI`, …), never settings.
pub const TEST_PREFIX: &str = "FLOWSYNC_TEST_";

const PREFIX: &str = "FLOWSYNC_";

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A `FLOWSYNC_*` variable that names no setting and no switch.
    #[error("{name} is not a flowsync setting (`FLOWSYNC_<SECTION>__<KEY>`, see the README) nor a known switch ({switches})", switches = switch_names())]
    UnknownVariable {
        /// The variable.
        name: String,
    },
    /// A setting that is unknown or has a value of the wrong kind.
    #[error("{origin}: {message}")]
    Invalid {
        /// Where the value came from: the variable, the file's key or the flag.
        origin: String,
        /// What is wrong with it.
        message: String,
    },
    /// The file could not be read or parsed.
    #[error("reading the settings: {0}")]
    Source(#[from] config::ConfigError),
}

fn switch_names() -> String {
    SWITCHES
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where settings come from besides the defaults.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The TOML file; `None`: the one `FLOWSYNC_CONFIG` names, if any.
    pub file: Option<PathBuf>,
    /// The process's environment (every variable; only `FLOWSYNC_*` ones are read).
    pub env: Vec<(String, String)>,
    /// Flags, as `(key path, value)`, e.g. `("listen", "0.0.0.0:8080")`: they win.
    pub flags: Vec<(&'static str, String)>,
}

impl Sources {
    /// The process's own environment, no flags.
    pub fn from_env() -> Self {
        Self {
            file: None,
            env: std::env::vars().collect(),
            flags: vec![],
        }
    }
}

impl Settings {
    /// Loads `program`'s settings from the process's environment (and the file
    /// `FLOWSYNC_CONFIG` names).
    pub fn load(program: Program) -> Result<Self, SettingsError> {
        Self::load_from(program, Sources::from_env())
    }

    /// Loads `program`'s settings from `sources`.
    pub fn load_from(program: Program, sources: Sources) -> Result<Self, SettingsError> {
        let mut settings = Vec::new();
        let mut file = sources.file;
        for (name, value) in sources.env {
            let Some(key) = name.strip_prefix(PREFIX) else {
                continue;
            };
            if name.starts_with(TEST_PREFIX) {
                continue;
            }
            if name == "FLOWSYNC_CONFIG" {
                file = file.or_else(|| Some(PathBuf::from(&value)));
                continue;
            }
            if SWITCHES.iter().any(|s| s.name == name) {
                continue;
            }
            // Sections are `SECTION__KEY`; the top level has `LISTEN` and `DATA_DIR` only,
            // so a misspelt switch or top-level key is caught here with its name.
            if !key.contains("__") && !["LISTEN", "DATA_DIR"].contains(&key) {
                return Err(SettingsError::UnknownVariable { name });
            }
            settings.push((name, value));
        }

        // The rest of the defaults are the types' own (`#[serde(default)]`); the backends'
        // kinds are given here so that a section naming only, say, `path` still picks one.
        let mut builder = config::Config::builder()
            .set_default("listen", program.default_listen())?
            .set_default("store.kind", "sqlite")?
            .set_default("bus.kind", "memory")?;
        if let Some(path) = &file {
            builder = builder.add_source(config::File::from(path.as_path()));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("FLOWSYNC")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("http.cors_origins")
                .with_list_parse_key("sse.cors_origins")
                .with_list_parse_key("runner.http_allow")
                .source(Some(settings.iter().cloned().collect())),
        );
        for (key, value) in &sources.flags {
            builder = builder.set_override(*key, value.as_str())?;
        }
        let merged = builder.build()?;
        serde_path_to_error::deserialize(merged).map_err(|e| {
            let mut path = e.path().to_string();
            let mut message = e.inner().to_string();
            // config-rs names the parent table; the origin says it better.
            if let Some(at) = message.rfind(" for key `") {
                message.truncate(at);
            }
            // An unknown top-level key is reported at the root; name the key itself.
            if path == "."
                && let Some(field) = message
                    .strip_prefix("unknown field `")
                    .and_then(|rest| rest.split('`').next())
            {
                path = field.to_owned();
            }
            SettingsError::Invalid {
                origin: origin(&path, &settings, file.as_deref(), &sources.flags),
                message,
            }
        })
    }
}

/// Where the value at `path` (`sse.heartbeat`, or a whole section) came from, in the terms
/// the user wrote it.
fn origin(
    path: &str,
    env: &[(String, String)],
    file: Option<&Path>,
    flags: &[(&'static str, String)],
) -> String {
    let under = |key: &str| key == path || key.starts_with(&format!("{path}."));
    if let Some((key, _)) = flags.iter().find(|(k, _)| under(k)) {
        return format!("the flag for `{key}`");
    }
    let variable = |key: &str| format!("{PREFIX}{}", key.replace('.', "__").to_uppercase());
    if let Some((name, _)) = env.iter().find(|(name, _)| {
        let key = name[PREFIX.len()..].to_lowercase().replace("__", ".");
        under(&key)
    }) {
        return name.clone();
    }
    match file {
        Some(file) => format!("`{path}` in {} (or {})", file.display(), variable(path)),
        None => format!("`{path}` ({})", variable(path)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> Sources {
        Sources {
            env: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Sources::default()
        }
    }

    #[test]
    fn switches_are_not_settings() {
        let settings = Settings::load_from(
            Program::Api,
            env(&[
                ("FLOWSYNC_LOG_JSON", "1"),
                ("FLOWSYNC_DEV_SECRET", "x"),
                ("FLOWSYNC_TEST_MONGO_URI", "mongodb://x"),
                ("FLOWSYNC_LISTEN", "0.0.0.0:9"),
                ("FLOWSYNC_SSE__HEARTBEAT", "2.5"),
                (
                    "FLOWSYNC_HTTP__CORS_ORIGINS",
                    "https://a.example,https://b.example",
                ),
                ("FLOWSYNC_RUNNER__HTTP_ALLOW", "10.1.0.0/16,127.0.0.1/32"),
                ("PATH", "/bin"),
            ]),
        )
        .expect("loads");
        assert_eq!(settings.listen, "0.0.0.0:9");
        assert_eq!(settings.sse.heartbeat, Duration::from_millis(2500));
        assert_eq!(
            settings.http.cors_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(
            settings.runner.http_allow,
            [
                "10.1.0.0/16".parse().unwrap(),
                "127.0.0.1/32".parse().unwrap()
            ] as [ipnet::IpNet; 2]
        );
    }

    #[test]
    fn each_program_has_its_own_listen_default() {
        for program in Program::ALL {
            let settings = Settings::load_from(program, Sources::default()).expect("loads");
            assert_eq!(settings.listen, program.default_listen());
        }
    }

    #[test]
    fn a_misspelt_variable_is_named() {
        for (name, wanted) in [
            ("FLOWSYNC_SSE__HEARTBEATS", "FLOWSYNC_SSE__HEARTBEATS"),
            ("FLOWSYNC_SSEE__HEARTBEAT", "FLOWSYNC_SSEE__HEARTBEAT"),
            ("FLOWSYNC_LOGJSON", "FLOWSYNC_LOGJSON"),
            ("FLOWSYNC_RUNNER__LLM__MODLE", "FLOWSYNC_RUNNER__LLM__MODLE"),
        ] {
            let err = Settings::load_from(Program::Gateway, env(&[(name, "1")]))
                .expect_err("refused")
                .to_string();
            assert!(err.starts_with(wanted), "{name}: {err}");
        }
    }

    #[test]
    fn a_bad_value_is_named() {
        let err = Settings::load_from(Program::Api, env(&[("FLOWSYNC_HTTP__RATE_BURST", "lots")]))
            .expect_err("refused")
            .to_string();
        assert!(err.starts_with("FLOWSYNC_HTTP__RATE_BURST: "), "{err}");
    }

    #[test]
    fn file_then_variables_then_flags() {
        let dir = tempfile::tempdir().expect("a directory");
        let file = dir.path().join("flowsync.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\n[sse]\nretry_ms = 7\n[runner]\nmax_parallel = 3\n[store]\nkind = \"mongo\"\ndatabase = \"d\"\n",
        )
        .expect("written");
        let mut sources = env(&[
            ("FLOWSYNC_CONFIG", file.to_str().expect("utf-8")),
            ("FLOWSYNC_SSE__RETRY_MS", "9"),
            ("FLOWSYNC_LISTEN", "127.0.0.1:2"),
        ]);
        sources.flags.push(("listen", "127.0.0.1:3".into()));
        let settings = Settings::load_from(Program::Runner, sources).expect("loads");
        assert_eq!(settings.sse.retry_ms, 9);
        assert_eq!(settings.runner.max_parallel, 3);
        assert_eq!(settings.listen, "127.0.0.1:3");
        match settings.store {
            flowsync_store::StoreBackend::Mongo(m) => assert_eq!(m.database, "d"),
            other => panic!("{other:?}"),
        }

        std::fs::write(&file, "[sse]\nretry = 7\n").expect("written");
        let err = Settings::load_from(
            Program::Gateway,
            env(&[("FLOWSYNC_CONFIG", file.to_str().expect("utf-8"))]),
        )
        .expect_err("refused")
        .to_string();
        assert!(err.starts_with("`sse.retry` in "), "{err}");
    }
}
