//! redis-py (Debian's `python3-redis`) against a real two-core node: its default
//! pipeline is MULTI/EXEC, and `transaction()` uses WATCH. Skipped, saying why, when
//! no Python here can `import redis`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{client, keys_on_two_cores, start_node};

/// A Python that has the `redis` module: the one on PATH, else the system one (the
/// Debian package installs into the system Python only).
fn python_with_redis() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import redis"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Run `tests/py/<script>` against a fresh two-core node; it must exit 0 and print
/// `expect`. Skipped, saying why, without a Python that has redis-py.
fn run_script(script: &str, expect: &str) {
    let Some(python) = python_with_redis() else {
        eprintln!("SKIPPED: no python3 here can `import redis` (apt-get install python3-redis)");
        return;
    };
    let port = start_node(|_| {});
    let mut c = client(port);
    let (a, b) = keys_on_two_cores(&mut c);
    let script = format!("{}/tests/py/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(python)
        .args([script.as_str(), &port.to_string(), &a, &b])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the python script did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "redis-py script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(expect), "{stdout}");
}

#[test]
fn redis_py_pipeline_and_transaction() {
    run_script("transactions.py", "redis-py transactions ok");
}

#[test]
fn redis_py_hashes_scan_by_type_getex_rename() {
    run_script("everyday.py", "redis-py everyday ok");
}
