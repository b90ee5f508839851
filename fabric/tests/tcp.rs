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

/// Polls `cond` until it holds or `limit` passes (yielding to the executor in between).
async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while !cond() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// The ops of one `read_batch` are executed by the owner in submission order: op i's bytes
/// are read from the region no later than op i+1's.
///
/// A task on the owner's core keeps bumping a counter into words B, then A, then C,
/// yielding after each store, so at every instant A ≤ B. Each batch reads [a 16 MiB range
/// starting with C and ending with A, then B]: 256 chunks of 64 KiB for the first op, more
/// than the socket buffers hold, so the owner must yield (socket full) in the middle of it.
/// Read in order, A is read before B, so a ≤ b; if B were read before the end of the first
/// op, the writer would have moved A past the B that was read. c < a shows that the writer
/// did run while the first op was being served (the window where a reorder shows).
#[test]
fn read_batch_ops_execute_in_submission_order() {
    run(|| async {
        use augur_fabric::{Access, Connection, LocalMr, Op, Region};
        use std::cell::Cell;
        use std::rc::Rc;
        const SPAN: u64 = 16 << 20;
        const C: u64 = 0; // the first word of op 0
        const A: u64 = SPAN - 8; // the last word of op 0
        const B: u64 = SPAN; // op 1
        let (a, b) = transports();
        let (ca, _cb) = pair(&a, &b).await;
        let remote = Region::new("remote", SPAN as usize + 4096).expect("remote");
        let rmr = b.register(&remote, Access::READ).expect("register");
        let desc = rmr.descriptor();
        let local = Region::new("local", SPAN as usize + 4096).expect("local");
        let lmr = a.register(&local, Access::LOCAL).expect("register");

        let counter = Rc::new(Cell::new(0u64));
        let stop = Rc::new(Cell::new(false));
        let bumper = {
            let (remote, counter, stop) = (remote.clone(), counter.clone(), stop.clone());
            glommio::spawn_local(async move {
                while !stop.get() {
                    let c = counter.get() + 1;
                    counter.set(c);
                    remote.write_at(B, &c.to_le_bytes()).expect("store B");
                    futures_lite::future::yield_now().await;
                    remote.write_at(A, &c.to_le_bytes()).expect("store A");
                    futures_lite::future::yield_now().await;
                    remote.write_at(C, &c.to_le_bytes()).expect("store C");
                    futures_lite::future::yield_now().await;
                }
            })
        };
        let word = |off: u64| u64::from_le_bytes(bytes(&local, off, 8).try_into().expect("8"));
        let mut moved_during_op0 = 0;
        for round in 0..8 {
            let ops = [
                Op {
                    remote: desc,
                    remote_offset: 0,
                    len: SPAN,
                    local: &lmr,
                    local_offset: 0,
                },
                Op {
                    remote: desc,
                    remote_offset: B,
                    len: 8,
                    local: &lmr,
                    local_offset: SPAN,
                },
            ];
            ca.read_batch(&ops).await.expect("batch");
            let (wc, wa, wb) = (word(C), word(A), word(SPAN));
            assert!(
                wa <= wb,
                "round {round}: A = {wa} read after B = {wb}: op 1 was executed before op 0"
            );
            if wc < wa {
                moved_during_op0 += 1;
            }
        }
        stop.set(true);
        bumper.await;
        // the writer must really have run while op 0 was being served
        assert!(
            moved_during_op0 >= 4,
            "the writer ran during op 0 in only {moved_during_op0} of 8 batches: the test proves nothing"
        );
    });
}

/// A requester never has more than the owner's `max_requests` outstanding: batches far
/// larger than the window, from several tasks at once, wait for slots and complete intact.
#[test]
fn batches_larger_than_the_request_window() {
    run(|| async {
        use augur_fabric::{Access, Connection, LocalMr, Op, Region};
        use std::rc::Rc;
        let lo = "127.0.0.1:0".parse().expect("addr");
        let mut c = cfg(SECRET);
        c.max_requests = 3;
        let a = TcpTransport::bind(c.clone(), lo).expect("a");
        let b = TcpTransport::bind(c, lo).expect("b");
        let (ca, cb) = pair(&a, &b).await;
        let remote = filled("remote", 1 << 20, 9);
        let rmr = b.register(&remote, Access::READ_WRITE).expect("register");
        let desc = rmr.descriptor();
        let local = Region::new("local", 1 << 20).expect("local");
        let lmr = Rc::new(a.register(&local, Access::LOCAL).expect("register"));
        let ca = Rc::new(ca);
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let (ca, lmr) = (ca.clone(), lmr.clone());
            tasks.push(glommio::spawn_local(async move {
                // 100 reads of 64 B (a window of 3): each task its own 64 KiB quarter
                let ops: Vec<Op<'_, _>> = (0..100u64)
                    .map(|i| Op {
                        remote: desc,
                        remote_offset: t * (64 << 10) + i * 64,
                        len: 64,
                        local: &*lmr,
                        local_offset: t * (64 << 10) + i * 64,
                    })
                    .collect();
                ca.read_batch(&ops).await.expect("read batch");
                // writes of 2 chunks each (stream_chunk is 64 KiB) through the same window
                ca.write(&desc, (512 << 10) + t * 8, 8, &lmr, t * (64 << 10))
                    .await
                    .expect("write");
            }));
        }
        for t in tasks {
            t.await;
        }
        for t in 0..4u64 {
            let off = t * (64 << 10);
            assert_eq!(bytes(&local, off, 6400), bytes(&remote, off, 6400));
            assert_eq!(
                bytes(&remote, (512 << 10) + t * 8, 8),
                bytes(&local, off, 8)
            );
        }
        assert!(ca.failure().is_none() && cb.failure().is_none());
    });
}

/// A peer that floods READ requests without reading the answers cannot make the owner
/// queue more than `max_requests`: exactly the limit is served, one more cuts it off.
#[test]
fn read_flood_beyond_the_window_is_cut_off() {
    run(|| async {
        use augur_fabric::wire::{kind, Header, Params, HEADER_LEN, PARAMS_LEN};
        use augur_fabric::{Access, Connection, LocalMr, Region};
        const LIMIT: u32 = 4;
        const LEN: u64 = 16 << 20; // more than the socket buffers hold: answers stay queued
        let lo = "127.0.0.1:0".parse().expect("addr");
        let mut c = cfg(SECRET);
        c.max_requests = LIMIT;
        let owner = TcpTransport::bind(c, lo).expect("owner");
        let region = Region::new("remote", LEN as usize).expect("region");
        let mr = owner.register(&region, Access::READ).expect("register");
        let desc = mr.descriptor();
        let addr = owner.local_addr();
        let peer = glommio::spawn_local(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            auth::client(&mut s, SECRET, auth::backend::TCP)
                .await
                .expect("auth");
            let ours = Params {
                recv_depth: 4,
                max_message: 4096,
                max_requests: 4,
            };
            s.write_all(&ours.encode()).await.expect("params");
            let mut pb = [0u8; PARAMS_LEN];
            s.read_exact(&mut pb).await.expect("owner params");
            assert_eq!(Params::decode(&pb).expect("params").max_requests, LIMIT);
            let req = |id: u64| {
                Header {
                    kind: kind::READ_REQ,
                    req_id: id,
                    region_id: desc.region_id,
                    rkey: desc.rkey,
                    generation: desc.generation,
                    offset: 0,
                    len: LEN,
                    ..Header::default()
                }
                .encode()
            };
            // exactly the limit, all answered in full
            for id in 0..LIMIT as u64 {
                s.write_all(&req(id)).await.expect("request");
            }
            let mut data = vec![0u8; 1 << 20];
            let mut got = 0u64;
            while got < LIMIT as u64 * LEN {
                let mut hb = [0u8; HEADER_LEN];
                s.read_exact(&mut hb).await.expect("header");
                let h = Header::decode(&hb).expect("decode");
                assert_eq!(h.kind, kind::READ_DATA);
                let mut left = h.len;
                while left > 0 {
                    let k = left.min(data.len() as u64) as usize;
                    s.read_exact(&mut data[..k]).await.expect("data");
                    left -= k as u64;
                }
                got += h.len;
            }
            // one over the limit, nothing read meanwhile
            for id in 100..101 + LIMIT as u64 {
                if s.write_all(&req(id)).await.is_err() {
                    break;
                }
            }
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            rest.len() as u64
        });
        let conn = owner.accept().await.expect("accept");
        let after_flood = peer.await;
        assert!(
            after_flood < (LIMIT as u64 + 1) * LEN,
            "the owner answered past its window ({after_flood} bytes)"
        );
        assert!(
            eventually(Duration::from_secs(5), || conn.failure().is_some()).await,
            "the owner must cut off a peer beyond its window"
        );
        let why = conn.failure().unwrap_or_default();
        assert!(why.contains("window"), "{why}");
    });
}
