//! TCP backend tests (loopback only).

mod common;

use std::future::Future;
use std::time::Duration;

use augur_fabric::tcp::TcpTransport;
use augur_fabric::{auth, Error, FabricConfig, RemoteStatus, Transport};
use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
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

fn cfg(secret: &[u8]) -> FabricConfig {
    let mut c = FabricConfig::new(secret.to_vec());
    c.stream_chunk = 64 << 10;
    c.handshake_timeout = Duration::from_millis(500);
    c
}

fn transports() -> (TcpTransport, TcpTransport) {
    let lo = "127.0.0.1:0".parse().expect("addr");
    (
        TcpTransport::bind(cfg(SECRET), lo).expect("bind a"),
        TcpTransport::bind(cfg(SECRET), lo).expect("bind b"),
    )
}

#[test]
fn reads_and_writes_1b_to_16mib_odd_offsets() {
    run(|| async {
        let (a, b) = transports();
        reads_and_writes_verified(&a, &b).await;
    });
}

#[test]
fn many_concurrent_and_batched_reads() {
    run(|| async {
        let (a, b) = transports();
        many_concurrent_reads(&a, &b).await;
    });
}

#[test]
fn out_of_bounds_and_forged_length_rejected() {
    run(|| async {
        let (a, b) = transports();
        let (ca, _cb) = bad_requests_rejected(&a, &b).await;
        // TCP: the owner refuses, the connection stays usable
        assert!(augur_fabric::Connection::failure(&ca).is_none());
    });
}

#[test]
fn wrong_rkey_rejected_by_owner() {
    run(|| async {
        let (a, b) = transports();
        let e = wrong_rkey_rejected(&a, &b).await;
        assert!(matches!(e, Error::Remote(RemoteStatus::BadKey)), "{e}");
    });
}

#[test]
fn deregistered_region_is_unreachable() {
    run(|| async {
        use augur_fabric::{Access, Connection, LocalMr, Region};
        let (a, b) = transports();
        let (ca, _cb) = pair(&a, &b).await;
        let r = filled("remote", 4096, 5);
        let mr = b.register(&r, Access::READ).expect("register");
        let desc = mr.descriptor();
        let l = Region::new("local", 4096).expect("local");
        let lmr = a.register(&l, Access::LOCAL).expect("register");
        ca.read(&desc, 0, 4096, &lmr, 0).await.expect("read");
        let e = ca
            .write(&desc, 0, 16, &lmr, 0)
            .await
            .expect_err("read-only region");
        assert!(matches!(e, Error::Remote(RemoteStatus::Permission)), "{e}");
        drop(mr);
        let e = ca
            .read(&desc, 0, 4096, &lmr, 0)
            .await
            .expect_err("deregistered");
        assert!(
            matches!(e, Error::Remote(RemoteStatus::NoSuchRegion)),
            "{e}"
        );
        // a new registration of the same memory gets a new id/generation; old descriptor dead
        let mr2 = b.register(&r, Access::READ).expect("register again");
        assert_ne!(mr2.descriptor().generation, desc.generation);
        ca.read(&mr2.descriptor(), 0, 4096, &lmr, 0)
            .await
            .expect("read new");
    });
}

#[test]
fn send_recv_credits() {
    run(|| async {
        let lo = "127.0.0.1:0".parse().expect("addr");
        let mut c = cfg(SECRET);
        c.recv_depth = 4;
        c.max_message = 512;
        let a = TcpTransport::bind(c.clone(), lo).expect("a");
        let b = TcpTransport::bind(c, lo).expect("b");
        send_recv_with_credits(&a, &b).await;
    });
}

#[test]
fn peer_disconnect_mid_transfer_fails_the_read() {
    run(|| async {
        let (a, b) = transports();
        let e = disconnect_mid_transfer(&a, &b, |c| c.abort()).await;
        assert!(matches!(e, Error::Disconnected(_)), "{e}");
    });
}

#[test]
fn auth_wrong_secret_fails_both_sides() {
    run(|| async {
        let lo = "127.0.0.1:0".parse().expect("addr");
        let a = TcpTransport::bind(cfg(b"the right secret, 32 bytes long!"), lo).expect("a");
        let b = TcpTransport::bind(cfg(b"a wrong secret, also long enough"), lo).expect("b");
        let (ca, cb) = futures_lite::future::zip(a.connect(b.local_addr()), b.accept()).await;
        let ea = ca.err().expect("client must fail");
        let eb = cb.err().expect("server must fail");
        assert!(matches!(ea, Error::Auth(_)), "{ea}");
        assert!(matches!(eb, Error::Auth(_)), "{eb}");
        eprintln!("client: {ea}\nserver: {eb}");
    });
}

#[test]
fn short_secret_refused() {
    let lo = "127.0.0.1:0".parse().expect("addr");
    assert!(matches!(
        TcpTransport::bind(FabricConfig::new(b"short".to_vec()), lo),
        Err(Error::InvalidArgument(_))
    ));
}

fn hello(backend: u8) -> [u8; auth::HELLO_LEN] {
    let mut h = [0u8; auth::HELLO_LEN];
    h[..4].copy_from_slice(&auth::MAGIC);
    h[4..6].copy_from_slice(&auth::VERSION.to_le_bytes());
    h[6] = auth::msg::HELLO;
    h[7] = backend;
    h[8..].copy_from_slice(&[7u8; 32]);
    h
}

/// Raw clients that misbehave at every step: each must make accept() fail with Auth.
#[test]
fn auth_malformed_truncated_vanishing_silent_clients() {
    run(|| async {
        let lo = "127.0.0.1:0".parse().expect("addr");
        let b = TcpTransport::bind(cfg(SECRET), lo).expect("b");
        let addr = b.local_addr();
        type Script = fn(TcpStream) -> std::pin::Pin<Box<dyn Future<Output = ()>>>;
        let scripts: Vec<(&str, Script)> = vec![
            ("garbage", |mut s| {
                Box::pin(async move {
                    let _ = s.write_all(&[0xAB; auth::HELLO_LEN]).await;
                    let mut v = Vec::new();
                    let _ = s.read_to_end(&mut v).await;
                })
            }),
            ("truncated hello", |mut s| {
                Box::pin(async move {
                    let _ = s.write_all(&hello(auth::backend::TCP)[..20]).await;
                    let _ = s.close().await;
                })
            }),
            ("wrong backend", |mut s| {
                Box::pin(async move {
                    let _ = s.write_all(&hello(auth::backend::VERBS)).await;
                    let mut v = Vec::new();
                    let _ = s.read_to_end(&mut v).await;
                })
            }),
            ("vanishes after challenge", |mut s| {
                Box::pin(async move {
                    let _ = s.write_all(&hello(auth::backend::TCP)).await;
                    let mut ch = [0u8; auth::CHALLENGE_LEN];
                    let _ = s.read_exact(&mut ch).await;
                    drop(s);
                })
            }),
            ("silent", |s| {
                Box::pin(async move {
                    glommio::timer::sleep(Duration::from_millis(1500)).await;
                    drop(s);
                })
            }),
        ];
        for (name, script) in scripts {
            let client = glommio::spawn_local(async move {
                let s = TcpStream::connect(addr).await.expect("raw connect");
                script(s).await;
            });
            let e = b
                .accept()
                .await
                .err()
                .unwrap_or_else(|| panic!("{name}: accept must fail"));
            assert!(matches!(e, Error::Auth(_)), "{name}: {e}");
            eprintln!("{name}: {e}");
            client.await;
        }
    });
}

/// A raw client with a wrong proof gets a refusal and then EOF: no parameters, no access.
#[test]
fn auth_wrong_proof_gets_no_access() {
    run(|| async {
        let lo = "127.0.0.1:0".parse().expect("addr");
        let b = TcpTransport::bind(cfg(SECRET), lo).expect("b");
        let addr = b.local_addr();
        let client = glommio::spawn_local(async move {
            let mut s = TcpStream::connect(addr).await.expect("raw connect");
            s.write_all(&hello(auth::backend::TCP))
                .await
                .expect("hello");
            let mut ch = [0u8; auth::CHALLENGE_LEN];
            s.read_exact(&mut ch).await.expect("challenge");
            let mut resp = hello(auth::backend::TCP);
            resp[6] = auth::msg::RESPONSE;
            resp[7] = 0;
            s.write_all(&resp).await.expect("bogus proof");
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            rest
        });
        let e = b.accept().await.err().expect("accept must fail");
        assert!(matches!(e, Error::Auth(_)), "{e}");
        let rest = client.await;
        assert_eq!(
            rest.len(),
            auth::RESULT_LEN,
            "only the verdict, then EOF: {rest:?}"
        );
        assert_eq!(rest[6], auth::msg::RESULT);
        assert_eq!(rest[7], 1, "verdict must be 'refused'");
    });
}

/// An impostor server (no secret) cannot get a client to connect.
#[test]
fn auth_impostor_server() {
    run(|| async {
        let lo = "127.0.0.1:0".parse().expect("addr");
        let a = TcpTransport::bind(cfg(SECRET), lo).expect("a");
        let fake = TcpListener::bind("127.0.0.1:0").expect("fake");
        let addr = fake.local_addr().expect("addr");
        let server = glommio::spawn_local(async move {
            let mut s = fake.accept().await.expect("accept");
            let mut h = [0u8; auth::HELLO_LEN];
            s.read_exact(&mut h).await.expect("hello");
            let mut ch = [0u8; auth::CHALLENGE_LEN];
            ch[..8].copy_from_slice(&h[..8]);
            ch[6] = auth::msg::CHALLENGE;
            s.write_all(&ch).await.expect("challenge");
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            rest
        });
        let e = a.connect(addr).await.err().expect("connect must fail");
        assert!(matches!(e, Error::Auth(_)), "{e}");
        let rest = server.await;
        assert!(
            rest.is_empty(),
            "client must not send its proof to an impostor"
        );
    });
}
