//! Ops committed and published per second through HTTP on one hot flow, or spread over
//! `flows` flows (issue: API benchmark). Starts the API in process on the chosen backends,
//! then `clients` concurrent HTTP clients each send `ops` requests of one op (`node.move`,
//! no base version); client c writes to flow c mod `flows`.
//!
//! ```sh
//! # embedded: SQLite + in-process bus
//! cargo run --release -p flowsync-api --example ops_rate -- embedded 16 500
//! cargo run --release -p flowsync-api --example ops_rate -- embedded 64 400      # group commit
//! cargo run --release -p flowsync-api --example ops_rate -- embedded 100 80 100   # 100 flows
//! # distributed: MongoDB + Redis (a real MongoDB; SecantusDB is Python, ~1 ms per insert)
//! cargo run --release -p flowsync-api --example ops_rate -- mongodb://127.0.0.1:27017 redis://127.0.0.1:6379 16 500
//! ```

#![allow(clippy::print_stdout)]

use std::time::Instant;

use flowsync_api::startup::Application;
use flowsync_bus::BusBackend;
use flowsync_config::{Program, Settings};
use flowsync_store::StoreBackend;
use flowsync_store::mongo::MongoConfig;
use serde_json::json;

/// The binaries' allocator (services/api/src/main.rs), so the figures are theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = tempfile::tempdir()?;
    let mut config = Settings {
        listen: "127.0.0.1:0".into(),
        ..Settings::defaults(Program::Api)
    };
    config.http.rate_per_second = 0;
    let rest = if args.first().map(String::as_str) == Some("embedded") {
        config.store = StoreBackend::Sqlite {
            path: dir.path().join("bench.db"),
        };
        &args[1..]
    } else {
        config.store = StoreBackend::Mongo(MongoConfig {
            uri: args[0].clone(),
            database: format!("bench{}", std::process::id()),
            ..MongoConfig::default()
        });
        config.bus = BusBackend::Redis {
            url: args[1].clone(),
        };
        config.bus_tuning.namespace = format!("bench{}:", std::process::id());
        &args[2..]
    };
    let clients: usize = rest.first().and_then(|a| a.parse().ok()).unwrap_or(16);
    let per_client: usize = rest.get(1).and_then(|a| a.parse().ok()).unwrap_or(500);
    let flows: usize = rest.get(2).and_then(|a| a.parse().ok()).unwrap_or(1).max(1);
    let app = Application::build(&config).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());

    let http = reqwest::Client::new();
    for f in 0..flows {
        http.post(format!("{base}/v1/flows"))
            .json(&json!({"id": format!("hot{f}"), "name": "hot"}))
            .send()
            .await?
            .error_for_status()?;
        let seed = json!({"client_id": "seed", "ops": [{"op_id": "seed", "type": "node.add",
            "node": {"id": "n", "type": "note", "position": {"x": 0, "y": 0}}}]});
        http.post(format!("{base}/v1/flows/hot{f}/ops"))
            .json(&seed)
            .send()
            .await?
            .error_for_status()?;
    }

    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (http, base) = (http.clone(), base.clone());
            tokio::spawn(async move {
                for i in 0..per_client {
                    let body = json!({"client_id": format!("c{c}"), "ops": [{"op_id": format!("c{c}-{i}"),
                        "type": "node.move", "id": "n", "position": {"x": i, "y": c}}]});
                    loop {
                        let r = http.post(format!("{base}/v1/flows/hot{}/ops", c % flows)).json(&body).send().await.unwrap();
                        if r.status().as_u16() == 202 {
                            break;
                        }
                        assert_eq!(r.status().as_u16(), 503, "unexpected {}", r.status());
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = clients * per_client;
    let mut versions = 0;
    for f in 0..flows {
        let flow: serde_json::Value = http
            .get(format!("{base}/v1/flows/hot{f}"))
            .send()
            .await?
            .json()
            .await?;
        versions += flow["version"].as_u64().unwrap_or(0) - 1;
    }
    assert_eq!(versions, total as u64, "every op committed once");
    // Ops per group commit, from the API's own histogram (its _sum and _count).
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let groups = value("flowsync_api_commit_group_ops_count");
    println!(
        "{total} ops from {clients} clients on {flows} flow(s) in {secs:.2} s: {:.0} ops/s committed and published; {:.1} ops per group commit",
        total as f64 / secs,
        value("flowsync_api_commit_group_ops_sum") / groups.max(1.0)
    );
    Ok(())
}
