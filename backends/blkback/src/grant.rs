//! Mapping the frontend's data grants (`GNTTABOP_map_grant_ref` / `unmap_grant_ref` /
//! `copy`), as Linux's `xen_blkbk_map` does: every segment of a batch of requests in one
//! batched call, `GNTMAP_device_map` so the device gets a bus address to DMA to and from,
//! `GNTMAP_readonly` when the device only reads the page (a write to disk) — unless the
//! mapping is kept as a persistent grant, which is reused for both directions.
//!
//! [`PersistentGrants`] is the bounded per-device table of persistent mappings (Linux's
//! `persistent_gnts` tree, `max_pgrants`).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use xen_abi::{DomId, GrantRef};

/// A `GNTST_*` status (negative) or a local refusal, for one grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantError(pub i16);

impl GrantError {
    /// `GNTST_general_error`: used when the whole batch failed (the hypercall itself).
    pub const GENERAL: GrantError = GrantError(-1);
    /// `GNTST_bad_gntref`.
    pub const BAD_GNTREF: GrantError = GrantError(-4);
}

/// One grant to map for device DMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapRequest {
    /// The frontend's grant reference.
    pub gref: GrantRef,
    /// Map read-only (`GNTMAP_readonly`): the device will only read the page.
    pub readonly: bool,
}

/// A live device mapping of one granted page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The grant handle returned by the map (needed to unmap).
    pub handle: u32,
    /// `dev_bus_addr`: the page's machine (bus) address, page aligned.
    pub bus_addr: u64,
}

/// How blkback reaches the frontend's granted data pages. Implemented by dom0 with
/// grant-table hypercalls and on the host by test doubles.
pub trait GrantMapper {
    /// Maps every entry of `reqs` (granted by `dom`) with `GNTMAP_device_map` in one
    /// batch, writing one result per entry to `out` (same length as `reqs`). A failure of
    /// one entry must not affect the others.
    fn map_batch(
        &mut self,
        dom: DomId,
        reqs: &[MapRequest],
        out: &mut [Result<Mapping, GrantError>],
    );

    /// Unmaps `maps` in one batch. Failures cannot be acted on by the caller (the mapping
    /// is abandoned); implementations log them.
    fn unmap_batch(&mut self, maps: &[Mapping]);

    /// Copies the first `dst.len()` (at most 4096) bytes of the page `dom` granted as
    /// `gref` into `dst` (`GNTTABOP_copy` into a local page): used for indirect segment
    /// pages, which are read once and never mapped.
    fn copy_in(&mut self, dom: DomId, gref: GrantRef, dst: &mut [u8]) -> Result<(), GrantError>;
}

/// Linux's default `max_persistent_grants` per device.
pub const DEFAULT_MAX_PERSISTENT: usize = 1056;

/// The persistent grants of one connection: mappings kept after their request completed,
/// keyed by grant reference, so that a frontend that reuses a fixed pool of granted pages
/// (`feature-persistent`) costs no map/unmap per request. Bounded: past `max` entries new
/// grants are mapped and unmapped per request as usual.
#[derive(Debug)]
pub struct PersistentGrants {
    map: BTreeMap<u32, Mapping>,
    max: usize,
}

impl PersistentGrants {
    /// An empty table holding at most `max` mappings.
    pub fn new(max: usize) -> Self {
        Self {
            map: BTreeMap::new(),
            max,
        }
    }

    /// The mapping kept for `gref`, if any.
    pub fn get(&self, gref: GrantRef) -> Option<Mapping> {
        self.map.get(&gref.raw()).copied()
    }

    /// Keeps `m` for `gref`; `false` (nothing kept) if the table is full or already holds
    /// `gref` (the caller then unmaps `m` after use).
    pub fn insert(&mut self, gref: GrantRef, m: Mapping) -> bool {
        if self.map.len() >= self.max || self.map.contains_key(&gref.raw()) {
            return false;
        }
        self.map.insert(gref.raw(), m);
        true
    }

    /// Mappings kept.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no mapping is kept.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Removes and returns every mapping (at disconnect).
    pub fn drain(&mut self) -> Vec<Mapping> {
        core::mem::take(&mut self.map).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_unique() {
        let mut p = PersistentGrants::new(2);
        let m = |h| Mapping {
            handle: h,
            bus_addr: u64::from(h) << 12,
        };
        assert!(p.insert(GrantRef::new(1), m(1)));
        assert!(!p.insert(GrantRef::new(1), m(9)));
        assert!(p.insert(GrantRef::new(2), m(2)));
        assert!(!p.insert(GrantRef::new(3), m(3)));
        assert_eq!(p.get(GrantRef::new(1)), Some(m(1)));
        assert_eq!(p.get(GrantRef::new(3)), None);
        assert_eq!(p.drain().len(), 2);
        assert!(p.is_empty());
    }
}
