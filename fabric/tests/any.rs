//! The run-time backend choice ([`AnyTransport`]) runs the same scenarios as each backend
//! on its own: the TCP arm everywhere (loopback), the verbs arm where an RDMA device exists
//! (`ci/test-verbs`, the SoftRoCE VM; elsewhere those tests print why and pass).

mod common;

use std::future::Future;
use std::time::Duration;

use augur_fabric::any::{AnyConnection, AnyTransport, Backend};
use augur_fabric::{Connection, Error, FabricConfig, Transport};
use common::*;
use glommio::LocalExecutorBuilder;

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::default()
        .spawn(f)
        .expect("glommio executor")
        .join()
        .expect("test body");
}

fn tcp_cfg() -> FabricConfig {
    let mut c = FabricConfig::new(SECRET.to_vec());
    c.stream_chunk = 64 << 10;
    c.handshake_timeout = Duration::from_millis(500);
    c
}

fn tcp_pair(cfg: FabricConfig) -> (AnyTransport, AnyTransport) {
    let lo = "127.0.0.1:0".parse().expect("addr");
    let a = AnyTransport::bind(Backend::Tcp, cfg.clone(), lo).expect("bind a");
    let b = AnyTransport::bind(Backend::Tcp, cfg, lo).expect("bind b");
    assert_eq!(a.backend(), Backend::Tcp);
    assert_eq!(a.describe(), "tcp");
    (a, b)
}

#[test]
fn any_tcp_reads_and_writes_1b_to_16mib() {
    run(|| async {
        let (a, b) = tcp_pair(tcp_cfg());
        reads_and_writes_verified(&a, &b).await;
    });
}

#[test]
fn any_tcp_many_concurrent_and_batched_reads() {
    run(|| async {
        let (a, b) = tcp_pair(tcp_cfg());
        many_concurrent_reads(&a, &b).await;
    });
}

#[test]
fn any_tcp_bad_requests_and_wrong_rkey_rejected() {
    run(|| async {
        let (a, b) = tcp_pair(tcp_cfg());
        let _ = bad_requests_rejected(&a, &b).await;
        let e = wrong_rkey_rejected(&a, &b).await;
        assert!(matches!(e, Error::Remote(_)), "{e}");
    });
}

#[test]
fn any_tcp_send_recv_credits() {
    run(|| async {
        let mut cfg = tcp_cfg();
        cfg.recv_depth = 4;
        cfg.max_message = 512;
        let (a, b) = tcp_pair(cfg);
        send_recv_with_credits(&a, &b).await;
    });
}

#[test]
fn any_tcp_peer_disconnect_mid_transfer_fails_the_read() {
    run(|| async {
        let (a, b) = tcp_pair(tcp_cfg());
        let e = disconnect_mid_transfer(&a, &b, AnyConnection::abort).await;
        assert!(matches!(e, Error::Disconnected(_)), "{e}");
        reads_and_writes_small(&a, &b).await;
    });
}

#[test]
fn any_tcp_connection_reports_its_backend_and_closes() {
    run(|| async {
        let (a, b) = tcp_pair(tcp_cfg());
        let (ca, cb) = pair(&a, &b).await;
        assert_eq!(ca.backend(), Backend::Tcp);
        assert_eq!(ca.max_message_size(), tcp_cfg().max_message as usize);
        assert!(ca.failure().is_none());
        ca.close();
        assert!(ca.failure().is_some(), "a closed connection says so");
        let e = cb.recv().await.expect_err("the peer sees the close");
        assert!(matches!(e, Error::Disconnected(_)), "{e}");
    });
}

#[test]
fn any_wrong_secret_fails_both_sides() {
    run(|| async {
        let lo = "127.0.0.1:0".parse().expect("addr");
        let mut c = tcp_cfg();
        let a = AnyTransport::bind(Backend::Tcp, c.clone(), lo).expect("a");
        c.secret = b"a wrong secret, also long enough".to_vec();
        let b = AnyTransport::bind(Backend::Tcp, c, lo).expect("b");
        let (ca, cb) = futures_lite::future::zip(a.connect(b.local_addr()), b.accept()).await;
        assert!(matches!(ca.err(), Some(Error::Auth(_))));
        assert!(matches!(cb.err(), Some(Error::Auth(_))));
    });
}

/// The verbs arm, where a device exists; and a registration of one backend refused on a
/// connection of the other.
#[cfg(feature = "verbs")]
mod verbs_arm {
    use super::*;
    use augur_fabric::verbs::device;
    use augur_fabric::{Access, LocalMr, Region};

    fn verbs_pair() -> Option<(AnyTransport, AnyTransport)> {
        let list = device::list();
        if list.is_empty() {
            eprintln!("SKIP: no RDMA device (run ci/test-verbs for the SoftRoCE VM)");
            return None;
        }
        let lo = "127.0.0.1:0".parse().expect("addr");
        let cfg = |dev: &str| {
            let mut c = FabricConfig::new(SECRET.to_vec());
            c.device = Some(dev.to_string());
            c.handshake_timeout = Duration::from_secs(20);
            c.sq_depth = 128;
            c.recv_depth = 16;
            c
        };
        let a = AnyTransport::bind(Backend::Verbs, cfg(&list[0]), lo).expect("bind a");
        let other = list.get(1).unwrap_or(&list[0]);
        let b = AnyTransport::bind(Backend::Verbs, cfg(other), lo).expect("bind b");
        eprintln!("a: {}\nb: {}", a.describe(), b.describe());
        assert_eq!(a.backend(), Backend::Verbs);
        Some((a, b))
    }

    #[test]
    fn any_verbs_reads_writes_and_messages() {
        run(|| async {
            let Some((a, b)) = verbs_pair() else { return };
            reads_and_writes_small(&a, &b).await;
            many_concurrent_reads(&a, &b).await;
            send_recv_with_credits(&a, &b).await;
        });
    }

    /// Links with the node's verbs buffers (64 KiB × 32 each way): set-up time printed
    /// (the node's connect timeout depends on it), a full-size message both ways.
    #[test]
    fn any_verbs_links_with_the_nodes_buffers() {
        run(|| async {
            if device::list().is_empty() {
                eprintln!("SKIP: no RDMA device");
                return;
            }
            let lo = "127.0.0.1:0".parse().expect("addr");
            let small = FabricConfig::new(SECRET.to_vec());
            let a = AnyTransport::bind(Backend::Verbs, small.clone(), lo).expect("a");
            let b = AnyTransport::bind(Backend::Verbs, small, lo).expect("b");
            let t = std::time::Instant::now();
            let _ = pair(&a, &b).await;
            eprintln!(
                "verbs link with 4 KiB × 64 buffers set up in {:?}",
                t.elapsed()
            );
            let mut c = FabricConfig::new(SECRET.to_vec());
            c.max_message = 64 << 10;
            c.recv_depth = 32;
            let a = AnyTransport::bind(Backend::Verbs, c.clone(), lo).expect("a");
            let b = AnyTransport::bind(Backend::Verbs, c, lo).expect("b");
            for round in 0..3 {
                let t = std::time::Instant::now();
                let (ca, cb) = pair(&a, &b).await;
                eprintln!("verbs link {round} set up in {:?}", t.elapsed());
                let big = pattern(round, 64 << 10);
                ca.send(&big).await.expect("send");
                assert_eq!(cb.recv().await.expect("recv"), big);
                cb.send(&big[..100]).await.expect("send back");
                assert_eq!(ca.recv().await.expect("recv back"), &big[..100]);
            }
        });
    }

    #[test]
    fn any_registration_of_the_other_backend_is_refused() {
        run(|| async {
            let Some((a, b)) = verbs_pair() else { return };
            let (ca, _cb) = pair(&a, &b).await;
            let remote = filled("remote", 4096, 3);
            let remote_mr = b.register(&remote, Access::READ).expect("register");
            let lo = "127.0.0.1:0".parse().expect("addr");
            let tcp = AnyTransport::bind(Backend::Tcp, tcp_cfg(), lo).expect("tcp");
            let local = Region::new("local", 4096).expect("local");
            let tcp_mr = tcp.register(&local, Access::LOCAL).expect("register");
            let e = ca
                .read(&remote_mr.descriptor(), 0, 64, &tcp_mr, 0)
                .await
                .expect_err("a TCP registration on a verbs connection");
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
            assert!(ca.failure().is_none(), "refused before anything was posted");
            let verbs_mr = a.register(&local, Access::LOCAL).expect("register");
            ca.read(&remote_mr.descriptor(), 0, 64, &verbs_mr, 0)
                .await
                .expect("the right registration works");
            assert_eq!(bytes(&local, 0, 64), bytes(&remote, 0, 64));
        });
    }
}
