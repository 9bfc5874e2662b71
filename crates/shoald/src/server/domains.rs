//! Domains: `INTRODUCE` starts serving a guest's ring as a connection of
//! that domain; `RELEASE` stops it, removes the nodes the domain owns and
//! fires `@releaseDomain`; `SET_TARGET` lets a domain act for another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::connection::{self, Identity};
use super::Daemon;
use crate::ring::page;
use crate::ring::stream::{Ring, RingReader, RingWriter, Side, Signal};
use crate::ring::Backend;
use crate::wire::XsError;
use crate::xs::perms::Caller;
use crate::xs::quota::{Overrides, Quota, Quotas};

/// `DOMID_FIRST_RESERVED`: ids from here on are special, not domains.
pub const DOMID_FIRST_RESERVED: u32 = 0x7ff0;
/// `DOMID_SELF`, which `IS_DOMAIN_INTRODUCED` answers `T` for.
pub const DOMID_SELF: u32 = 0x7ff0;

const NO_TARGET: u32 = u32::MAX;

/// What a domain's connection needs to know about its domain.
pub struct DomainState {
    pub domid: u32,
    target: AtomicU32,
    /// This domain's own quota values (`SET_QUOTA <domid>|...`); the rest
    /// follow the global ones.
    pub quotas: Mutex<Overrides>,
    /// The ring features offered to it (fixed once introduced).
    pub features: u32,
    /// What its connection holds, for `CONTROL quota <domid>`.
    pub watches: AtomicU64,
    pub transactions: AtomicU64,
}

/// What a domain's connection holds.
pub struct Usage {
    pub watches: u64,
    pub transactions: u64,
}

impl DomainState {
    pub fn caller(&self) -> Caller {
        let target = self.target.load(Ordering::Relaxed);
        Caller { domid: self.domid, privileged: self.domid == 0, target: (target != NO_TARGET).then_some(target) }
    }
}

struct Domain {
    state: Arc<DomainState>,
    port: u32,
    stop: watch::Sender<bool>,
    /// Shut down since the last `RESUME` (what `@releaseDomain` reports once).
    shutdown: AtomicBool,
}

/// Settings of a domain made before it is introduced.
#[derive(Clone, Copy)]
struct Prepared {
    quotas: Overrides,
    features: u32,
}

/// The introduced domains.
pub struct Domains {
    backend: Option<Backend>,
    table: Mutex<HashMap<u32, Domain>>,
    /// The quotas a domain starts with.
    defaults: Mutex<Quotas>,
    /// `SET_QUOTA`/`SET_FEATURE` for domains not introduced yet.
    prepared: Mutex<HashMap<u32, Prepared>>,
}

/// A domain id `SET_QUOTA` and the like may name.
fn valid_domid(domid: u32) -> Result<u32, XsError> {
    if domid < DOMID_FIRST_RESERVED {
        Ok(domid)
    } else {
        Err(XsError::ENOENT)
    }
}

impl Domains {
    pub fn new(backend: Option<Backend>, defaults: Quotas) -> Domains {
        Domains {
            backend,
            table: Mutex::new(HashMap::new()),
            defaults: Mutex::new(defaults),
            prepared: Mutex::new(HashMap::new()),
        }
    }

    /// The global quotas: every domain's, except the values it has of its
    /// own.
    pub fn default_quotas(&self) -> Quotas {
        *self.defaults.lock().unwrap()
    }

    /// Sets a global quota: it applies at once to every domain that has no
    /// value of its own for it.
    pub fn set_default_quota(&self, quota: Quota, value: u32) {
        self.defaults.lock().unwrap().set(quota, value);
    }

    /// `domid`'s own quota values, introduced or not.
    fn overrides(&self, domid: u32) -> Overrides {
        if let Some(domain) = self.table.lock().unwrap().get(&domid) {
            return *domain.state.quotas.lock().unwrap();
        }
        self.prepared.lock().unwrap().get(&domid).map(|p| p.quotas).unwrap_or_default()
    }

    /// Introduced domains.
    pub fn count(&self) -> usize {
        self.table.lock().unwrap().len()
    }

    /// What an introduced domain's connection holds.
    pub fn usage(&self, domid: u32) -> Option<Usage> {
        self.table.lock().unwrap().get(&domid).map(|d| Usage {
            watches: d.state.watches.load(Ordering::Relaxed),
            transactions: d.state.transactions.load(Ordering::Relaxed),
        })
    }

    /// `domid`'s quotas, introduced or not.
    pub fn quotas(&self, domid: u32) -> Result<Quotas, XsError> {
        let domid = valid_domid(domid)?;
        let own = self.overrides(domid);
        Ok(own.apply(&self.default_quotas()))
    }

    /// Sets one of `domid`'s own quota values, introduced or not.
    pub fn set_quota(&self, domid: u32, quota: Quota, value: u32) -> Result<(), XsError> {
        let domid = valid_domid(domid)?;
        if let Some(domain) = self.table.lock().unwrap().get(&domid) {
            domain.state.quotas.lock().unwrap().set(quota, value);
            return Ok(());
        }
        let features = self.features(domid)?;
        let mut quotas = self.overrides(domid);
        quotas.set(quota, value);
        self.prepared.lock().unwrap().insert(domid, Prepared { quotas, features });
        Ok(())
    }

    /// The ring features `domid` has, or will have when introduced.
    pub fn features(&self, domid: u32) -> Result<u32, XsError> {
        let domid = valid_domid(domid)?;
        if domid == 0 {
            return Ok(page::FEATURES);
        }
        if let Some(domain) = self.table.lock().unwrap().get(&domid) {
            return Ok(domain.state.features);
        }
        Ok(self.prepared.lock().unwrap().get(&domid).map_or(page::FEATURES, |p| p.features))
    }

    /// `SET_FEATURE`: only before the domain is introduced (`EBUSY`
    /// after), and only features the daemon has (`EINVAL`).
    pub fn set_features(&self, domid: u32, features: u32) -> Result<(), XsError> {
        let domid = valid_domid(domid)?;
        if domid == 0 || self.table.lock().unwrap().contains_key(&domid) {
            return Err(XsError::EBUSY);
        }
        if features & !page::FEATURES != 0 {
            return Err(XsError::EINVAL);
        }
        let quotas = self.overrides(domid);
        self.prepared.lock().unwrap().insert(domid, Prepared { quotas, features });
        Ok(())
    }

    pub fn is_introduced(&self, domid: u32) -> bool {
        domid == 0 || domid == DOMID_SELF || self.table.lock().unwrap().contains_key(&domid)
    }

    /// `INTRODUCE`: serves page `gfn` as `domid`'s ring, kicked on `port`.
    /// A domain introduced again gets a fresh connection (its watches and
    /// transactions are dropped, its ring emptied). Returns whether the
    /// domain is new (then `@introduceDomain` fires).
    pub fn introduce(&self, daemon: &Arc<Daemon>, domid: u32, gfn: u64, port: u32) -> Result<bool, XsError> {
        if domid == 0 || domid >= DOMID_FIRST_RESERVED || port == 0 {
            return Err(XsError::EINVAL);
        }
        let Some(backend) = &self.backend else {
            tracing::warn!(domid, "INTRODUCE, but shoald has no ring backend (start it with --sim-hypervisor)");
            return Err(XsError::EINVAL);
        };
        let page = usize::try_from(gfn).ok().and_then(|gfn| backend.pages.page(gfn)).ok_or(XsError::EINVAL)?;
        let mut table = self.table.lock().unwrap();
        let old = table.remove(&domid);
        let existed = old.is_some();
        let (quotas, features) = match &old {
            // Introduced again: a fresh connection on an emptied ring, with
            // the settings the domain had.
            Some(old) => {
                let _ = old.stop.send(true);
                backend.channels.unbind(old.port);
                for field in [page::REQ_CONS, page::REQ_PROD, page::RSP_CONS, page::RSP_PROD] {
                    page.store(field, 0);
                }
                (*old.state.quotas.lock().unwrap(), old.state.features)
            }
            None => match self.prepared.lock().unwrap().remove(&domid) {
                Some(prepared) => (prepared.quotas, prepared.features),
                None => (Overrides::default(), page::FEATURES),
            },
        };
        page.store(page::SERVER_FEATURES, features);
        page.store(page::CONNECTION, page::CONNECTED);
        page.store(page::ERROR, page::ERROR_NONE);
        let signal = Arc::new(Signal::default());
        backend.channels.bind(port, signal.clone());
        let ring = Ring::new(page, Side::Daemon, signal, backend.channels.kicker(port));
        let state = Arc::new(DomainState {
            domid,
            target: AtomicU32::new(NO_TARGET),
            quotas: Mutex::new(quotas),
            features,
            watches: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
        });
        let (stop, stopped) = watch::channel(false);
        table.insert(domid, Domain { state: state.clone(), port, stop, shutdown: AtomicBool::new(false) });
        drop(table);
        let daemon = daemon.clone();
        tokio::spawn(async move {
            loop {
                connection::serve(
                    daemon.clone(),
                    RingReader(ring.clone()),
                    RingWriter(ring.clone()),
                    Identity::Domain(state.clone()),
                    stopped.clone(),
                    Some(ring.clone()),
                )
                .await;
                // The guest asked for a fresh connection: the old one's
                // requests, replies, watches and transactions are gone with
                // it; the domain keeps its quotas and target.
                if !ring.reconnect_requested() || *stopped.borrow() {
                    break;
                }
                ring.reset();
            }
        });
        Ok(!existed)
    }

    /// `RELEASE`: stops serving `domid`. `ENOENT` if it is not introduced.
    pub fn release(&self, domid: u32) -> Result<(), XsError> {
        if domid == 0 {
            return Err(XsError::EINVAL);
        }
        let domain = self.table.lock().unwrap().remove(&domid).ok_or(XsError::ENOENT)?;
        let _ = domain.stop.send(true);
        if let Some(backend) = &self.backend {
            backend.channels.unbind(domain.port);
        }
        Ok(())
    }

    /// `RESUME`: `@releaseDomain` will report the domain's next shutdown.
    pub fn resume(&self, domid: u32) -> Result<(), XsError> {
        if domid == 0 {
            return Err(XsError::EINVAL);
        }
        let table = self.table.lock().unwrap();
        let domain = table.get(&domid).ok_or(XsError::ENOENT)?;
        domain.shutdown.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// `SET_TARGET`: `domid` may act as `target` (both introduced; dom0 may
    /// be either).
    pub fn set_target(&self, domid: u32, target: u32) -> Result<(), XsError> {
        let table = self.table.lock().unwrap();
        if target != 0 && !table.contains_key(&target) {
            return Err(XsError::ENOENT);
        }
        if domid == 0 {
            // dom0 is privileged already; nothing changes.
            return Ok(());
        }
        let domain = table.get(&domid).ok_or(XsError::ENOENT)?;
        domain.state.target.store(target, Ordering::Relaxed);
        Ok(())
    }

    /// Stops every domain's connection.
    pub fn stop_all(&self) {
        for domain in self.table.lock().unwrap().values() {
            let _ = domain.stop.send(true);
        }
    }
}
