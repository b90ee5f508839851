//! Backend-independent test bodies, run by tests/tcp.rs and tests/verbs.rs.
#![allow(dead_code)]

use std::rc::Rc;

use augur_fabric::{Access, Connection, Error, LocalMr, Op, Region, RemoteRegion, Transport};

pub const SECRET: &[u8] = b"augur test cluster secret 0123456789";

/// Deterministic, position-dependent pattern so that misplaced bytes are caught.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn filled(name: &str, len: usize, seed: u64) -> Region {
    let r = Region::new(name, len).expect("memfd region");
    r.write_at(0, &pattern(seed, len)).expect("fill");
    r
}

pub fn bytes(r: &Region, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    r.read_at(off, &mut v).expect("read_at");
    v
}

/// Connects `a` to `b`, returning (a's end, b's end).
pub async fn pair<T: Transport>(a: &T, b: &T) -> (T::Conn, T::Conn) {
    let (ca, cb) = futures_lite::future::zip(a.connect(b.local_addr()), b.accept()).await;
    (ca.expect("connect"), cb.expect("accept"))
}

pub const SIZES: &[usize] = &[1, 3, 64, 4095, 4097, 65_537, (1 << 20) + 3, 16 << 20];

/// Reads and writes of 1 B .. 16 MiB at odd offsets, verified byte for byte, and bytes
/// around the target range untouched.
pub async fn reads_and_writes_verified<T: Transport>(a: &T, b: &T) {
    let (ca, _cb) = pair(a, b).await;
    let big = (16 << 20) + 8192;
    let remote_region = filled("remote", big, 1);
    let remote_mr = b
        .register(&remote_region, Access::READ_WRITE)
        .expect("register remote");
    let desc = remote_mr.descriptor();
    let local_region = Region::new("local", big).expect("local");
    let local_mr = a
        .register(&local_region, Access::LOCAL)
        .expect("register local");
    for (i, &len) in SIZES.iter().enumerate() {
        let roff = 1 + 2 * i as u64 * 7; // odd
        let loff = 3 + 2 * i as u64 * 5; // odd
        local_region.fill(0, big as u64, 0xEE).expect("fill");
        ca.read(&desc, roff, len as u64, &local_mr, loff)
            .await
            .unwrap_or_else(|e| panic!("read of {len} B failed: {e}"));
        assert_eq!(
            bytes(&local_region, loff, len),
            bytes(&remote_region, roff, len),
            "read of {len} B at remote {roff} -> local {loff} differs"
        );
        assert_eq!(
            bytes(&local_region, loff - 1, 1),
            vec![0xEE],
            "byte before range touched"
        );
        assert_eq!(
            bytes(&local_region, loff + len as u64, 1),
            vec![0xEE],
            "byte after range touched"
        );

        // write a fresh pattern back to another odd place
        let data = pattern(100 + i as u64, len);
        local_region.write_at(loff, &data).expect("write_at");
        let woff = roff + 2;
        let before = bytes(&remote_region, woff - 1, 1);
        let after = bytes(&remote_region, woff + len as u64, 1);
        ca.write(&desc, woff, len as u64, &local_mr, loff)
            .await
            .unwrap_or_else(|e| panic!("write of {len} B failed: {e}"));
        assert!(
            bytes(&remote_region, woff, len) == data,
            "write of {len} B differs"
        );
        assert_eq!(
            bytes(&remote_region, woff - 1, 1),
            before,
            "byte before write touched"
        );
        assert_eq!(
            bytes(&remote_region, woff + len as u64, 1),
            after,
            "byte after write touched"
        );
    }
}

/// Many reads in flight at once, from concurrent tasks and as one batch.
pub async fn many_concurrent_reads<T: Transport>(a: &T, b: &T)
where
    T::Conn: 'static,
    T::Mr: 'static,
{
    let (ca, _cb) = pair(a, b).await;
    let n = 64usize;
    let chunk = 4099usize;
    let remote_region = filled("remote", n * chunk + 1, 7);
    let remote_mr = b.register(&remote_region, Access::READ).expect("register");
    let desc = remote_mr.descriptor();
    let local_region = Region::new("local", n * chunk + 1).expect("local");
    let local_mr = Rc::new(a.register(&local_region, Access::LOCAL).expect("register"));
    let ca = Rc::new(ca);
    let mut tasks = Vec::new();
    for i in 0..n {
        let (c, l) = (ca.clone(), local_mr.clone());
        let off = (i * chunk) as u64 + 1;
        tasks.push(glommio::spawn_local(async move {
            // reverse placement: remote chunk i lands in local chunk n-1-i
            let loff = ((n - 1 - i) * chunk) as u64 + 1;
            c.read(&desc, off, chunk as u64, &l, loff).await
        }));
    }
    for t in tasks {
        t.await.expect("concurrent read");
    }
    for i in 0..n {
        let loff = ((n - 1 - i) * chunk) as u64 + 1;
        assert_eq!(
            bytes(&local_region, loff, chunk),
            bytes(&remote_region, (i * chunk) as u64 + 1, chunk),
            "concurrent read {i}"
        );
    }

    // one batch of n reads
    local_region
        .fill(0, (n * chunk + 1) as u64, 0)
        .expect("fill");
    let ops: Vec<Op<'_, T::Mr>> = (0..n)
        .map(|i| Op {
            remote: desc,
            remote_offset: (i * chunk) as u64,
            len: chunk as u64,
            local: &*local_mr,
            local_offset: (i * chunk) as u64 + 1,
        })
        .collect();
    ca.read_batch(&ops).await.expect("batch read");
    assert_eq!(
        bytes(&local_region, 1, n * chunk),
        bytes(&remote_region, 0, n * chunk),
        "batch read"
    );
}

/// Requests outside the descriptor are refused locally; forged descriptors (bigger length,
/// wrong rkey) are refused by the owner (TCP) or the NIC (verbs), with an error.
/// Returns the connection state after the forged requests (verbs: broken).
pub async fn bad_requests_rejected<T: Transport>(a: &T, b: &T) -> (T::Conn, T::Conn) {
    let (ca, cb) = pair(a, b).await;
    let remote_region = filled("remote", 8192, 3);
    let remote_mr = b
        .register(&remote_region, Access::READ_WRITE)
        .expect("register");
    let desc = remote_mr.descriptor();
    let local_region = Region::new("local", 1 << 16).expect("local");
    let local_mr = a.register(&local_region, Access::LOCAL).expect("register");

    // local bounds checks: nothing is sent
    let e = ca
        .read(&desc, 8000, 193, &local_mr, 0)
        .await
        .expect_err("oob read");
    assert!(matches!(e, Error::OutOfBounds { .. }), "{e}");
    let e = ca
        .write(&desc, u64::MAX - 1, 4, &local_mr, 0)
        .await
        .expect_err("overflow write");
    assert!(matches!(e, Error::OutOfBounds { .. }), "{e}");
    let e = ca
        .read(&desc, 0, 100, &local_mr, (1 << 16) - 50)
        .await
        .expect_err("local oob");
    assert!(matches!(e, Error::OutOfBounds { .. }), "{e}");
    assert!(
        ca.failure().is_none(),
        "local checks must not break the connection"
    );
    // still works
    ca.read(&desc, 0, 8192, &local_mr, 0)
        .await
        .expect("read after local rejects");
    assert_eq!(
        bytes(&local_region, 0, 8192),
        bytes(&remote_region, 0, 8192)
    );

    // forged: length larger than the registration
    let forged_len = RemoteRegion {
        len: 1 << 16,
        ..desc
    };
    let e = ca
        .read(&forged_len, 4096, 8192, &local_mr, 0)
        .await
        .expect_err("forged len");
    eprintln!("forged length refused with: {e}");
    (ca, cb)
}

/// Wrong rkey (and, TCP, stale generation) refused.
pub async fn wrong_rkey_rejected<T: Transport>(a: &T, b: &T) -> Error {
    let (ca, _cb) = pair(a, b).await;
    let remote_region = filled("remote", 8192, 3);
    let remote_mr = b
        .register(&remote_region, Access::READ_WRITE)
        .expect("register");
    let desc = remote_mr.descriptor();
    let local_region = Region::new("local", 8192).expect("local");
    local_region.fill(0, 8192, 0x55).expect("fill");
    let local_mr = a.register(&local_region, Access::LOCAL).expect("register");
    let forged = RemoteRegion {
        rkey: desc.rkey ^ 0x5a5a_0100,
        ..desc
    };
    let e = ca
        .write(&forged, 0, 4096, &local_mr, 0)
        .await
        .expect_err("wrong rkey write");
    eprintln!("wrong rkey refused with: {e}");
    assert_eq!(
        bytes(&remote_region, 0, 4096),
        pattern(3, 4096),
        "a refused write changed bytes"
    );
    e
}

/// Messages: order, content, credit flow control with a tiny receive depth, size limit.
pub async fn send_recv_with_credits<T: Transport>(a: &T, b: &T)
where
    T::Conn: 'static,
{
    let (ca, cb) = pair(a, b).await;
    let max = ca.max_message_size();
    let e = ca.send(&vec![0u8; max + 1]).await.expect_err("too large");
    assert!(matches!(e, Error::MessageTooLarge { .. }), "{e}");
    let n = 200u64;
    let sender = glommio::spawn_local(async move {
        for i in 0..n {
            let len = (i as usize * 37) % max + 1;
            let mut m = pattern(i, len);
            m[0] = i as u8;
            ca.send(&m).await.expect("send");
        }
        ca
    });
    for i in 0..n {
        let m = cb.recv().await.expect("recv");
        let len = (i as usize * 37) % max + 1;
        let mut want = pattern(i, len);
        want[0] = i as u8;
        assert_eq!(m, want, "message {i}");
    }
    let ca = sender.await;
    // and the other way round
    cb.send(b"pong").await.expect("send back");
    assert_eq!(ca.recv().await.expect("recv back"), b"pong");
}

/// The peer goes away while a 16 MiB read is in flight: the read fails, no hang.
pub async fn disconnect_mid_transfer<T: Transport, F: Fn(&T::Conn)>(a: &T, b: &T, kill: F) -> Error
where
    T::Conn: 'static,
    T::Mr: 'static,
{
    let (ca, cb) = pair(a, b).await;
    let len = 16usize << 20;
    let remote_region = filled("remote", len, 9);
    let remote_region_tail = bytes(&remote_region, len as u64 - 1, 1)[0];
    let remote_mr = b.register(&remote_region, Access::READ).expect("register");
    let desc = remote_mr.descriptor();
    let local_region = Region::new("local", len).expect("local");
    let local_mr = a.register(&local_region, Access::LOCAL).expect("register");
    let watcher_region = local_region.clone();
    let first = bytes(&remote_region, 0, 1)[0];
    local_region.fill(0, 1, !first).expect("fill");
    local_region
        .fill(len as u64 - 1, 1, !remote_region_tail)
        .expect("fill");
    let read = glommio::spawn_local(async move {
        let r = ca.read(&desc, 0, len as u64, &local_mr, 0).await;
        (r, ca, local_mr)
    });
    // kill the owner's end as soon as the first bytes have landed
    loop {
        if bytes(&watcher_region, 0, 1)[0] == first {
            break;
        }
        glommio::yield_if_needed().await;
        futures_lite::future::yield_now().await;
    }
    let complete = bytes(&watcher_region, len as u64 - 1, 1)[0] == remote_region_tail;
    kill(&cb);
    drop(remote_mr);
    let (r, ca, _mr) = read.await;
    if complete {
        eprintln!("note: the transfer completed before the kill");
    }
    let e = r.expect_err("read must fail after the peer went away");
    eprintln!("in-flight read failed with: {e}");
    assert!(ca.failure().is_some(), "connection must report the failure");
    let e2 = ca
        .read(&desc, 0, 1, &_mr, 0)
        .await
        .expect_err("no op after failure");
    assert!(matches!(e2, Error::Disconnected(_)), "{e2}");
    e
}

/// A quick read + write round on a fresh connection (after a failure).
pub async fn reads_and_writes_small<T: Transport>(a: &T, b: &T) {
    let (ca, _cb) = pair(a, b).await;
    let r = filled("remote", 65_536, 11);
    let mr = b.register(&r, Access::READ_WRITE).expect("register");
    let l = Region::new("local", 65_536).expect("local");
    let lmr = a.register(&l, Access::LOCAL).expect("register");
    ca.read(&mr.descriptor(), 5, 60_001, &lmr, 7)
        .await
        .expect("read on new connection");
    assert_eq!(bytes(&l, 7, 60_001), bytes(&r, 5, 60_001));
    l.write_at(0, &pattern(12, 999)).expect("write_at");
    ca.write(&mr.descriptor(), 33, 999, &lmr, 0)
        .await
        .expect("write on new connection");
    assert_eq!(bytes(&r, 33, 999), pattern(12, 999));
}
