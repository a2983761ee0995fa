//! The guest side of grant tables, used by frontends: a grant-reference allocator (Linux's
//! `gnttab_list` free list, `gnttab_alloc_grant_references`/`gnttab_free_grant_references`)
//! and the granter's protocol on its own entries (`gnttab_grant_foreign_access_ref`,
//! `gnttab_end_foreign_access_ref`).
//!
//! References 0..8 (`GNTTAB_NR_RESERVED_ENTRIES`: console, xenstore) are never handed
//! out.

use crate::entry::{GuestEntryAccess, ENTRIES_PER_FRAME};
use alloc_crate::vec::Vec;
use xen_abi::grant_table::{GNTTAB_NR_RESERVED_ENTRIES, GTF_PERMIT_ACCESS, GTF_READONLY};
use xen_abi::{DomId, GrantRef};

/// Allocator errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// Not enough free references (grow the table with `setup_table`, or wait).
    Exhausted,
    /// A reference released that is reserved, beyond the table, or already free.
    NotAllocated(GrantRef),
    /// The table cannot grow that far.
    TooLarge,
}

/// Sentinel: end of the free list.
const END: u32 = u32::MAX;

/// A free list of grant references over a table of `nr_frames` frames.
#[derive(Clone, Debug)]
pub struct GrantAllocator {
    /// `next[r]`: the free reference after `r` (valid while `r` is free).
    next: Vec<u32>,
    /// Whether `r` is handed out (or reserved).
    used: Vec<bool>,
    head: u32,
    free: u32,
}

impl GrantAllocator {
    /// An allocator over `nr_frames` table frames (refs `8..nr_frames * 512` free).
    pub fn new(nr_frames: u32) -> Result<GrantAllocator, AllocError> {
        let mut a = GrantAllocator {
            next: Vec::new(),
            used: Vec::new(),
            head: END,
            free: 0,
        };
        a.grow(nr_frames)?;
        Ok(a)
    }

    /// Number of references the table has.
    pub fn capacity(&self) -> u32 {
        u32::try_from(self.used.len()).unwrap_or(u32::MAX)
    }

    /// Number of free references.
    pub fn free_count(&self) -> u32 {
        self.free
    }

    /// Adds the references of a table grown to `nr_frames` frames (after `setup_table`).
    pub fn grow(&mut self, nr_frames: u32) -> Result<(), AllocError> {
        let total = nr_frames
            .checked_mul(ENTRIES_PER_FRAME)
            .filter(|&t| t < END)
            .ok_or(AllocError::TooLarge)?;
        let old = self.capacity();
        if total <= old {
            return Ok(());
        }
        self.next.resize(total as usize, END);
        self.used.resize(total as usize, true);
        // Push new refs in descending order so that the lowest comes out first.
        for r in (old.max(GNTTAB_NR_RESERVED_ENTRIES)..total).rev() {
            self.push(r);
        }
        Ok(())
    }

    fn push(&mut self, r: u32) {
        if let (Some(n), Some(u)) = (self.next.get_mut(r as usize), self.used.get_mut(r as usize)) {
            *n = self.head;
            *u = false;
            self.head = r;
            self.free = self.free.saturating_add(1);
        }
    }

    /// Claims one reference.
    pub fn claim(&mut self) -> Result<GrantRef, AllocError> {
        let r = self.head;
        let (Some(&n), Some(u)) = (self.next.get(r as usize), self.used.get_mut(r as usize)) else {
            return Err(AllocError::Exhausted);
        };
        *u = true;
        self.head = n;
        self.free = self.free.saturating_sub(1);
        Ok(GrantRef::new(r))
    }

    /// Claims `n` references, all or none.
    pub fn claim_batch(&mut self, n: u32) -> Result<Vec<GrantRef>, AllocError> {
        if n > self.free {
            return Err(AllocError::Exhausted);
        }
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            out.push(self.claim()?);
        }
        Ok(out)
    }

    fn check(&self, r: GrantRef) -> Result<(), AllocError> {
        let ok = r.raw() >= GNTTAB_NR_RESERVED_ENTRIES
            && self.used.get(r.raw() as usize).copied().unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(AllocError::NotAllocated(r))
        }
    }

    /// Returns one reference. The caller has ended the grant ([`end_access`] succeeded):
    /// a reference whose entry the hypervisor still holds must not be reused.
    pub fn release(&mut self, r: GrantRef) -> Result<(), AllocError> {
        self.check(r)?;
        self.push(r.raw());
        Ok(())
    }

    /// Returns several references, all or none (each must be claimed, and listed once).
    pub fn release_batch(&mut self, refs: &[GrantRef]) -> Result<(), AllocError> {
        for (i, &r) in refs.iter().enumerate() {
            self.check(r)?;
            if refs.get(..i).is_some_and(|s| s.contains(&r)) {
                return Err(AllocError::NotAllocated(r));
            }
        }
        for &r in refs {
            self.push(r.raw());
        }
        Ok(())
    }
}

/// Grants `domid` access to `frame` (an MFN for a PV guest) through entry `gref`:
/// `domid` and `frame` first, then, after a write barrier, the flags
/// (`GTF_permit_access`, `GTF_readonly` if `readonly`).
pub fn grant_access<G: GuestEntryAccess>(
    entries: &mut G,
    gref: GrantRef,
    domid: DomId,
    frame: u32,
    readonly: bool,
) {
    entries.write_domid_frame(gref, domid, frame);
    let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
    entries.write_flags_release(gref, flags);
}

/// The grant is still mapped or being copied: the entry cannot be revoked yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StillInUse;

/// Attempts of [`end_access`]'s compare-exchange while the hypervisor changes the entry.
const END_ACCESS_ATTEMPTS: u32 = 64;

/// Revokes the grant in `gref` (Linux's `gnttab_end_foreign_access_ref` for v1): clears
/// the flags to 0 with a compare-exchange, only if neither `GTF_reading` nor
/// `GTF_writing` is set. `Err(StillInUse)` while the hypervisor holds the entry: the
/// caller must keep the page and the reference and retry later (or leak them).
pub fn end_access<G: GuestEntryAccess>(entries: &mut G, gref: GrantRef) -> Result<(), StillInUse> {
    let mut cur = entries.read_header(gref);
    for _ in 0..END_ACCESS_ATTEMPTS {
        if cur.in_use() {
            return Err(StillInUse);
        }
        let new = crate::Header::new(0, cur.domid());
        match entries.cmpxchg_header(gref, cur, new) {
            Ok(()) => return Ok(()),
            Err(found) => cur = found,
        }
    }
    Err(StillInUse)
}
