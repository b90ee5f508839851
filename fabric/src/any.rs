//! The backend chosen at run time: [`AnyTransport`], [`AnyConnection`] and [`AnyMr`]
//! dispatch every call to the TCP backend or (with the `verbs` feature) the verbs
//! backend, so that a node picks its fabric from its configuration rather than at compile
//! time. Nothing here moves bytes itself: each method is one `match` that forwards to the
//! backend's own implementation of the same trait method.
//!
//! The only thing the enums add is a check: a registration made with one backend cannot
//! be used on a connection of the other (an [`Error::InvalidArgument`], before anything is
//! posted). A node has one transport per core, so this never happens in practice.
//!
//! [`rdma_port_for`] finds the RDMA device and GID that carry a given IP address, so a
//! node can choose its device from the address it binds.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::tcp::{TcpConnection, TcpMr, TcpTransport};
use crate::transport::{Access, Connection, FabricConfig, LocalMr, Op, RemoteRegion, Transport};
#[cfg(feature = "verbs")]
use crate::verbs::transport::{VerbsConnection, VerbsMr, VerbsTransport};
use crate::Region;

/// Which backend moves the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// [`TcpTransport`]: always built, runs anywhere.
    #[default]
    Tcp,
    /// `VerbsTransport`: RDMA RC queue pairs; needs the `verbs` feature and a device.
    Verbs,
}

impl Backend {
    /// Whether this build can run the backend (verbs needs the `verbs` feature).
    pub const fn compiled(self) -> bool {
        match self {
            Backend::Tcp => true,
            Backend::Verbs => cfg!(feature = "verbs"),
        }
    }

    /// `"tcp"` or `"verbs"`, as [`Backend::from_str`] takes it.
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Tcp => "tcp",
            Backend::Verbs => "verbs",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = Error;

    fn from_str(s: &str) -> Result<Backend> {
        match s {
            "tcp" => Ok(Backend::Tcp),
            "verbs" => Ok(Backend::Verbs),
            other => Err(Error::InvalidArgument(format!(
                "unknown fabric backend '{other}' (expected tcp or verbs)"
            ))),
        }
    }
}

/// A transport of either backend.
pub enum AnyTransport {
    /// The TCP backend.
    Tcp(TcpTransport),
    /// The verbs backend.
    #[cfg(feature = "verbs")]
    Verbs(VerbsTransport),
}

impl AnyTransport {
    /// Binds a transport of `backend` on `addr` (its TCP bootstrap address for verbs).
    /// Verbs in a build without the `verbs` feature is an [`Error::InvalidArgument`].
    pub fn bind(backend: Backend, cfg: FabricConfig, addr: SocketAddr) -> Result<AnyTransport> {
        match backend {
            Backend::Tcp => TcpTransport::bind(cfg, addr).map(AnyTransport::Tcp),
            #[cfg(feature = "verbs")]
            Backend::Verbs => VerbsTransport::bind(cfg, addr).map(AnyTransport::Verbs),
            #[cfg(not(feature = "verbs"))]
            Backend::Verbs => {
                let _ = (cfg, addr);
                Err(Error::InvalidArgument(
                    "this build has no RDMA verbs backend (build with the `verbs` feature)".into(),
                ))
            }
        }
    }

    /// The backend of this transport.
    pub fn backend(&self) -> Backend {
        match self {
            AnyTransport::Tcp(_) => Backend::Tcp,
            #[cfg(feature = "verbs")]
            AnyTransport::Verbs(_) => Backend::Verbs,
        }
    }

    /// One line for logs: the backend and, for verbs, the device, port and GID index.
    pub fn describe(&self) -> String {
        match self {
            AnyTransport::Tcp(_) => "tcp".to_string(),
            #[cfg(feature = "verbs")]
            AnyTransport::Verbs(t) => {
                let d = t.device();
                format!(
                    "verbs device {} port {} gid index {}",
                    d.name(),
                    d.port(),
                    d.gid_index()
                )
            }
        }
    }
}

impl From<TcpTransport> for AnyTransport {
    fn from(t: TcpTransport) -> Self {
        AnyTransport::Tcp(t)
    }
}

#[cfg(feature = "verbs")]
impl From<VerbsTransport> for AnyTransport {
    fn from(t: VerbsTransport) -> Self {
        AnyTransport::Verbs(t)
    }
}

impl Transport for AnyTransport {
    type Mr = AnyMr;
    type Conn = AnyConnection;

    fn local_addr(&self) -> SocketAddr {
        match self {
            AnyTransport::Tcp(t) => t.local_addr(),
            #[cfg(feature = "verbs")]
            AnyTransport::Verbs(t) => t.local_addr(),
        }
    }

    fn register(&self, region: &Region, access: Access) -> Result<AnyMr> {
        match self {
            AnyTransport::Tcp(t) => t.register(region, access).map(AnyMr::Tcp),
            #[cfg(feature = "verbs")]
            AnyTransport::Verbs(t) => t.register(region, access).map(AnyMr::Verbs),
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<AnyConnection> {
        match self {
            AnyTransport::Tcp(t) => t.connect(addr).await.map(AnyConnection::Tcp),
            #[cfg(feature = "verbs")]
            AnyTransport::Verbs(t) => t.connect(addr).await.map(AnyConnection::Verbs),
        }
    }

    async fn accept(&self) -> Result<AnyConnection> {
        match self {
            AnyTransport::Tcp(t) => t.accept().await.map(AnyConnection::Tcp),
            #[cfg(feature = "verbs")]
            AnyTransport::Verbs(t) => t.accept().await.map(AnyConnection::Verbs),
        }
    }
}

/// A registration of either backend.
pub enum AnyMr {
    /// Registered with a [`TcpTransport`].
    Tcp(TcpMr),
    /// Registered with a `VerbsTransport`.
    #[cfg(feature = "verbs")]
    Verbs(VerbsMr),
}

impl AnyMr {
    /// The backend this region is registered with.
    pub fn backend(&self) -> Backend {
        match self {
            AnyMr::Tcp(_) => Backend::Tcp,
            #[cfg(feature = "verbs")]
            AnyMr::Verbs(_) => Backend::Verbs,
        }
    }
}

impl LocalMr for AnyMr {
    fn region(&self) -> &Region {
        match self {
            AnyMr::Tcp(m) => m.region(),
            #[cfg(feature = "verbs")]
            AnyMr::Verbs(m) => m.region(),
        }
    }

    fn descriptor(&self) -> RemoteRegion {
        match self {
            AnyMr::Tcp(m) => m.descriptor(),
            #[cfg(feature = "verbs")]
            AnyMr::Verbs(m) => m.descriptor(),
        }
    }
}

/// A connection of either backend. Cloning gives another handle to the same connection.
#[derive(Clone)]
pub enum AnyConnection {
    /// A TCP connection.
    Tcp(TcpConnection),
    /// A verbs connection (one RC QP).
    #[cfg(feature = "verbs")]
    Verbs(VerbsConnection),
}

impl AnyConnection {
    /// The backend of this connection.
    pub fn backend(&self) -> Backend {
        match self {
            AnyConnection::Tcp(_) => Backend::Tcp,
            #[cfg(feature = "verbs")]
            AnyConnection::Verbs(_) => Backend::Verbs,
        }
    }

    /// Fails the connection abruptly, as a crashed peer would look (both backends'
    /// `abort`). For tests of failure handling.
    pub fn abort(&self) {
        match self {
            AnyConnection::Tcp(c) => c.abort(),
            #[cfg(feature = "verbs")]
            AnyConnection::Verbs(c) => c.abort(),
        }
    }
}

/// `ops` with each local registration narrowed to one backend's type by `pick`; a
/// registration of another backend is refused before anything is sent.
fn narrow<'a, M>(
    ops: &[Op<'a, AnyMr>],
    conn: Backend,
    pick: impl Fn(&'a AnyMr) -> Option<&'a M>,
) -> Result<Vec<Op<'a, M>>> {
    ops.iter()
        .map(|op| {
            let local = pick(op.local).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "a region registered with the {} backend used on a {conn} connection",
                    op.local.backend()
                ))
            })?;
            Ok(Op {
                remote: op.remote,
                remote_offset: op.remote_offset,
                len: op.len,
                local,
                local_offset: op.local_offset,
            })
        })
        .collect()
}

fn tcp_mr(m: &AnyMr) -> Option<&TcpMr> {
    match m {
        AnyMr::Tcp(m) => Some(m),
        #[cfg(feature = "verbs")]
        AnyMr::Verbs(_) => None,
    }
}

#[cfg(feature = "verbs")]
fn verbs_mr(m: &AnyMr) -> Option<&VerbsMr> {
    match m {
        AnyMr::Verbs(m) => Some(m),
        AnyMr::Tcp(_) => None,
    }
}

impl Connection for AnyConnection {
    type Mr = AnyMr;

    async fn read_batch(&self, ops: &[Op<'_, AnyMr>]) -> Result<()> {
        match self {
            AnyConnection::Tcp(c) => c.read_batch(&narrow(ops, Backend::Tcp, tcp_mr)?).await,
            #[cfg(feature = "verbs")]
            AnyConnection::Verbs(c) => c.read_batch(&narrow(ops, Backend::Verbs, verbs_mr)?).await,
        }
    }

    async fn write_batch(&self, ops: &[Op<'_, AnyMr>]) -> Result<()> {
        match self {
            AnyConnection::Tcp(c) => c.write_batch(&narrow(ops, Backend::Tcp, tcp_mr)?).await,
            #[cfg(feature = "verbs")]
            AnyConnection::Verbs(c) => c.write_batch(&narrow(ops, Backend::Verbs, verbs_mr)?).await,
        }
    }

    async fn send(&self, msg: &[u8]) -> Result<()> {
        match self {
            AnyConnection::Tcp(c) => c.send(msg).await,
            #[cfg(feature = "verbs")]
            AnyConnection::Verbs(c) => c.send(msg).await,
        }
    }

    async fn recv(&self) -> Result<Vec<u8>> {
        match self {
            AnyConnection::Tcp(c) => c.recv().await,
            #[cfg(feature = "verbs")]
            AnyConnection::Verbs(c) => c.recv().await,
        }
    }

    fn max_message_size(&self) -> usize {
        match self {
            AnyConnection::Tcp(c) => c.max_message_size(),
            #[cfg(feature = "verbs")]
            AnyConnection::Verbs(c) => c.max_message_size(),
        }
    }

    fn failure(&self) -> Option<String> {
        match self {
            AnyConnection::Tcp(c) => c.failure(),
            #[cfg(feature = "verbs")]
            AnyConnection::Verbs(c) => c.failure(),
        }
    }

    fn close(&self) {
        match self {
            AnyConnection::Tcp(c) => c.close(),
            #[cfg(feature = "verbs")]
            AnyConnection::Verbs(c) => c.close(),
        }
    }
}

/// An RDMA device port and the GID index that carry one IP address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdmaPort {
    /// Device name (`rxe0`, `mlx5_0`, ...), for [`FabricConfig::device`].
    pub device: String,
    /// Port number (1-based), for [`FabricConfig::port`].
    pub port: u8,
    /// Index of the GID holding the address, for [`FabricConfig::gid_index`].
    pub gid_index: u8,
}

/// The RDMA device, port and RoCEv2 GID whose address is `ip` (an IPv4 address appears in
/// the GID table IPv4-mapped, `::ffff:a.b.c.d`), from the kernel's
/// `/sys/class/infiniband`; `None` when no device carries it (or there is no RDMA
/// support). Lets a node bound to the address of one RoCE netdev use that netdev's
/// device, on a host with several.
pub fn rdma_port_for(ip: IpAddr) -> Option<RdmaPort> {
    rdma_port_in(Path::new("/sys/class/infiniband"), ip)
}

/// [`rdma_port_for`] over a sysfs tree rooted at `root` (tests give a fake one).
pub fn rdma_port_in(root: &Path, ip: IpAddr) -> Option<RdmaPort> {
    let want = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    if want.is_unspecified() {
        return None;
    }
    let mut devices: Vec<String> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    devices.sort(); // deterministic when (oddly) two devices carry the address
    for device in devices {
        let ports_dir = root.join(&device).join("ports");
        let Ok(ports) = std::fs::read_dir(&ports_dir) else {
            continue;
        };
        let mut ports: Vec<u8> = ports
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        ports.sort_unstable();
        for port in ports {
            let dir = ports_dir.join(port.to_string());
            // GID indices are u8 in FabricConfig: the first 256 entries are searched
            for gid_index in 0..=u8::MAX {
                let Ok(text) = std::fs::read_to_string(dir.join(format!("gids/{gid_index}")))
                else {
                    break; // past the end of the table
                };
                if Ipv6Addr::from_str(text.trim()).ok() != Some(want) {
                    continue;
                }
                // RoCEv2 only (what the verbs backend speaks); a table without type
                // attributes (InfiniBand, old kernels) is taken as is.
                let kind =
                    std::fs::read_to_string(dir.join(format!("gid_attrs/types/{gid_index}")));
                if kind.is_ok_and(|k| k.trim() != "RoCE v2") {
                    continue;
                }
                return Some(RdmaPort {
                    device,
                    port,
                    gid_index,
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_round_trip() {
        for b in [Backend::Tcp, Backend::Verbs] {
            assert_eq!(b.name().parse::<Backend>().unwrap(), b);
            assert_eq!(b.to_string(), b.name());
        }
        assert!(matches!(
            "rdma".parse::<Backend>(),
            Err(Error::InvalidArgument(_))
        ));
        assert!(Backend::Tcp.compiled());
        assert_eq!(Backend::Verbs.compiled(), cfg!(feature = "verbs"));
    }

    #[cfg(not(feature = "verbs"))]
    #[test]
    fn verbs_without_the_feature_is_a_clear_error() {
        let cfg = FabricConfig::new(b"sixteen bytes or more".to_vec());
        match AnyTransport::bind(Backend::Verbs, cfg, "127.0.0.1:0".parse().unwrap()) {
            Err(Error::InvalidArgument(why)) => assert!(why.contains("verbs"), "{why}"),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("bound a verbs transport without the verbs feature"),
        }
    }

    /// A fake `/sys/class/infiniband` with rxe0 (10.77.0.1, v1 and v2 GIDs) and rxe1
    /// (10.77.0.2 at index 1).
    fn fake_sysfs() -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!(
            "augur-fabric-sysfs-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let gid = |dev: &str, i: u32, text: &str, kind: &str| {
            let port = root.join(dev).join("ports/1");
            std::fs::create_dir_all(port.join("gids")).unwrap();
            std::fs::create_dir_all(port.join("gid_attrs/types")).unwrap();
            std::fs::write(port.join(format!("gids/{i}")), format!("{text}\n")).unwrap();
            std::fs::write(
                port.join(format!("gid_attrs/types/{i}")),
                format!("{kind}\n"),
            )
            .unwrap();
        };
        let zero = "0000:0000:0000:0000:0000:0000:0000:0000";
        gid(
            "rxe0",
            0,
            "fe80:0000:0000:0000:0000:00ff:fe00:0001",
            "RoCE v2",
        );
        gid(
            "rxe0",
            1,
            "0000:0000:0000:0000:0000:ffff:0a4d:0001",
            "IB/RoCE v1",
        );
        gid(
            "rxe0",
            2,
            "0000:0000:0000:0000:0000:ffff:0a4d:0001",
            "RoCE v2",
        );
        gid("rxe0", 3, zero, "");
        gid(
            "rxe1",
            0,
            "fe80:0000:0000:0000:0000:00ff:fe00:0002",
            "RoCE v2",
        );
        gid(
            "rxe1",
            1,
            "0000:0000:0000:0000:0000:ffff:0a4d:0002",
            "RoCE v2",
        );
        root
    }

    #[test]
    fn rdma_port_found_by_bound_address() {
        let root = fake_sysfs();
        let at = |ip: &str| rdma_port_in(&root, ip.parse().unwrap());
        let port = |device: &str, gid_index| RdmaPort {
            device: device.into(),
            port: 1,
            gid_index,
        };
        assert_eq!(at("10.77.0.1"), Some(port("rxe0", 2)), "the RoCEv2 GID");
        assert_eq!(at("10.77.0.2"), Some(port("rxe1", 1)));
        assert_eq!(at("127.0.0.1"), None);
        assert_eq!(at("0.0.0.0"), None);
        assert_eq!(at("fe80::ff:fe00:2"), Some(port("rxe1", 0)));
        assert_eq!(
            rdma_port_in(&root.join("absent"), "10.77.0.1".parse().unwrap()),
            None
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
