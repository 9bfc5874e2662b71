//! Quotas: how much an unprivileged domain may hold. Privileged callers
//! (dom0's sockets) are held to none of them, as with the stock daemons.
//!
//! The names are those of `GET_QUOTA`/`SET_QUOTA` (Xen's xenstore.txt) and
//! of cxenstored's `CONTROL quota`. Every limit is exact: a domain may hold
//! `nodes` nodes, `watches` watches and so on, not one more (Xen 4.18 and
//! later count this way; 4.17's cxenstored let a domain have one watch and
//! one transaction past its quota). 0 means no limit.

use crate::wire::XsError;

/// One kind of quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quota {
    Nodes,
    Watches,
    Outstanding,
    Transactions,
    NodePermissions,
    NodeSize,
}

impl Quota {
    pub const ALL: [Quota; 6] = [
        Quota::Nodes,
        Quota::Watches,
        Quota::Outstanding,
        Quota::Transactions,
        Quota::NodePermissions,
        Quota::NodeSize,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Quota::Nodes => "nodes",
            Quota::Watches => "watches",
            Quota::Outstanding => "outstanding",
            Quota::Transactions => "transactions",
            Quota::NodePermissions => "node-permissions",
            Quota::NodeSize => "node-size",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Quota::Nodes => "Nodes per domain",
            Quota::Watches => "Watches per domain",
            Quota::Outstanding => "Outstanding requests per domain",
            Quota::Transactions => "Active transactions per domain",
            Quota::NodePermissions => "Max. number of permissions per node",
            Quota::NodeSize => "Max. size of a node",
        }
    }

    /// The quota a name denotes (4.17's `permissions` too).
    pub fn from_name(name: &str) -> Option<Quota> {
        if name == "permissions" {
            return Some(Quota::NodePermissions);
        }
        Quota::ALL.into_iter().find(|q| q.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A value for every quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas([u32; 6]);

impl Default for Quotas {
    /// The stock daemons' defaults.
    fn default() -> Quotas {
        let mut q = Quotas([0; 6]);
        q.set(Quota::Nodes, 1000);
        q.set(Quota::Watches, 128);
        q.set(Quota::Outstanding, 20);
        q.set(Quota::Transactions, 10);
        q.set(Quota::NodePermissions, 5);
        q.set(Quota::NodeSize, 2048);
        q
    }
}

impl Quotas {
    pub fn get(&self, quota: Quota) -> u32 {
        self.0[quota.index()]
    }

    pub fn set(&mut self, quota: Quota, value: u32) {
        self.0[quota.index()] = value;
    }

    /// The limit, if there is one.
    pub fn limit(&self, quota: Quota) -> Option<u64> {
        match self.get(quota) {
            0 => None,
            n => Some(u64::from(n)),
        }
    }

    /// `ENOSPC`-style check: holding `held` and adding `more` stays within
    /// the quota.
    pub fn allows(&self, quota: Quota, held: u64, more: u64) -> bool {
        self.limit(quota).is_none_or(|limit| held.saturating_add(more) <= limit)
    }
}

/// A domain's own quota values, where it has any; the others follow the
/// global values (so a change of a global value applies to every domain at
/// once, as in cxenstored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overrides([Option<u32>; 6]);

impl Overrides {
    pub fn set(&mut self, quota: Quota, value: u32) {
        self.0[quota.index()] = Some(value);
    }

    /// The domain's quotas under the global `values`.
    pub fn apply(&self, values: &Quotas) -> Quotas {
        let mut out = *values;
        for quota in Quota::ALL {
            if let Some(v) = self.0[quota.index()] {
                out.set(quota, v);
            }
        }
        out
    }
}

/// The size of a node as the stock C daemon's node-size quota measures it:
/// a 24-byte header, 8 bytes per permission, the value, and the child
/// names each with a NUL.
pub fn record_size(permissions: usize, value: usize, children_bytes: usize) -> u64 {
    (24 + 8 * permissions + value + children_bytes) as u64
}

/// What a request may still add, for the caller making it.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Nodes the caller may still come to own (`None`: no limit).
    pub nodes_left: Option<u64>,
    /// Largest node the caller may write.
    pub node_size: Option<u64>,
    /// Nodes created so far by the request (or transaction).
    pub created: u64,
}

impl Budget {
    pub const UNLIMITED: Budget = Budget { nodes_left: None, node_size: None, created: 0 };

    /// Takes `count` new nodes from the budget, or `ENOSPC`.
    pub fn take_nodes(&mut self, count: u64) -> Result<(), XsError> {
        if let Some(left) = self.nodes_left {
            if count > left {
                return Err(XsError::ENOSPC);
            }
            self.nodes_left = Some(left - count);
        }
        self.created += count;
        Ok(())
    }

    /// `ENOSPC` if a node of `size` bytes reaches the node-size quota.
    pub fn check_size(&self, size: u64) -> Result<(), XsError> {
        match self.node_size {
            Some(limit) if size >= limit => Err(XsError::ENOSPC),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_the_old_name_is_accepted() {
        for q in Quota::ALL {
            assert_eq!(Quota::from_name(q.name()), Some(q));
        }
        assert_eq!(Quota::from_name("permissions"), Some(Quota::NodePermissions));
        assert_eq!(Quota::from_name("memory"), None);
    }

    #[test]
    fn limits_are_exact_and_zero_means_none() {
        let mut q = Quotas::default();
        assert!(q.allows(Quota::Watches, 127, 1));
        assert!(!q.allows(Quota::Watches, 128, 1));
        q.set(Quota::Watches, 0);
        assert!(q.allows(Quota::Watches, u64::MAX, 1));
    }

    #[test]
    fn a_budget_runs_out_exactly() {
        let mut b = Budget { nodes_left: Some(3), node_size: Some(100), created: 0 };
        b.take_nodes(2).unwrap();
        assert_eq!(b.take_nodes(2), Err(XsError::ENOSPC));
        b.take_nodes(1).unwrap();
        assert_eq!(b.created, 3);
        assert_eq!(b.take_nodes(1), Err(XsError::ENOSPC));
        assert_eq!(b.check_size(99), Ok(()));
        assert_eq!(b.check_size(100), Err(XsError::ENOSPC));
    }
}
