//! Connected clients, for CLIENT LIST/INFO, INFO clients and `maxclients`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;

#[derive(Debug, Clone)]
pub struct ClientEntry {
    pub id: u64,
    pub addr: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub name: Option<Bytes>,
    pub core: usize,
    pub created: Instant,
    pub last_command: String,
    pub resp: u8,
}

impl ClientEntry {
    /// One line in CLIENT LIST format.
    pub fn describe(&self) -> String {
        let addr = |a: Option<SocketAddr>| a.map_or_else(|| "?".to_string(), |a| a.to_string());
        format!(
            "id={} addr={} laddr={} name={} age={} idle=0 flags=N db=0 sub=0 psub=0 multi=-1 cmd={} user=default resp={} core={}\n",
            self.id,
            addr(self.addr),
            addr(self.local),
            self.name.as_ref().map(|n| String::from_utf8_lossy(n).into_owned()).unwrap_or_default(),
            self.created.elapsed().as_secs(),
            self.last_command,
            self.resp,
            self.core,
        )
    }
}

#[derive(Default)]
pub struct Clients {
    next_id: AtomicU64,
    all: Mutex<BTreeMap<u64, ClientEntry>>,
}

impl Clients {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<u64, ClientEntry>) -> R) -> R {
        match self.all.lock() {
            Ok(mut m) => f(&mut m),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Register a client unless `max` are connected already.
    pub fn register(
        &self,
        addr: Option<SocketAddr>,
        local: Option<SocketAddr>,
        core: usize,
        max: u64,
    ) -> Option<u64> {
        self.with(|all| {
            if all.len() as u64 >= max {
                return None;
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
            all.insert(
                id,
                ClientEntry {
                    id,
                    addr,
                    local,
                    name: None,
                    core,
                    created: Instant::now(),
                    last_command: "NULL".into(),
                    resp: 2,
                },
            );
            Some(id)
        })
    }

    pub fn remove(&self, id: u64) {
        self.with(|all| all.remove(&id));
    }

    pub fn update(&self, id: u64, f: impl FnOnce(&mut ClientEntry)) {
        self.with(|all| {
            if let Some(e) = all.get_mut(&id) {
                f(e)
            }
        })
    }

    pub fn get(&self, id: u64) -> Option<ClientEntry> {
        self.with(|all| all.get(&id).cloned())
    }

    pub fn list(&self) -> Vec<ClientEntry> {
        self.with(|all| all.values().cloned().collect())
    }

    pub fn count(&self) -> usize {
        self.with(|all| all.len())
    }
}
