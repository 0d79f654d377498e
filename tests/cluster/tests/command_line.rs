//! The service binaries as an operator starts them: `--help` and `--version` answer and
//! exit, a flag they do not take is an error — neither starts a server.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowsync_cluster_tests::binary;

#[test]
fn help_and_unknown_flags_never_start_a_server() {
    for name in ["flowsync-api", "flowsync-gateway", "flowsync-runner"] {
        let run = |arg: &str| {
            let mut child = Command::new(binary(name))
                .arg(arg)
                .env("FLOWSYNC_LISTEN", "127.0.0.1:0")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // A server would run until stopped: one still running is the failure.
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("{name} {arg} started a server");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            child.wait_with_output().unwrap()
        };
        let help = run("--help");
        assert_eq!(help.status.code(), Some(0), "{name} --help");
        assert!(String::from_utf8_lossy(&help.stdout).contains("FLOWSYNC_CONFIG"));
        let version = run("--version");
        assert_eq!(version.status.code(), Some(0), "{name} --version");
        let bogus = run("--listen=0.0.0.0:80");
        assert_eq!(bogus.status.code(), Some(2), "{name}: an unknown flag");
        assert!(
            String::from_utf8_lossy(&bogus.stderr).contains("unexpected argument"),
            "{name}: {}",
            String::from_utf8_lossy(&bogus.stderr)
        );
    }
}
