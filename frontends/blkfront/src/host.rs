//! What the frontend needs from its kernel: granting frames to the backend (the granter's
//! half of Xen's grant tables, `gnttab_grant_foreign_access` /
//! `gnttab_end_foreign_access_ref`), pages of memory it can hand out and copy through,
//! and a way to signal the device's event channel.

use core::fmt::Debug;

use xen_abi::{DomId, GrantRef, Mfn};

/// Why a frame could not be granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// No free grant reference.
    Exhausted,
    /// The frame cannot be granted (e.g. its number does not fit a v1 entry).
    BadFrame,
}

/// The grant is still mapped (or being copied) by the backend: the entry has
/// `GTF_reading`/`GTF_writing` set and cannot be revoked yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StillInUse;

/// The granter's side of grant tables, v1.
pub trait GrantAccess {
    /// Claims a reference and grants `domid` access to `frame` through it (`domid` and
    /// `frame` written first, then `GTF_permit_access` [| `GTF_readonly`] after a write
    /// barrier).
    fn grant(&mut self, domid: DomId, frame: Mfn, readonly: bool) -> Result<GrantRef, GrantError>;
    /// Revokes `gref` (clears its flags with a compare-exchange unless the hypervisor holds
    /// it) and, on success, releases the reference for reuse. On `Err(StillInUse)` the
    /// reference and the frame must stay untouched.
    fn end_access(&mut self, gref: GrantRef) -> Result<(), StillInUse>;
}

/// Pages of guest memory: the frontend allocates some for its own use (persistent-grant
/// pool, indirect segment pages) and copies data in and out of pages (the caller's and
/// its own).
pub trait PageMemory {
    /// A 4 KiB page the implementation knows how to reach (an address, an index ...).
    type Page: Copy + Eq + Debug;
    /// A fresh page, or `None` when memory is exhausted.
    fn alloc_page(&mut self) -> Option<Self::Page>;
    /// Returns a page from [`alloc_page`](Self::alloc_page) (never granted any more).
    fn free_page(&mut self, page: Self::Page);
    /// The machine frame of `page` (what a PV guest grants).
    fn frame(&self, page: Self::Page) -> Mfn;
    /// Copies `dst.len()` bytes at `offset` of `page` out (`offset + len <= 4096`).
    fn read(&mut self, page: Self::Page, offset: usize, dst: &mut [u8]);
    /// Copies `src` into `page` at `offset` (`offset + len <= 4096`).
    fn write(&mut self, page: Self::Page, offset: usize, src: &[u8]);
}

/// Signalling the backend.
pub trait Notify {
    /// Sends an event on the device's event channel.
    fn notify(&mut self);
}

/// Everything [`crate::BlkFront`] needs from its kernel, in one bound.
pub trait Host: GrantAccess + PageMemory + Notify {}
impl<T: GrantAccess + PageMemory + Notify> Host for T {}
