//! The test kit: real servers for integration tests (DESIGN §9), never mocks.
//!
//! One `redis-server` and one MongoDB-wire server are started per test binary, on free
//! ports, the first time a test asks for them; tests share them and isolate themselves with
//! a fresh database name or key prefix from [`unique_name`]. A test that must kill its Redis
//! starts its own with [`RedisServer::start`]; one that stops its MongoDB, with
//! [`MongoServer::start_in`]. [`Process`] runs a product binary that a test kills like a
//! crash; [`Balancer`] stands in for the proxy in front of several instances; [`ChatStub`]
//! for an LLM endpoint and [`HttpSink`] for a trace collector.
//!
//! MongoDB is `FLOWSYNC_TEST_MONGO_URI` when set (a real MongoDB); otherwise SecantusDB, a
//! MongoDB-wire-compatible server that `./scripts/test` installs into `.venv`. A missing
//! server fails the test with a message saying how to install it — never a silent skip.
//!
//! Every server runs under a watchdog shell that stops it when the test process exits, so a
//! crashed or killed test binary leaves nothing behind.
//!
//! Above the servers, what every service's tests share: [`Place`], a test's backends in
//! either deployment ([`Setup`]) with the [`both!`] macro to run a test in each, and the
//! kit's HS256 tokens ([`token`], [`hs256`]).

mod canvas;
mod place;
mod tokens;

pub use canvas::canvas_ops;
pub use place::{Place, Setup};
pub use tokens::{SECRET, hs256, token, token_signed};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a server may take to accept connections (Python start-up is the slow one).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A name no other test of any process uses: for databases, key prefixes, flow ids.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}{}x{n}x{nanos:x}", std::process::id())
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// Runs `program args…` under a watchdog that stops it when this process exits.
fn spawn_guarded(program: &str, args: &[String]) -> Child {
    spawn_watched(program, args, &[], None)
}

/// [`spawn_guarded`], and for a product's process (`pid_file` given): an environment of
/// only `envs` (plus `PATH`, `HOME`, `RUST_LOG`), so no setting of the test's own
/// environment reaches it, and the server's pid written to `pid_file` (the child is the
/// watchdog shell).
fn spawn_watched(
    program: &str,
    args: &[String],
    envs: &[(String, String)],
    pid_file: Option<&std::path::Path>,
) -> Child {
    let mut command = Command::new("bash");
    if pid_file.is_some() {
        command.env_clear();
        for keep in ["PATH", "HOME", "TMPDIR", "RUST_LOG"] {
            if let Some(v) = std::env::var_os(keep) {
                command.env(keep, v);
            }
        }
    }
    // The watchdog polls because no portable signal tells a grandchild its grandparent died.
    let script = r#"
        "$@" &
        server=$!
        [ -n "$PID_FILE" ] && echo $server > "$PID_FILE.tmp" && mv "$PID_FILE.tmp" "$PID_FILE"
        trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT TERM INT
        while kill -0 "$WATCH_PID" 2>/dev/null && kill -0 $server 2>/dev/null; do sleep 0.3; done
    "#;
    command
        .arg("-c")
        .arg(script)
        .arg("flowsync-testkit")
        .arg(program)
        .args(args)
        .env("WATCH_PID", std::process::id().to_string())
        .env(
            "PID_FILE",
            pid_file.map(|p| p.as_os_str()).unwrap_or_default(),
        )
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

/// Waits until the watchdog `child` has written its server's pid to `pid_file` (it writes
/// the file whole, by rename), then removes the file and returns the pid.
fn wait_for_pid(pid_file: &std::path::Path, what: &str, child: &mut Child) -> u32 {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            let _ = std::fs::remove_file(pid_file);
            return pid;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) at start; run with TEST_LOG=1 to see why");
        }
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until something accepts connections on `port`.
fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before accepting connections on port {port}; run with TEST_LOG=1 to see its output"
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not accept connections on port {port} within {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `redis-server` of the test's own.
#[derive(Debug)]
pub struct RedisServer {
    /// The port it listens on (kept across restarts).
    pub port: u16,
    /// The watchdog shell running it.
    child: Child,
    /// False once [`kill`](Self::kill) stopped it (so dropping it leaves the port alone).
    running: bool,
    /// With persistence: the directory of its append-only file (fsynced on every write).
    dir: Option<PathBuf>,
    /// The server's own pid (the child is its watchdog shell), for `kill -9`.
    pid: u32,
}

impl RedisServer {
    /// Starts a fresh `redis-server` on a free port, keeping nothing on disk.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts a `redis-server` on `port`.
    pub fn start_on(port: u16) -> Self {
        Self::launch(port, None)
    }

    /// Starts a `redis-server` on a free port that keeps its data in an append-only file
    /// under `dir`, fsynced on every write (compose runs Redis with `appendonly yes`): a
    /// [`kill9`](Self::kill9) and [`restart`](Self::restart) keep every key.
    pub fn start_persistent(dir: &std::path::Path) -> Self {
        Self::launch(free_port(), Some(dir.to_owned()))
    }

    fn launch(port: u16, dir: Option<PathBuf>) -> Self {
        let program = "redis-server";
        if Command::new(program).arg("--version").output().is_err() {
            panic!(
                "redis-server is not installed: run ./scripts/test, which installs it (apt-get install redis-server)"
            );
        }
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match &dir {
            Some(dir) => args.extend([
                "--appendonly".into(),
                "yes".into(),
                "--appendfsync".into(),
                "always".into(),
                "--dir".into(),
                dir.to_string_lossy().into_owned(),
            ]),
            None => args.extend(["--appendonly".into(), "no".into()]),
        }
        args.extend(["--daemonize".into(), "no".into()]);
        let pid_file = std::env::temp_dir().join(unique_name("redis-pid"));
        let mut child = spawn_watched(program, &args, &[], Some(&pid_file));
        // The server can accept connections before its watchdog has written the pid.
        let pid = wait_for_pid(&pid_file, "redis-server", &mut child);
        wait_for_port(port, "redis-server", &mut child);
        Self {
            port,
            child,
            running: true,
            dir,
            pid,
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server at once, dropping every key and connection (like a crash of a Redis
    /// that keeps nothing on disk).
    pub fn kill(&mut self) {
        self.shutdown();
        // Wait until the port is free again, so a restart can bind it.
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not stop",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill -9` of the server: it dies at once (a persistent one keeps what it fsynced).
    pub fn kill9(&mut self) {
        if !std::mem::replace(&mut self.running, false) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Freezes the server (`SIGSTOP`): connections stay open, nothing is answered, until
    /// [`resume`](Self::resume) — a Redis too slow for its clients.
    pub fn pause(&self) {
        let _ = Command::new("kill")
            .args(["-STOP", &self.pid.to_string()])
            .status();
    }

    /// Lets a [`pause`](Self::pause)d server go on.
    pub fn resume(&self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid.to_string()])
            .status();
    }

    /// Removes a persistent server's data while it is stopped: its restart is empty.
    pub fn wipe(&mut self) {
        assert!(!self.running, "stop the server before wiping its data");
        if let Some(dir) = &self.dir {
            for entry in std::fs::read_dir(dir)
                .expect("the data directory")
                .flatten()
            {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
    }

    /// Starts the server again on the same port: empty, or with its data when persistent.
    pub fn restart(&mut self) {
        assert!(!self.running, "kill the server before restarting it");
        // The old instance is stopped, so dropping it leaves the new server alone.
        *self = Self::launch(self.port, self.dir.clone());
    }
}

impl RedisServer {
    /// Asks the server to exit now and waits for its watchdog. (Killing the watchdog with
    /// SIGKILL instead would skip its trap and orphan the server.)
    fn shutdown(&mut self) {
        if !std::mem::replace(&mut self.running, false) {
            return;
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = s.write_all(b"SHUTDOWN NOSAVE\r\n");
            let _ = s.read(&mut [0u8; 64]);
        }
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The Redis server shared by every test of this binary.
pub fn redis() -> &'static RedisServer {
    static REDIS: OnceLock<RedisServer> = OnceLock::new();
    REDIS.get_or_init(RedisServer::start)
}

/// A MongoDB-wire server shared by every test of this binary.
#[derive(Debug)]
pub struct MongoServer {
    /// Connection string.
    pub uri: String,
    /// The watchdog shell running SecantusDB; `None` for an external MongoDB.
    _child: Option<Child>,
}

/// The MongoDB shared by every test of this binary: `FLOWSYNC_TEST_MONGO_URI`, or a
/// SecantusDB started on a free port.
pub fn mongo() -> &'static MongoServer {
    static MONGO: OnceLock<MongoServer> = OnceLock::new();
    MONGO.get_or_init(|| {
        if let Ok(uri) = std::env::var("FLOWSYNC_TEST_MONGO_URI") {
            return MongoServer { uri, _child: None };
        }
        let program = secantusd();
        let port = free_port();
        let args: Vec<String> = [
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--storage-path",
            ":memory:",
            "--log-level",
            "WARNING",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut child = spawn_guarded(&program.to_string_lossy(), &args);
        wait_for_port(port, "secantusd-py", &mut child);
        MongoServer {
            uri: format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
            _child: Some(child),
        }
    })
}

impl MongoServer {
    /// A SecantusDB of the test's own on a free port, keeping its data under `dir` (synced
    /// on every commit) so that it survives [`stop`](OwnedMongo::stop) and
    /// [`start_again`](OwnedMongo::start_again). `None` when `FLOWSYNC_TEST_MONGO_URI` names an
    /// external MongoDB, which a test cannot stop.
    pub fn start_in(dir: &std::path::Path) -> Option<OwnedMongo> {
        if std::env::var_os("FLOWSYNC_TEST_MONGO_URI").is_some() {
            return None;
        }
        let mut mongo = OwnedMongo {
            port: free_port(),
            dir: dir.to_owned(),
            child: None,
        };
        mongo.start_again();
        Some(mongo)
    }
}

/// A SecantusDB that a test stops and starts (see [`MongoServer::start_in`]).
#[derive(Debug)]
pub struct OwnedMongo {
    /// The port, kept across restarts.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnedMongo {
    /// The connection string.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// Stops the server (SIGTERM to the watchdog, which stops it) and waits until the
    /// port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "SecantusDB on {} did not stop",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server (again) on its port over its data.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "stop the server before starting it again"
        );
        let args: Vec<String> = [
            "--host",
            "127.0.0.1",
            "--port",
            &self.port.to_string(),
            "--storage-path",
            &self.dir.to_string_lossy(),
            "--sync-on-commit",
            "--log-level",
            "WARNING",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut child = spawn_guarded(&secantusd().to_string_lossy(), &args);
        wait_for_port(self.port, "secantusd-py", &mut child);
        self.child = Some(child);
    }
}

impl Drop for OwnedMongo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

/// A program of the product (a service binary) run as its own OS process under the
/// watchdog, so that a test can kill it like a crash would.
#[derive(Debug)]
pub struct Process {
    /// What it is, for messages.
    pub name: String,
    watchdog: Child,
    pid: u32,
}

impl Process {
    /// Starts `program` with `envs` (added to this process's environment); its output is
    /// shown with `TEST_LOG=1`.
    pub fn start(name: &str, program: &std::path::Path, envs: &[(String, String)]) -> Self {
        let pid_file = std::env::temp_dir().join(unique_name("flowsync-pid"));
        let mut watchdog = spawn_watched(&program.to_string_lossy(), &[], envs, Some(&pid_file));
        let pid = wait_for_pid(&pid_file, name, &mut watchdog);
        Self {
            name: name.to_owned(),
            watchdog,
            pid,
        }
    }

    /// Waits until it accepts connections on `port`.
    pub fn wait_for_port(&mut self, port: u16) {
        wait_for_port(port, &self.name.clone(), &mut self.watchdog);
    }

    /// `kill -9`: the process dies at once, mid-whatever it was doing.
    pub fn kill9(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
        let _ = self.watchdog.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.watchdog.try_wait(), Ok(None)) {
            self.kill9();
        }
    }
}

/// A TCP load balancer standing in for the proxy in front of a service's instances
/// (outside the product): each connection goes to the next upstream that accepts it, so
/// a dead instance is skipped like a proxy's health check would.
#[derive(Debug)]
pub struct Balancer {
    /// The port clients connect to.
    pub port: u16,
}

impl Balancer {
    /// Balances over `127.0.0.1:<upstream>` for each of `upstreams`.
    pub fn start(upstreams: Vec<u16>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
        let port = listener.local_addr().expect("bound").port();
        std::thread::spawn(move || {
            let mut next = 0usize;
            for client in listener.incoming().flatten() {
                let upstream = (0..upstreams.len()).find_map(|i| {
                    let port = upstreams[(next + i) % upstreams.len()];
                    TcpStream::connect(("127.0.0.1", port)).ok()
                });
                next = next.wrapping_add(1);
                match upstream {
                    Some(upstream) => pipe(client, upstream),
                    None => drop(client),
                }
            }
        });
        Self { port }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Copies both ways until either side closes.
fn pipe(a: TcpStream, b: TcpStream) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let one_way = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Both);
            let _ = from.shutdown(std::net::Shutdown::Both);
        });
    };
    one_way(a, b2);
    one_way(b, a2);
}

/// The SecantusDB launcher: `FLOWSYNC_TEST_SECANTUSD`, else the workspace's `.venv`.
fn secantusd() -> PathBuf {
    let path = std::env::var_os("FLOWSYNC_TEST_SECANTUSD")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/secantusd-py")
        });
    assert!(
        path.exists(),
        "no MongoDB for the tests: {} is missing. Run ./scripts/test (it installs SecantusDB into .venv with pip) \
         or set FLOWSYNC_TEST_MONGO_URI to a real MongoDB.",
        path.display()
    );
    path
}

/// A stand-in for something outside the product that receives HTTP posts (an OTLP
/// collector): answers `200` to every request and keeps the bodies.
#[derive(Debug, Clone)]
pub struct HttpSink {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl HttpSink {
    /// Starts the sink on a free port (a thread per connection; it lives as long as the
    /// test process).
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let bodies: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Default::default();
        let keep = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let keep = keep.clone();
                std::thread::spawn(move || serve_sink(stream, &keep));
            }
        });
        Self { url, bodies }
    }

    /// Whether any body received so far contains `needle`.
    pub fn received(&self, needle: &[u8]) -> bool {
        self.bodies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|b| b.windows(needle.len()).any(|w| w == needle))
    }
}

/// Reads requests with `Content-Length` bodies off one connection, answering each.
fn serve_sink(mut stream: TcpStream, keep: &std::sync::Mutex<Vec<Vec<u8>>>) {
    let mut buf = vec![];
    let mut chunk = [0u8; 8192];
    loop {
        let Ok(n) = stream.read(&mut chunk) else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() < end + 4 + len {
                break;
            }
            keep.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(buf[end + 4..end + 4 + len].to_vec());
            buf.drain(..end + 4 + len);
            if stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .is_err()
            {
                return;
            }
        }
    }
}

/// A stand-in for an OpenAI-compatible chat completions endpoint (outside the product):
/// every request is answered with `tokens` streamed as `chat.completion.chunk` SSE events,
/// then `[DONE]`. `url` is the base to configure (`…/v1`).
#[derive(Debug, Clone)]
pub struct ChatStub {
    /// `http://127.0.0.1:<port>/v1`.
    pub url: String,
}

impl ChatStub {
    /// Starts the stub on a free port, answering with every token in one write (a thread
    /// per connection; it lives as long as the test process).
    pub fn start<T: Into<String>>(tokens: impl IntoIterator<Item = T>) -> Self {
        Self::paced(tokens, Duration::ZERO)
    }

    /// Like [`start`](Self::start), writing one token per `pace` the way a model produces
    /// them (a pacing for the stand-in's output, not a synchronisation of the test).
    pub fn paced<T: Into<String>>(tokens: impl IntoIterator<Item = T>, pace: Duration) -> Self {
        let tokens: std::sync::Arc<[String]> = tokens.into_iter().map(Into::into).collect();
        let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
        let url = format!("http://{}/v1", listener.local_addr().expect("bound"));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let tokens = tokens.clone();
                std::thread::spawn(move || stream_chat(stream, &tokens, pace));
            }
        });
        Self { url }
    }
}

/// A [`ChatStub::gated`] stub's gate: answers wait at it until it opens.
#[derive(Debug, Clone, Default)]
pub struct Gate(std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    /// Lets every waiting and later answer go on.
    pub fn open(&self) {
        *self.0.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.0.1.notify_all();
    }

    fn wait(&self) {
        let mut open = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            open = self.0.1.wait(open).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl ChatStub {
    /// A stub that streams `first`, then waits at the returned gate before it streams
    /// `rest`: a model caught halfway through its answer, for as long as a test needs.
    pub fn gated<T: Into<String>>(
        first: impl IntoIterator<Item = T>,
        rest: impl IntoIterator<Item = T>,
    ) -> (Self, Gate) {
        let first: std::sync::Arc<[String]> = first.into_iter().map(Into::into).collect();
        let rest: std::sync::Arc<[String]> = rest.into_iter().map(Into::into).collect();
        let gate = Gate::default();
        let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
        let url = format!("http://{}/v1", listener.local_addr().expect("bound"));
        let waiting = gate.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let (first, rest, gate) = (first.clone(), rest.clone(), waiting.clone());
                std::thread::spawn(move || {
                    if !read_head(&mut stream) {
                        return;
                    }
                    let _ = stream.set_nodelay(true);
                    let mut out = String::from(CHAT_HEAD);
                    first.iter().for_each(|t| out.push_str(&chat_chunk(t)));
                    if stream.write_all(out.as_bytes()).is_err() {
                        return;
                    }
                    gate.wait();
                    let mut out = String::new();
                    rest.iter().for_each(|t| out.push_str(&chat_chunk(t)));
                    out.push_str("data: [DONE]\n\n");
                    let _ = stream.write_all(out.as_bytes());
                });
            }
        });
        (Self { url }, gate)
    }
}

/// The head of a streamed chat completion.
const CHAT_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

/// One token as a `chat.completion.chunk` SSE event.
fn chat_chunk(t: &str) -> String {
    let escaped = t.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "data: {{\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{escaped}\"}}}}]}}\n\n"
    )
}

/// Reads one request head (the body is not needed); false when the peer went first.
fn read_head(stream: &mut TcpStream) -> bool {
    let mut got = vec![];
    let mut chunk = [0u8; 8192];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// Reads one request head and streams the tokens.
fn stream_chat(mut stream: TcpStream, tokens: &[String], pace: Duration) {
    if !read_head(&mut stream) {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut out = String::from(CHAT_HEAD);
    let chunk = chat_chunk;
    if pace.is_zero() {
        tokens.iter().for_each(|t| out.push_str(&chunk(t)));
    } else {
        if stream.write_all(out.as_bytes()).is_err() {
            return;
        }
        out.clear();
        let start = Instant::now();
        for (i, t) in tokens.iter().enumerate() {
            // Paced against the start, so the rate holds however long each write takes.
            if let Some(wait) = (start + pace * i as u32).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if stream.write_all(chunk(t).as_bytes()).is_err() {
                return;
            }
        }
    }
    out.push_str("data: [DONE]\n\n");
    let _ = stream.write_all(out.as_bytes());
}

/// What an [`HttpStub`] answers every request with.
#[derive(Debug, Clone)]
pub enum StubReply {
    /// An empty response with this status.
    Status(u16),
    /// `200` with `len` bytes of `x`, with a `Content-Length` or (without) until close.
    Body {
        /// Bytes of body.
        len: usize,
        /// Whether the head announces the length.
        content_length: bool,
    },
    /// `302` to this location.
    Redirect(String),
}

/// A tiny HTTP server standing in for whatever an `http` node calls (outside the
/// product): it answers every request the same way and counts the requests it saw.
#[derive(Debug, Clone)]
pub struct HttpStub {
    /// `http://<ip>:<port>`.
    pub url: String,
    /// The port.
    pub port: u16,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl HttpStub {
    /// Starts the stub on `ip` (e.g. `127.0.0.1`, or `127.0.0.2`, also loopback) and a
    /// free port; it lives as long as the test process.
    pub fn start(ip: &str, reply: StubReply) -> Self {
        let listener = TcpListener::bind((ip, 0)).expect("a local port");
        let port = listener.local_addr().expect("bound").port();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let reply = reply.clone();
                std::thread::spawn(move || {
                    if !read_head(&mut stream) {
                        return;
                    }
                    let _ = match reply {
                        StubReply::Status(code) => stream.write_all(
                            format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                .as_bytes(),
                        ),
                        StubReply::Redirect(to) => stream.write_all(
                            format!("HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                .as_bytes(),
                        ),
                        StubReply::Body { len, content_length } => {
                            let head = if content_length {
                                format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n")
                            } else {
                                "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_owned()
                            };
                            let block = [b'x'; 64 * 1024];
                            let mut result = stream.write_all(head.as_bytes());
                            let mut left = len;
                            while result.is_ok() && left > 0 {
                                let n = left.min(block.len());
                                result = stream.write_all(&block[..n]);
                                left -= n;
                            }
                            result
                        }
                    };
                });
            }
        });
        Self {
            url: format!("http://{ip}:{port}"),
            port,
            hits,
        }
    }

    /// Requests it has seen.
    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}
