//! The mapper's maptrack table (Xen's `struct grant_mapping` array and its free list):
//! one record per `map_grant_ref` that succeeded, named by the [`GrantHandle`] returned
//! to the guest, until `unmap_grant_ref` removes its last use.

use crate::MapUse;
use alloc_crate::vec::Vec;
use xen_abi::grant_table::{Gntst, GrantHandle};
use xen_abi::{DomId, GrantRef, Mfn};

/// Default maximum number of handles per domain: Xen's default `max_maptrack_frames`
/// (1024) times 512 eight-byte records per frame.
pub const DEFAULT_MAPTRACK_LIMIT: u32 = 1024 * 512;

/// One mapping of a granted frame, as recorded for the mapper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The granting domain.
    pub granter: DomId,
    /// The grant reference in the granter's table.
    pub gref: GrantRef,
    /// Which uses are still in place.
    pub uses: MapUse,
    /// Mapped read-only (`GNTMAP_readonly`).
    pub readonly: bool,
    /// The granted frame (pinned in the granter's active entry).
    pub frame: Mfn,
    /// The `GNTMAP_*` flags of the map request (for the PTE of a host mapping).
    pub map_flags: u32,
}

/// A domain's maptrack table: mappings by handle, with a free list of handles.
#[derive(Clone, Debug)]
pub struct MapTrack {
    slots: Vec<Option<Mapping>>,
    /// Free handles below `slots.len()` (a stack: the most recently freed is reused
    /// first).
    free: Vec<u32>,
    limit: u32,
}

impl Default for MapTrack {
    fn default() -> Self {
        MapTrack::new(DEFAULT_MAPTRACK_LIMIT)
    }
}

impl MapTrack {
    /// An empty table allowing at most `limit` mappings at a time.
    pub fn new(limit: u32) -> MapTrack {
        MapTrack {
            slots: Vec::new(),
            free: Vec::new(),
            limit,
        }
    }

    /// Mappings currently recorded.
    pub fn len(&self) -> usize {
        self.slots.len().saturating_sub(self.free.len())
    }

    /// Whether no mapping is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The mapping named by `handle`: `GNTST_bad_handle` if the handle is out of range or
    /// free (Xen's checks at the start of `unmap_common`).
    pub fn lookup(&self, handle: GrantHandle) -> Result<Mapping, Gntst> {
        let i = usize::try_from(handle.raw()).map_err(|_| Gntst::BadHandle)?;
        self.slots.get(i).copied().flatten().ok_or(Gntst::BadHandle)
    }

    /// Records a mapping: `GNTST_no_space` when `limit` handles are in use.
    pub(crate) fn insert(&mut self, m: Mapping) -> Result<GrantHandle, Gntst> {
        if let Some(h) = self.free.pop() {
            if let Some(slot) = self.slots.get_mut(h as usize) {
                *slot = Some(m);
                return Ok(GrantHandle::new(h));
            }
        }
        let h = u32::try_from(self.slots.len()).map_err(|_| Gntst::NoSpace)?;
        if h >= self.limit {
            return Err(Gntst::NoSpace);
        }
        self.slots.push(Some(m));
        Ok(GrantHandle::new(h))
    }

    /// Whether a handle is available (checked before anything else is done, as Xen gets
    /// the handle first).
    pub(crate) fn has_space(&self) -> bool {
        !self.free.is_empty() || self.slots.len() < self.limit as usize
    }

    /// Updates the uses still in place; frees the handle when none is left.
    pub(crate) fn set_uses(&mut self, handle: GrantHandle, uses: MapUse) {
        let h = handle.raw();
        let Some(slot) = self.slots.get_mut(h as usize) else {
            return;
        };
        match slot {
            Some(m) if !uses.is_empty() => m.uses = uses,
            Some(_) => {
                *slot = None;
                self.free.push(h);
            }
            None => {}
        }
    }

    /// Forgets the `gone` uses of a mapping: the first half of a batched unmap (the
    /// caller then releases them with [`crate::GrantTable::complete_unmap`]), or a mapping
    /// whose granter no longer exists (there is no grant entry left to unpin; the caller
    /// drops the frame references those uses held). Frees the handle once no use is left.
    pub fn forget_uses(&mut self, handle: GrantHandle, gone: MapUse) {
        let h = handle.raw();
        let Some(slot) = self.slots.get_mut(h as usize) else {
            return;
        };
        if let Some(m) = slot {
            let left = MapUse {
                host: m.uses.host && !gone.host,
                device: m.uses.device && !gone.device,
            };
            if left.is_empty() {
                *slot = None;
                self.free.push(h);
            } else {
                m.uses = left;
            }
        }
    }

    /// Removes and returns every mapping (mapper teardown, Xen's
    /// `gnttab_release_mappings`). For each, the caller removes the host mapping from the
    /// PV MMU (it may already be gone with the page tables) and releases the grant with
    /// [`crate::GrantTable::release_mapping`] on the granter's table.
    pub fn drain(&mut self) -> Vec<(GrantHandle, Mapping)> {
        let out = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((GrantHandle::new(u32::try_from(i).ok()?), (*s)?)))
            .collect();
        self.slots.clear();
        self.free.clear();
        out
    }

    /// Iterates over the recorded mappings.
    pub fn iter(&self) -> impl Iterator<Item = (GrantHandle, &Mapping)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((GrantHandle::new(u32::try_from(i).ok()?), s.as_ref()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgetting_every_use_frees_the_handle() {
        let mut t = MapTrack::new(4);
        let m = Mapping {
            granter: DomId::new(3),
            gref: GrantRef::new(8),
            uses: MapUse {
                host: true,
                device: true,
            },
            readonly: false,
            frame: Mfn::new(0x42),
            map_flags: 0,
        };
        let h = t.insert(m).unwrap();
        let device = MapUse {
            host: false,
            device: true,
        };
        t.forget_uses(h, device);
        assert_eq!(
            t.lookup(h).unwrap().uses,
            MapUse {
                host: true,
                device: false
            }
        );
        t.forget_uses(
            h,
            MapUse {
                host: true,
                device: false,
            },
        );
        assert_eq!(t.lookup(h), Err(Gntst::BadHandle));
        assert!(t.is_empty());
        // An unknown handle is ignored.
        t.forget_uses(GrantHandle::new(7), device);
        assert_eq!(t.insert(m), Ok(h), "the handle is reused");
    }
}
