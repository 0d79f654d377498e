//! The settings of every flowsync process: one model ([`Settings`], one type per section),
//! one loader ([`Settings::load`]: defaults, then a TOML file, then `FLOWSYNC_*` variables,
//! then flags) and the openers of the backends a service needs.
//!
//! Every program reads the whole model, so one file, one ConfigMap or one compose
//! environment serves every service; each takes only the sections it uses
//! ([`Program::sections`]). A key the model does not have is an error naming the variable
//! (or the file's key) it came from, and so is a `FLOWSYNC_*` variable that is neither a
//! setting nor one of the process's own [`SWITCHES`].
//!
//! # Layout
//! - this module: [`Settings`] and [`Program`].
//! - [`load`]: the loader, its errors and the switches.
//! - [`sections`]: the sections that belong to one service (`http`, `sse`, `runner`).
//! - [`backends`]: opening store, bus, presence set and job queue; the exposure check.
//! - [`reference`]: the README's tables, generated from the model.

use std::path::PathBuf;

use flowsync_auth::AuthConfig;
use flowsync_bus::jobs::JobsConfig;
use flowsync_bus::presence::PresenceConfig;
use flowsync_bus::{BusBackend, BusConfig};
use flowsync_store::{StoreBackend, StoreConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod backends;
pub mod load;
pub mod reference;
pub mod sections;

pub use backends::{Backends, check_exposure};
pub use load::{SWITCHES, SettingsError, Switch};
pub use sections::{HttpLimits, LlmConfig, RunnerConfig, SseConfig};

/// Every setting of every flowsync program.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on, `host:port` (port 0 picks a free one): the API, the event
    /// streams, or the runner's health endpoints. Without auth only a loopback address.
    pub listen: String,
    /// Directory of the one binary's embedded store (created when missing).
    pub data_dir: PathBuf,
    /// Where flows, their log and executions are stored: `sqlite` (a file) or `mongo`.
    pub store: StoreBackend,
    /// How events travel between processes: `memory` (one process) or `redis`.
    pub bus: BusBackend,
    /// How commits run and the canvas limits they enforce.
    pub write_path: StoreConfig,
    /// Bus history, fan-out buffers and Redis connections.
    pub bus_tuning: BusConfig,
    /// How long a stream stays listed as present.
    pub presence: PresenceConfig,
    /// The execution job queue.
    pub jobs: JobsConfig,
    /// How tokens are checked.
    pub auth: AuthConfig,
    /// Limits of API requests.
    pub http: HttpLimits,
    /// Event streams and their limits.
    pub sse: SseConfig,
    /// The flow runner.
    pub runner: RunnerConfig,
}

/// The one binary's defaults: the product's default.
impl Default for Settings {
    fn default() -> Self {
        Self::defaults(Program::OneBinary)
    }
}

impl Settings {
    /// The defaults of `program` (they differ only in `listen`).
    pub fn defaults(program: Program) -> Self {
        Self {
            listen: program.default_listen().to_owned(),
            data_dir: PathBuf::from("./data"),
            store: StoreBackend::default(),
            bus: BusBackend::default(),
            write_path: StoreConfig::default(),
            bus_tuning: BusConfig::default(),
            presence: PresenceConfig::default(),
            jobs: JobsConfig::default(),
            auth: AuthConfig::default(),
            http: HttpLimits::default(),
            sse: SseConfig::default(),
            runner: RunnerConfig::default(),
        }
    }
}

/// The programs that read settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `flowsync`: API, event streams and runner in one process.
    OneBinary,
    /// `flowsync-api`.
    Api,
    /// `flowsync-gateway`.
    Gateway,
    /// `flowsync-runner`.
    Runner,
}

impl Program {
    /// Every program.
    pub const ALL: [Program; 4] = [Self::OneBinary, Self::Api, Self::Gateway, Self::Runner];

    /// The binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            Self::OneBinary => "flowsync",
            Self::Api => "flowsync-api",
            Self::Gateway => "flowsync-gateway",
            Self::Runner => "flowsync-runner",
        }
    }

    /// Reads the command line of a service that takes no flags (its settings come from
    /// `FLOWSYNC_CONFIG` and `FLOWSYNC_*` variables): `--help` and `--version` print and
    /// exit 0, anything else is an error (exit 2) — a mistyped flag never starts a server.
    pub fn read_command_line(self) {
        self.command().get_matches();
    }

    /// The command line parser of a flagless service, for [`read_command_line`](Self::read_command_line).
    pub fn command(self) -> clap::Command {
        let about = match self {
            Self::OneBinary => "flowsync in one process",
            Self::Api => "flowsync's stateless API: intents in, events to the bus",
            Self::Gateway => "flowsync's SSE gateway: events from the bus to browsers",
            Self::Runner => "flowsync's flow runner: executes queued flows",
        };
        clap::Command::new(self.binary())
            .version(env!("CARGO_PKG_VERSION"))
            .about(about)
            .after_help(
                "Settings come from a TOML file named by FLOWSYNC_CONFIG, then \
                 FLOWSYNC_<SECTION>__<KEY> variables (e.g. FLOWSYNC_BUS__URL, \
                 FLOWSYNC_AUTH__MODE), and FLOWSYNC_LISTEN; the README's configuration table \
                 lists them all. This program takes no flags.",
            )
    }

    /// Where it listens unless told otherwise.
    pub fn default_listen(self) -> &'static str {
        match self {
            Self::OneBinary => "127.0.0.1:8080",
            Self::Api => "127.0.0.1:8081",
            Self::Gateway => "127.0.0.1:8082",
            Self::Runner => "127.0.0.1:8083",
        }
    }

    /// The sections (top-level keys of [`Settings`]) it reads; it accepts the others, so
    /// one configuration serves every program. The one binary always runs on its embedded
    /// store and in-process bus, under `data_dir`.
    pub fn sections(self) -> &'static [&'static str] {
        match self {
            Self::OneBinary => &[
                "listen",
                "data_dir",
                "write_path",
                "bus_tuning",
                "presence",
                "jobs",
                "auth",
                "http",
                "sse",
                "runner",
            ],
            Self::Api => &[
                "listen",
                "store",
                "bus",
                "write_path",
                "bus_tuning",
                "presence",
                "jobs",
                "auth",
                "http",
            ],
            Self::Gateway => &[
                "listen",
                "store",
                "bus",
                "bus_tuning",
                "presence",
                "auth",
                "sse",
            ],
            Self::Runner => &["listen", "store", "bus", "bus_tuning", "jobs", "runner"],
        }
    }
}

#[cfg(test)]
mod command_line {
    use super::Program;

    #[test]
    fn services_take_help_and_version_and_refuse_anything_else() {
        for program in [Program::Api, Program::Gateway, Program::Runner] {
            let name = program.binary();
            for (args, kind) in [
                (vec![name, "--help"], clap::error::ErrorKind::DisplayHelp),
                (
                    vec![name, "--version"],
                    clap::error::ErrorKind::DisplayVersion,
                ),
                (
                    vec![name, "--listen=0.0.0.0:1"],
                    clap::error::ErrorKind::UnknownArgument,
                ),
                (vec![name, "serve"], clap::error::ErrorKind::UnknownArgument),
            ] {
                let e = program.command().try_get_matches_from(&args).unwrap_err();
                assert_eq!(e.kind(), kind, "{args:?}");
            }
            assert!(program.command().try_get_matches_from([name]).is_ok());
            let help = program.command().render_help().to_string();
            assert!(help.contains("FLOWSYNC_CONFIG"), "{help}");
        }
    }
}
