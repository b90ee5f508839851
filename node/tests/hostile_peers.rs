//! Peers that do not play by the rules, against a real node's fabric endpoint: a
//! wrong cluster secret is refused before anything is exchanged; an authenticated peer
//! that sends malformed chunks, an undecodable request or a request for a region it
//! forged gets nothing from the node, which keeps serving its clients.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use augur_fabric::tcp::TcpTransport;
use augur_fabric::{Access, Connection, FabricConfig, Region, RemoteRegion, Transport};
use augur_node::context::ClusterMap;
use augur_node::router::table::{Owner, RouteTable};
use augur_node::{Assignment, Config};
use bytes::Bytes;
use glommio::LocalExecutorBuilder;
use redis::Commands;

const SECRET: &str = "hostile peers test secret, long enough";

fn start() -> (u16, Vec<SocketAddr>) {
    let config = Config {
        port: 0,
        admin_port: 0,
        cores: 1,
        cluster_secret: Some(SECRET.into()),
        ..Config::default()
    };
    let handle = augur_node::start_with(config, |_| {
        Ok(Assignment {
            routes: RouteTable::from_ranges(1, vec![(Bytes::new(), Owner::Core(0), 1)]),
            per_core: vec![vec![(Bytes::new(), None)]],
            cluster: ClusterMap::default(),
        })
    })
    .expect("node starts");
    let out = (handle.port, handle.fabric_addrs.clone());
    std::mem::forget(handle);
    out
}

fn on_executor(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> + Send + 'static,
) {
    LocalExecutorBuilder::default()
        .spawn(f)
        .expect("executor")
        .join()
        .expect("test body");
}

fn transport(secret: &str) -> TcpTransport {
    let mut cfg = FabricConfig::new(secret.as_bytes().to_vec());
    cfg.handshake_timeout = Duration::from_secs(2);
    TcpTransport::bind(cfg, "127.0.0.1:0".parse().expect("addr")).expect("bind")
}

/// A chunk as the node's wire format frames it (kind, last, 6 zero bytes, id).
fn chunk(kind: u8, last: u8, id: u64, body: &[u8]) -> Vec<u8> {
    let mut c = vec![kind, last, 0, 0, 0, 0, 0, 0];
    c.extend_from_slice(&id.to_le_bytes());
    c.extend_from_slice(body);
    c
}

async fn closed_soon(conn: &augur_fabric::tcp::TcpConnection) -> bool {
    matches!(
        glommio::timer::timeout(Duration::from_secs(5), async { Ok(conn.recv().await) }).await,
        Ok(Err(_))
    )
}

#[test]
fn the_node_refuses_liars_and_keeps_serving() {
    let (port, fabric) = start();
    let mut client = common::client(port);
    let _: () = client.set("k", "v").expect("set");
    let addr = fabric[0];
    on_executor(move || {
        Box::pin(async move {
            // A wrong secret: the handshake fails, nothing else is exchanged.
            assert!(transport("not the cluster secret, at all")
                .connect(addr)
                .await
                .is_err());

            // An unknown chunk kind: the node closes the connection.
            let t = transport(SECRET);
            let conn = t.connect(addr).await.expect("right secret connects");
            conn.send(&chunk(9, 1, 1, b"")).await.expect("send");
            assert!(closed_soon(&conn).await, "unknown chunk kind not refused");

            // A message that is not a request: refused, with a reply saying so, and the
            // connection stays usable.
            let conn = t.connect(addr).await.expect("connect");
            conn.send(&chunk(1, 1, 7, &[0xff; 40])).await.expect("send");
            let reply =
                glommio::timer::timeout(Duration::from_secs(5), async { Ok(conn.recv().await) })
                    .await
                    .expect("a reply in time")
                    .expect("a reply");
            assert_eq!(reply[0], 2, "a reply chunk");
            assert_eq!(&reply[8..16], &7u64.to_le_bytes());

            // A partial message that claims to grow past the limit: closed.
            let big = vec![0u8; 1 << 19];
            let mut refused = false;
            for _ in 0..4096 {
                if conn.send(&chunk(1, 0, 8, &big)).await.is_err() {
                    refused = true;
                    break;
                }
                if conn.failure().is_some() {
                    refused = true;
                    break;
                }
            }
            assert!(
                refused || closed_soon(&conn).await,
                "oversized message not refused"
            );

            // A forged region descriptor: the owner refuses the READ.
            let conn = t.connect(addr).await.expect("connect");
            let local = Region::new("probe", 4096).expect("region");
            let mr = t.register(&local, Access::LOCAL).expect("register");
            let forged = RemoteRegion {
                addr: 0,
                len: 1 << 20,
                rkey: 0xdead_beef,
                region_id: 1,
                generation: 0,
            };
            assert!(conn.read(&forged, 0, 64, &mr, 0).await.is_err());
        })
    });
    // The node is still up and its data intact.
    let v: String = client.get("k").expect("get after the abuse");
    assert_eq!(v, "v");
    let mut fresh = common::client(port);
    let v: String = fresh.get("k").expect("get on a new connection");
    assert_eq!(v, "v");
}
