//! The distributed install as users run it — `docker-compose.yml` with the project's
//! images, under a private Docker engine — driven only through its proxy on 127.0.0.1, as
//! browsers and agents would, with faults made by `docker kill` and `docker restart`.
//!
//! `tests/containers/run` brings the deployment up and runs these tests against it; it
//! passes where it is in `FLOWSYNC_TEST_*` variables. Run alone, a test fails saying so.

use std::process::Command;
use std::time::{Duration, Instant};

use flowsync_client::{Client, ClientConfig};

pub use flowsync_cluster_tests::{PATIENCE, Watcher, replay_history, server_canvas};

/// The running deployment.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The proxy, `http://127.0.0.1:<port>`.
    pub proxy: String,
    /// The compose project's name.
    pub project: String,
    secret: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: these tests run against a deployment that tests/containers/run brings up (./scripts/test runs it)")
    })
}

impl Deployment {
    /// The deployment `tests/containers/run` brought up.
    pub fn from_env() -> Self {
        Self {
            proxy: var("FLOWSYNC_TEST_PROXY"),
            project: var("FLOWSYNC_TEST_COMPOSE_PROJECT"),
            secret: var("FLOWSYNC_TEST_SECRET"),
        }
    }

    /// A token for `sub` of `kind` with every scope on every flow, signed with the dev
    /// secret the deployment was given.
    pub fn token(&self, sub: &str, kind: &str) -> String {
        flowsync_cluster_tests::token_signed(
            sub,
            kind,
            &["*"],
            "read write execute publish",
            3600,
            &self.secret,
        )
    }

    /// A client of `sub` through the proxy (API and streams alike).
    pub fn client(&self, sub: &str, kind: &str) -> Client {
        let mut config = ClientConfig::new(&self.proxy).with_token(self.token(sub, kind));
        // Patient retries: containers die on purpose here.
        config.backoff = Duration::from_millis(100);
        config.max_backoff = Duration::from_secs(1);
        config.attempts = 60;
        Client::new(config).expect("a client")
    }

    /// The ids of the running containers of a compose service, in name order.
    pub fn containers(&self, service: &str) -> Vec<String> {
        let out = docker(&[
            "ps",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
            "--format",
            "{{.Names}} {{.ID}}",
        ]);
        let mut rows: Vec<(String, String)> = out
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, id)| (n.to_owned(), id.to_owned()))
            .collect();
        rows.sort();
        rows.into_iter().map(|(_, id)| id).collect()
    }

    /// Waits until `service` has `n` running containers whose healthcheck passes.
    pub fn wait_healthy(&self, service: &str, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let healthy = self
                .containers(service)
                .iter()
                .filter(|id| {
                    docker(&["inspect", "--format", "{{.State.Health.Status}}", id]).trim()
                        == "healthy"
                })
                .count();
            if healthy == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{service}: {healthy} of {n} containers healthy after {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `GET http://127.0.0.1:<port><path>` from inside a container (its own view).
    pub fn get_inside(&self, container: &str, port: u16, path: &str) -> String {
        docker(&[
            "exec",
            container,
            "curl",
            "-fsS",
            &format!("http://127.0.0.1:{port}{path}"),
        ])
    }
}

/// Runs `docker args…` (the engine of `DOCKER_HOST`); its output, or the test fails.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}"));
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of an unlabelled Prometheus metric in `text`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
