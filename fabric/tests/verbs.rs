//! Verbs backend tests. They need an RDMA device: run them in the SoftRoCE VM with
//! `ci/test-verbs` (rxe0 and rxe1). Without a device each test prints why and passes
//! without doing anything.
#![cfg(feature = "verbs")]

mod common;

use std::future::Future;
use std::time::Duration;

use augur_fabric::verbs::device;
use augur_fabric::verbs::transport::VerbsTransport;
use augur_fabric::{Connection, Error, FabricConfig, Transport};
use common::*;
use glommio::LocalExecutorBuilder;

/// The two device names to use: rxe1 and rxe0 (packets cross between two devices, as
/// between two nodes) when both exist, else the first device twice.
fn devices() -> Option<(String, String)> {
    let list = device::list();
    if list.is_empty() {
        eprintln!("SKIP: no RDMA device on this machine (run ci/test-verbs for the SoftRoCE VM)");
        return None;
    }
    let a = list[0].clone();
    let b = list.get(1).cloned().unwrap_or_else(|| a.clone());
    Some((a, b))
}

fn run<F, Fut>(f: F)
where
    F: FnOnce(String, String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let Some((a, b)) = devices() else { return };
    LocalExecutorBuilder::default()
        .spawn(move || f(a, b))
        .expect("glommio executor")
        .join()
        .expect("test body");
}

fn cfg(secret: &[u8], dev: &str) -> FabricConfig {
    let mut c = FabricConfig::new(secret.to_vec());
    c.device = Some(dev.to_string());
    c.handshake_timeout = Duration::from_secs(20);
    c.sq_depth = 128;
    c.recv_depth = 16;
    c
}

fn transports(da: &str, db: &str) -> (VerbsTransport, VerbsTransport) {
    let lo = "127.0.0.1:0".parse().expect("addr");
    let a = VerbsTransport::bind(cfg(SECRET, da), lo).expect("bind a");
    let b = VerbsTransport::bind(cfg(SECRET, db), lo).expect("bind b");
    eprintln!("a: {:?}\nb: {:?}", a.device(), b.device());
    (a, b)
}

#[test]
fn verbs_reads_and_writes_1b_to_16mib_odd_offsets() {
    run(|da, db| async move {
        let (a, b) = transports(&da, &db);
        reads_and_writes_verified(&a, &b).await;
    });
}

#[test]
fn verbs_many_concurrent_and_batched_reads() {
    run(|da, db| async move {
        let (a, b) = transports(&da, &db);
        many_concurrent_reads(&a, &b).await;
    });
}

#[test]
fn verbs_out_of_bounds_rejected_and_reconnect() {
    run(|da, db| async move {
        let (a, b) = transports(&da, &db);
        let (ca, _cb) = bad_requests_rejected(&a, &b).await;
        // the NIC refused the forged length: the QP is in error, the connection says so
        assert!(
            ca.failure().is_some(),
            "a refused one-sided op breaks an RC QP"
        );
        // ... and a new connection works
        reads_and_writes_small(&a, &b).await;
    });
}

#[test]
fn verbs_wrong_rkey_rejected() {
    run(|da, db| async move {
        let (a, b) = transports(&da, &db);
        let e = wrong_rkey_rejected(&a, &b).await;
        assert!(matches!(e, Error::Verbs(_)), "{e}");
        reads_and_writes_small(&a, &b).await;
    });
}

#[test]
fn verbs_send_recv_credits() {
    run(|da, db| async move {
        let lo = "127.0.0.1:0".parse().expect("addr");
        let mut c = cfg(SECRET, &da);
        c.recv_depth = 4;
        c.max_message = 512;
        let a = VerbsTransport::bind(c.clone(), lo).expect("a");
        c.device = Some(db);
        let b = VerbsTransport::bind(c, lo).expect("b");
        send_recv_with_credits(&a, &b).await;
    });
}

#[test]
fn verbs_peer_disconnect_mid_transfer_fails_the_read() {
    run(|da, db| async move {
        let (a, b) = transports(&da, &db);
        let e = disconnect_mid_transfer(&a, &b, |c| c.abort()).await;
        assert!(matches!(e, Error::Disconnected(_) | Error::Verbs(_)), "{e}");
        reads_and_writes_small(&a, &b).await;
    });
}

#[test]
fn verbs_auth_wrong_secret() {
    run(|da, db| async move {
        let lo = "127.0.0.1:0".parse().expect("addr");
        let a = VerbsTransport::bind(cfg(b"the right secret, 32 bytes long!", &da), lo).expect("a");
        let b = VerbsTransport::bind(cfg(b"a wrong secret, also long enough", &db), lo).expect("b");
        let (ca, cb) = futures_lite::future::zip(a.connect(b.local_addr()), b.accept()).await;
        let ea = ca.err().expect("client must fail");
        let eb = cb.err().expect("server must fail");
        assert!(matches!(ea, Error::Auth(_)), "{ea}");
        assert!(matches!(eb, Error::Auth(_)), "{eb}");
    });
}

/// Without a device, opening fails with a clear error (never a panic or a hang).
#[test]
fn verbs_no_device_is_a_clear_error() {
    let lo = "127.0.0.1:0".parse().expect("addr");
    let mut c = FabricConfig::new(SECRET.to_vec());
    c.device = Some("no-such-device-xyz".into());
    match VerbsTransport::bind(c, lo) {
        Err(Error::NoDevice(why)) => eprintln!("as expected: {why}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a device that does not exist was opened"),
    }
}
