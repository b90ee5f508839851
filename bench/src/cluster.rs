//! A local cluster: `n` augur nodes as separate processes on this machine (loopback
//! unless [`ClusterOptions::binds`] says otherwise), node 1 starting
//! the cluster and the rest joining it. Used by `augur cluster up` and by anything
//! that needs a real cluster to measure (scenarios, tests).
//!
//! Every process is ours and is stopped by PID: SIGTERM, then SIGKILL after a grace
//! period, when [`LocalCluster::stop`] runs or the value is dropped.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::client::ping;

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Nodes, ids 1..=n.
    pub nodes: u32,
    /// Client port of node 1; node i listens on base_port + i - 1 (0 = free ports).
    pub base_port: u16,
    /// Cores per node.
    pub cores: u32,
    /// State directory: node i keeps its state in `dir/node-i`.
    pub dir: Option<PathBuf>,
    /// Where node logs go.
    pub log_dir: PathBuf,
    /// Shared secret; random when none.
    pub secret: Option<String>,
    /// How long to wait for every node to serve.
    pub ready_timeout: Duration,
    /// Extra flags for every node.
    pub extra_args: Vec<String>,
    /// Extra environment for every node (fault-injection hooks in tests).
    pub env: Vec<(String, String)>,
    /// `--placement-policy` for every node; the default is `static`, so that tests
    /// and benchmarks see no moves they did not ask for (`None`: the node's default).
    pub policy: Option<String>,
    /// Addresses the nodes bind (`--bind`: clients, bus, fabric); node i takes
    /// `binds[(i - 1) % len]`. Empty: 127.0.0.1 for all.
    pub binds: Vec<IpAddr>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            base_port: 7001,
            cores: 1,
            dir: None,
            log_dir: std::env::temp_dir(),
            secret: None,
            ready_timeout: Duration::from_secs(120),
            extra_args: Vec::new(),
            env: Vec::new(),
            policy: Some("static".into()),
            binds: Vec::new(),
        }
    }
}

pub struct NodeProc {
    pub id: u32,
    pub addr: SocketAddr,
    pub bus: SocketAddr,
    pub log: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stop this node now with SIGKILL (a crash, for fault tests).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn terminate(&mut self, grace: Duration) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SIGTERM lets the node exit on its own; std offers only SIGKILL.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

pub struct LocalCluster {
    pub nodes: Vec<NodeProc>,
    pub secret: String,
    augur: PathBuf,
    opts: ClusterOptions,
}

/// Client and bus ports for `n` nodes, below the kernel's ephemeral range (which
/// starts at 32768 by default), so that no socket bound to port 0 — a node's fabric
/// endpoint, a client — can take one between our check and the node's bind.
fn unused_ports(ips: &[IpAddr]) -> anyhow::Result<Vec<(u16, u16)>> {
    let n = ips.len();
    let free = |ip: IpAddr, p: u16| std::net::TcpListener::bind((ip, p)).is_ok();
    for _ in 0..64 {
        let base = 10_000 + rand::random::<u16>() % 20_000;
        let ports: Vec<(u16, u16)> = (0..n as u16)
            .map(|i| (base + 2 * i, base + 2 * i + 1))
            .collect();
        if ports
            .iter()
            .zip(ips)
            .all(|(&(a, b), &ip)| free(ip, a) && free(ip, b))
        {
            return Ok(ports);
        }
    }
    bail!("no free ports found for {n} nodes")
}

fn random_secret() -> String {
    rand::random::<[u8; 24]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl LocalCluster {
    /// Start the nodes and return once every one answers PING; `on_ready` is called
    /// for each node as soon as it serves.
    pub fn start(
        augur: &Path,
        opts: ClusterOptions,
        mut on_ready: impl FnMut(&NodeProc),
    ) -> anyhow::Result<LocalCluster> {
        if opts.nodes == 0 {
            bail!("a cluster needs at least one node");
        }
        let secret = opts.secret.clone().unwrap_or_else(random_secret);
        let ips: Vec<IpAddr> = (0..opts.nodes as usize)
            .map(|i| match opts.binds.len() {
                0 => IpAddr::V4(Ipv4Addr::LOCALHOST),
                n => opts.binds[i % n],
            })
            .collect();
        let ports = if opts.base_port == 0 {
            unused_ports(&ips)?
        } else {
            (0..opts.nodes)
                .map(|i| {
                    let p = opts
                        .base_port
                        .checked_add(i as u16)
                        .context("port out of range")?;
                    Ok((p, p.checked_add(10000).context("bus port out of range")?))
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        };
        let mut cluster = LocalCluster {
            nodes: Vec::new(),
            secret,
            augur: augur.to_path_buf(),
            opts,
        };
        for (i, &(port, bus)) in ports.iter().enumerate() {
            let id = i as u32 + 1;
            let join = (id > 1).then(|| SocketAddr::new(ips[0], ports[0].1));
            let node = cluster.spawn(id, SocketAddr::new(ips[i], port), bus, join)?;
            cluster.nodes.push(node);
        }
        let deadline = Instant::now() + cluster.opts.ready_timeout;
        let mut ready = vec![false; cluster.nodes.len()];
        while ready.iter().any(|r| !r) {
            for (i, node) in cluster.nodes.iter_mut().enumerate() {
                if ready[i] {
                    continue;
                }
                if let Some(c) = node.child.as_mut() {
                    if let Ok(Some(status)) = c.try_wait() {
                        bail!(
                            "node {} exited during start-up ({status}); its log {}:\n{}",
                            node.id,
                            node.log.display(),
                            tail(&node.log, 20)
                        );
                    }
                }
                if ping(node.addr).is_ok() {
                    ready[i] = true;
                    on_ready(node);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the cluster did not serve within {:?}; logs in {}",
                    cluster.opts.ready_timeout,
                    cluster.opts.log_dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(cluster)
    }

    fn spawn(
        &self,
        id: u32,
        addr: SocketAddr,
        bus: u16,
        join: Option<SocketAddr>,
    ) -> anyhow::Result<NodeProc> {
        let port = addr.port();
        let log = self
            .opts
            .log_dir
            .join(format!("augur-node-{id}-{port}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(&self.augur);
        cmd.arg("node")
            .args(["--node-id", &id.to_string()])
            .args(["--bind", &addr.ip().to_string()])
            .args(["--port", &port.to_string()])
            .args(["--cluster-port", &bus.to_string()])
            .args(["--cores", &self.opts.cores.to_string()])
            .args(["--cluster-size", &self.opts.nodes.to_string()])
            .args(["--admin-port", "0"])
            // Through the environment, so the secret is not in `ps` output.
            .env("AUGUR_CLUSTER_SECRET", &self.secret)
            .args(&self.opts.extra_args)
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if let Some(j) = join {
            cmd.args(["--join", &j.to_string()]);
        }
        if let Some(p) = &self.opts.policy {
            cmd.args(["--placement-policy", p]);
        }
        if let Some(dir) = &self.opts.dir {
            let d = dir.join(format!("node-{id}"));
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            cmd.arg("--dir").arg(d);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.augur.display()))?;
        Ok(NodeProc {
            id,
            addr,
            bus: SocketAddr::new(addr.ip(), bus),
            log,
            child: Some(child),
        })
    }

    /// Start node `id` again (after [`NodeProc::kill`]), with the same ports and dir.
    pub fn restart(&mut self, id: u32) -> anyhow::Result<()> {
        let i = self
            .nodes
            .iter()
            .position(|n| n.id == id)
            .context("no such node")?;
        let (addr, bus) = (self.nodes[i].addr, self.nodes[i].bus.port());
        let join = self
            .nodes
            .iter()
            .find(|n| n.id != id && n.child.is_some())
            .map(|n| n.bus);
        self.nodes[i].kill();
        self.nodes[i] = self.spawn(id, addr, bus, join)?;
        Ok(())
    }

    /// The first node whose process has exited, with its status.
    pub fn exited(&mut self) -> Option<(u32, String)> {
        self.nodes.iter_mut().find_map(|n| {
            let c = n.child.as_mut()?;
            match c.try_wait() {
                Ok(Some(status)) => Some((n.id, status.to_string())),
                _ => None,
            }
        })
    }

    /// SIGTERM every node, SIGKILL what is left after a grace period.
    pub fn stop(&mut self) {
        for n in &mut self.nodes {
            n.terminate(Duration::from_secs(5));
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
