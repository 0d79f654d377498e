//! Where a test's data lives: the backends of a service under test, embedded or
//! distributed, opened as often as the test needs — each [`Place::open`] is a fresh set of
//! handles on the same data, as another process of a deployment would have them.

use std::sync::Arc;

use flowsync_bus::BusConfig;
use flowsync_bus::jobs::{JobsConfig, MemoryJobs, RedisJobs};
use flowsync_bus::memory::MemoryBus;
use flowsync_bus::presence::{MemoryPresence, PresenceConfig, RedisPresence};
use flowsync_bus::redis::RedisBus;
use flowsync_config::Backends;
use flowsync_store::mongo::MongoConfig;
use flowsync_store::{StoreBackend, StoreConfig};

/// The two deployments a service runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// The one binary's: SQLite in a file, the in-process bus, presence and job queue.
    Embedded,
    /// The distributed install's: a database of the kit's MongoDB, a key namespace in the
    /// kit's Redis.
    Distributed,
}

/// One test's data, in a fresh SQLite file or MongoDB database and key namespace.
#[derive(Debug)]
pub struct Place {
    /// Which deployment.
    pub setup: Setup,
    /// The store's settings (applied at every open).
    pub store: StoreConfig,
    /// The bus's settings; its namespace is this test's own.
    pub bus: BusConfig,
    /// The job queue's settings.
    pub jobs: JobsConfig,
    dir: tempfile::TempDir,
    mongo: MongoConfig,
    /// The embedded deployment's in-process parts, shared by every open.
    memory: (MemoryBus, MemoryPresence, MemoryJobs),
}

impl Place {
    /// A new place with default settings.
    pub fn new(setup: Setup) -> Self {
        Self::with_jobs(setup, JobsConfig::default())
    }

    /// A new place whose job queue has `jobs` settings.
    pub fn with_jobs(setup: Setup, jobs: JobsConfig) -> Self {
        let name = crate::unique_name("t");
        let bus = BusConfig {
            namespace: format!("{name}:"),
            ..BusConfig::default()
        };
        Self {
            setup,
            store: StoreConfig::default(),
            memory: (
                MemoryBus::new(bus.clone()),
                MemoryPresence::new(&PresenceConfig::default()),
                MemoryJobs::new(&jobs),
            ),
            bus,
            jobs,
            dir: tempfile::tempdir().expect("a temporary directory"),
            mongo: MongoConfig {
                uri: match setup {
                    Setup::Embedded => String::new(),
                    Setup::Distributed => crate::mongo().uri.clone(),
                },
                database: name,
                ..MongoConfig::default()
            },
        }
    }

    /// The embedded store's SQLite file.
    pub fn sqlite_path(&self) -> std::path::PathBuf {
        self.dir.path().join("flowsync.db")
    }

    /// The Redis this place's distributed backends use.
    pub fn redis_url(&self) -> String {
        crate::redis().url()
    }

    /// Fresh handles on the place's data: its store, bus, presence set and job queue.
    pub async fn open(&self) -> Backends {
        let store = match self.setup {
            Setup::Embedded => StoreBackend::Sqlite {
                path: self.sqlite_path(),
            },
            Setup::Distributed => StoreBackend::Mongo(self.mongo.clone()),
        }
        .open(self.store.clone())
        .await
        .expect("the test store opens");
        match self.setup {
            Setup::Embedded => Backends {
                store,
                bus: Arc::new(self.memory.0.clone()),
                presence: Arc::new(self.memory.1.clone()),
                jobs: Arc::new(self.memory.2.clone()),
            },
            Setup::Distributed => {
                let redis = self.redis_url();
                let namespace = &self.bus.namespace;
                Backends {
                    store,
                    bus: Arc::new(RedisBus::connect(&redis, self.bus.clone()).expect("a bus")),
                    presence: Arc::new(
                        RedisPresence::connect(&redis, namespace, &PresenceConfig::default())
                            .await
                            .expect("a presence set"),
                    ),
                    jobs: Arc::new(
                        RedisJobs::connect(&redis, namespace, &self.jobs).expect("a job queue"),
                    ),
                }
            }
        }
    }
}

/// Runs each named `async fn(Setup)` test once per deployment, in modules `embedded` and
/// `distributed`, on a two-thread runtime.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Setup::Embedded).await; } )*
        }
        mod distributed {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Setup::Distributed).await; } )*
        }
    };
}
