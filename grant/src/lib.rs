//! Grant tables, version 1 (`xen/include/public/grant_table.h`, Xen's
//! `xen/common/grant_table.c`), portable and host-tested.
//!
//! A grant table is how a domain (the *granter*) lets another domain (the *mapper*) map or
//! copy one of its frames: the granter writes a [`GrantEntryV1`] (`flags`, `domid`,
//! `frame`) into its shared table, and the mapper names it by grant reference. This crate
//! holds the logic of both sides:
//!
//! - [`entry`]: the v1 entry's 32-bit `flags | domid << 16` header word, and
//!   [`EntryAccess`], the trait through which the hypervisor reads and compare-exchanges
//!   a granter's entries (guest memory: read every field once, bounded CAS retries).
//! - [`GrantTable`]: per-domain hypervisor state of a granter — the table's frames,
//!   `setup_table`/`query_size`/`set_version`/`get_version`, and the *active* table: per
//!   entry pin counts (host/device, read/write), the frame and the domain it is pinned for.
//!   While an entry is pinned the hypervisor keeps `GTF_reading` (and, for write pins,
//!   `GTF_writing`) set in the shared entry; it clears them when the last pin goes.
//! - [`MapTrack`]: per-domain hypervisor state of a mapper — its mappings by
//!   [`GrantHandle`].
//! - [`copy`]: `GNTTABOP_copy` validation (gref↔gref, gref↔gmfn), holding the pins only
//!   while the caller copies.
//! - [`alloc`]: the guest side — a grant-reference allocator (free list, batch claim and
//!   release; refs 0..8 reserved) and the granter's write/revoke protocol.
//!
//! Frame references are not this crate's: host mappings take theirs in the PV MMU (the
//! grant PTE holds them); device mappings and copies take theirs through [`FrameRefs`],
//! which the hypervisor implements over its frame table.
//!
//! Every operation reports a [`Gntst`] exactly as Xen would for the same request (see each
//! function). All guest-controlled values are checked; nothing here panics on guest input.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

extern crate alloc as alloc_crate;

pub mod alloc;
pub mod copy;
pub mod entry;
mod maptrack;
#[cfg(any(test, feature = "test-utils"))]
pub mod mock;
mod table;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use entry::{EntryAccess, GuestEntryAccess, Header};
pub use maptrack::{MapTrack, Mapping, DEFAULT_MAPTRACK_LIMIT};
pub use table::{GrantTable, Mapped, Pins, StillMapped, DEFAULT_MAX_FRAMES, PIN_LIMIT};
pub use xen_abi::grant_table::{Gntst, GrantEntryV1, GrantHandle};
pub use xen_abi::GrantRef;

use xen_abi::{DomId, Mfn};

/// General and writable-type references on frames, as the hypervisor's frame table
/// (Xen's `get_page`/`put_page`, `get_page_type(PGT_writable_page)`/`put_page_type`).
///
/// Used for device mappings (`GNTMAP_device_map`: a general reference, plus a writable
/// type reference unless read-only, held until the device mapping is unmapped) and for
/// the duration of a copy. Host mappings hold their references in the PTE instead.
pub trait FrameRefs {
    /// Takes a general reference on `mfn` if `owner` owns it; false otherwise (Xen's
    /// `get_paged_frame` for a PV domain: the frame number is an MFN).
    fn get_frame(&mut self, mfn: Mfn, owner: DomId) -> bool;
    /// Drops a reference taken with [`FrameRefs::get_frame`].
    fn put_frame(&mut self, mfn: Mfn);
    /// Whether [`FrameRefs::get_frame`] would succeed, for a reference that would be
    /// dropped again at once (a host-only map checks the granter owns the frame; the
    /// host mapping takes its own references). The default takes and drops one; an
    /// implementation that holds its frame table across both may just check.
    fn check_frame(&mut self, mfn: Mfn, owner: DomId) -> bool {
        if self.get_frame(mfn, owner) {
            self.put_frame(mfn);
            true
        } else {
            false
        }
    }
    /// Takes a writable type reference on `mfn` (the caller holds a general one); false
    /// if the frame cannot be writable (a page table, a descriptor page, ...).
    fn get_writable(&mut self, mfn: Mfn) -> bool;
    /// Drops a reference taken with [`FrameRefs::get_writable`].
    fn put_writable(&mut self, mfn: Mfn);
}

/// Which uses of a mapping an operation concerns (`GNTMAP_host_map`,
/// `GNTMAP_device_map`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapUse {
    /// The CPU mapping (`GNTMAP_host_map`).
    pub host: bool,
    /// The device mapping (`GNTMAP_device_map`).
    pub device: bool,
}

impl MapUse {
    /// Both uses.
    pub const ALL: MapUse = MapUse {
        host: true,
        device: true,
    };

    /// Whether neither use is set.
    pub fn is_empty(self) -> bool {
        !self.host && !self.device
    }
}
