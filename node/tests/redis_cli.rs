//! `redis-cli`, the tool users reach for first, against a real node.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::start_node;

fn redis_cli() -> Option<&'static str> {
    let found = Command::new("redis-cli").arg("--version").output().is_ok();
    if !found {
        eprintln!("SKIP: redis-cli is not installed (ci/test installs redis-tools)");
    }
    found.then_some("redis-cli")
}

fn run(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(
        out.status.success(),
        "redis-cli {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn redis_cli_commands_and_piped_session() {
    let Some(_) = redis_cli() else { return };
    let port = start_node(|_| {});
    assert_eq!(run(port, &["SET", "user:1", "ada"]), "OK\n");
    assert_eq!(run(port, &["GET", "user:1"]), "ada\n");
    assert_eq!(run(port, &["SET", "session", "x", "EX", "100"]), "OK\n");
    assert_eq!(run(port, &["TTL", "session"]), "100\n");
    assert_eq!(run(port, &["SCAN", "0"]), "0\nsession\nuser:1\n");
    assert!(run(port, &["INFO", "server"]).contains("redis_version:"));
    assert!(run(port, &["--scan", "--pattern", "user:*"]).contains("user:1"));
    // A session typed on stdin, as a user at the prompt would (minus the prompt).
    let mut child = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"SET counter 41\nINCR counter\nGET nosuchkey\nDBSIZE\nNOSUCHCMD\n")
        .expect("write");
    let out = child.wait_with_output().expect("output");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "OK\n42\n\n3\nERR unknown command 'NOSUCHCMD', with args beginning with: \n\n"
    );
    // redis-cli --pipe: the mass-insertion path.
    let mut child = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .arg("--pipe")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli --pipe");
    let mut data = Vec::new();
    for i in 0..5000 {
        let k = format!("bulk:{i}");
        data.extend(format!("*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n$1\r\nv\r\n", k.len()).bytes());
    }
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&data)
        .expect("write");
    let out = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("errors: 0, replies: 5000"), "{text}");
    assert_eq!(run(port, &["DBSIZE"]), "5003\n");
}
