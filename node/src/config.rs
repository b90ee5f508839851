//! Node configuration: a TOML file (redis.conf names where the concept is the same)
//! whose every field a command-line flag can override.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub use augur_fabric::Backend as FabricBackend;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Address to listen on; loopback unless you mean to expose the node.
    pub bind: IpAddr,
    pub port: u16,
    /// Cores (executors) to run; 0 means every available core.
    pub cores: usize,
    pub requirepass: Option<String>,
    /// Bytes of region memory after which writes get -OOM; 0 means no limit.
    #[serde(deserialize_with = "de_memory")]
    pub maxmemory: u64,
    pub maxclients: usize,
    #[serde(deserialize_with = "de_memory")]
    pub proto_max_bulk_len: u64,
    #[serde(deserialize_with = "de_memory")]
    pub max_inline_len: u64,
    /// Most bytes of unparsed input a client may have buffered (a partial request);
    /// past it the connection is closed, as Redis's `client-query-buffer-limit`.
    #[serde(deserialize_with = "de_memory")]
    pub client_query_buffer_limit: u64,
    /// Seconds a client may sit idle (between requests) before it is closed; 0 =
    /// never (redis.conf `timeout`).
    pub timeout: u64,
    /// Seconds a client has to finish a request it has begun, whatever `timeout` says:
    /// a client that sends half a request and stalls is closed after this long. A single
    /// request (e.g. a 512 MB value on a slow link) must arrive within it. A client that
    /// takes none of its replies for this long is closed too. At least 1.
    pub partial_request_timeout: u64,
    /// Target size of one fragment's region; a fragment whose live data outgrows
    /// half of it is split.
    #[serde(deserialize_with = "de_memory")]
    pub region_size: u64,
    /// Back regions with huge pages when the system has them reserved.
    pub hugepages: bool,
    /// Port of the admin HTTP endpoint (`/metrics`); 0 turns it off.
    pub admin_port: u16,
    /// Active expiry: how often each core removes due keys, in ms.
    pub expiry_interval_ms: u64,
    /// This node's id in the cluster (1, 2, ...), unique and stable across restarts.
    pub node_id: u64,
    /// Where the node keeps its state (the ownership table's Raft log); none = memory.
    pub dir: Option<PathBuf>,
    /// A member's cluster bus address (`HOST:PORT`) to join; none = start a cluster.
    pub join: Option<SocketAddr>,
    /// Shared by every node of a cluster; authenticates the cluster bus and the fabric.
    pub cluster_secret: Option<String>,
    /// Port of the cluster bus (ownership table); 0 = `port` + 10000, as Redis
    /// Cluster, or any free port when `port` is 0.
    pub cluster_port: u16,
    /// Nodes the cluster waits for before it spreads the key space over them.
    pub cluster_size: u32,
    /// Seconds start-up waits for the cluster to form.
    pub cluster_form_timeout: u64,
    /// How often each core summarises its clients' accesses for placement, in ms.
    pub telemetry_interval_ms: u64,
    /// Accesses per second above which a fragment is split (in a cluster of two or
    /// more nodes, where smaller fragments can be placed apart); 0 turns it off.
    pub split_load: u64,
    /// Seconds two neighbouring fragments of one node must be cold (no access) before
    /// the leader merges them in the table; 0 turns merging off.
    pub merge_after_s: u64,
    /// How the leader places fragments: `static` (never moves them), `reactive` (after
    /// a node's clients dominate a fragment's load for a while) or `predictive`.
    pub placement_policy: String,
    /// Most MiB per second that migrations to this node pull together (0: no limit):
    /// the share of the fabric, and of the cores that check what lands, they may take.
    /// The handoff's last delta is never held back (it is inside the write pause).
    pub migration_max_mb_per_s: u64,
    /// What carries node-to-node traffic: `"tcp"` (default) or `"verbs"` (RDMA; needs a
    /// build with the `verbs` feature and an RDMA device). With verbs each core's fabric
    /// endpoint listens for its TCP bootstrap on `bind`, and the device is the one whose
    /// RoCE GID table holds the `bind` address (so bind the address of the RoCE netdev);
    /// when no device holds it (e.g. loopback) the fabric's default applies:
    /// `$IBV_DEVICE`, else the first device.
    #[serde(deserialize_with = "de_fabric")]
    pub fabric: FabricBackend,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 6379,
            cores: 0,
            requirepass: None,
            maxmemory: 0,
            maxclients: 10_000,
            proto_max_bulk_len: 512 << 20,
            max_inline_len: 64 << 10,
            client_query_buffer_limit: 1 << 30,
            timeout: 0,
            partial_request_timeout: 60,
            region_size: 16 << 20,
            hugepages: false,
            admin_port: 9121,
            expiry_interval_ms: 100,
            node_id: 1,
            dir: None,
            join: None,
            cluster_secret: None,
            cluster_port: 0,
            cluster_size: 1,
            cluster_form_timeout: 120,
            telemetry_interval_ms: 1000,
            split_load: 50_000,
            merge_after_s: 300,
            placement_policy: "predictive".into(),
            migration_max_mb_per_s: 0,
            fabric: FabricBackend::Tcp,
        }
    }
}

/// The placement policies a node knows.
pub const POLICIES: [&str; 3] = ["static", "reactive", "predictive"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("invalid config {0}: {1}")]
    Parse(String, toml::de::Error),
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read(path.display().to_string(), e))?;
        let config: Config =
            toml::from_str(&text).map_err(|e| ConfigError::Parse(path.display().to_string(), e))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.region_size < (64 << 10) {
            return invalid("region-size must be at least 64kb");
        }
        if self.proto_max_bulk_len < 1024 || self.proto_max_bulk_len > (1 << 30) - 1 {
            return invalid("proto-max-bulk-len must be between 1kb and 1gb");
        }
        if self.client_query_buffer_limit < (1 << 20) {
            return invalid("client-query-buffer-limit must be at least 1mb");
        }
        if self.proto_max_bulk_len > self.client_query_buffer_limit {
            return invalid("proto-max-bulk-len must not exceed client-query-buffer-limit");
        }
        if self.partial_request_timeout == 0 {
            return invalid("partial-request-timeout must be at least 1 (seconds)");
        }
        if self.maxclients == 0 {
            return invalid("maxclients must be at least 1");
        }
        if self.node_id == 0 {
            return invalid("node-id must be at least 1");
        }
        if self.cluster_size == 0 || self.cluster_size > 1000 {
            return invalid("cluster-size must be between 1 and 1000");
        }
        if let Some(secret) = &self.cluster_secret {
            if secret.len() < 16 {
                return invalid("cluster-secret must be at least 16 bytes");
            }
        }
        if !POLICIES.contains(&self.placement_policy.as_str()) {
            return invalid("placement-policy must be static, reactive or predictive");
        }
        if !self.fabric.compiled() {
            return invalid(
                "fabric = \"verbs\" needs an augur built with RDMA support \
                 (cargo build --features verbs); this one has only the tcp fabric",
            );
        }
        if (self.join.is_some() || self.cluster_size > 1) && self.cluster_secret.is_none() {
            return invalid("a cluster of several nodes needs cluster-secret");
        }
        Ok(())
    }

    /// The secret fabric and bus peers must prove they know. A node alone that was
    /// given none gets a random one: nobody else can join it.
    pub fn fabric_secret(&self) -> Vec<u8> {
        match &self.cluster_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        }
    }

    /// The cluster bus address to listen on.
    pub fn bus_addr(&self, client_port: u16) -> SocketAddr {
        let port = match (self.cluster_port, self.port) {
            (0, 0) => 0,
            (0, _) => client_port.saturating_add(10000),
            (p, _) => p,
        };
        SocketAddr::new(self.bind, port)
    }

    /// Cores to run: the configured count, or all the machine has.
    pub fn core_count(&self) -> usize {
        if self.cores > 0 {
            self.cores
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// Parse a memory amount the way redis.conf does: `1000`, `64kb`, `16mb`, `1gb`,
/// `1k` (1000), `1m`, `1g`.
pub fn parse_memory(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn de_memory<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Amount {
        Number(u64),
        Text(String),
    }
    match Amount::deserialize(d)? {
        Amount::Number(n) => Ok(n),
        Amount::Text(t) => parse_memory(&t)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid memory amount '{t}'"))),
    }
}

fn de_fabric<'de, D: serde::Deserializer<'de>>(d: D) -> Result<FabricBackend, D::Error> {
    let name = String::deserialize(d)?;
    name.parse().map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units_like_redis_conf() {
        assert_eq!(parse_memory("100"), Some(100));
        assert_eq!(parse_memory("64kb"), Some(65536));
        assert_eq!(parse_memory("1GB"), Some(1 << 30));
        assert_eq!(parse_memory("2m"), Some(2_000_000));
        assert_eq!(parse_memory("x"), None);
        assert_eq!(parse_memory("10tb"), None);
    }

    #[test]
    fn toml_with_redis_names_and_units() {
        let c: Config = toml::from_str(
            "port = 7000\nmaxmemory = \"100mb\"\nregion-size = 1048576\nrequirepass = \"pw\"\n",
        )
        .unwrap();
        assert_eq!(c.port, 7000);
        assert_eq!(c.maxmemory, 100 << 20);
        assert_eq!(c.region_size, 1 << 20);
        assert_eq!(c.requirepass.as_deref(), Some("pw"));
        assert!(toml::from_str::<Config>("no-such-key = 1").is_err());
    }

    #[test]
    fn fabric_setting() {
        assert_eq!(Config::default().fabric, FabricBackend::Tcp);
        let c: Config = toml::from_str("fabric = \"verbs\"\n").unwrap();
        assert_eq!(c.fabric, FabricBackend::Verbs);
        let e = toml::from_str::<Config>("fabric = \"rdma\"\n").unwrap_err();
        assert!(e.to_string().contains("tcp or verbs"), "{e}");
        // verbs without the feature compiled in: refused at start-up, saying why
        let verbs_built = FabricBackend::Verbs.compiled();
        match c.validate() {
            Ok(()) => assert!(verbs_built, "verbs accepted without the feature"),
            Err(e) => {
                assert!(!verbs_built, "verbs refused with the feature: {e}");
                assert!(e.to_string().contains("--features verbs"), "{e}");
            }
        }
    }
}
