//! Mocks for host tests (feature `test-utils`): shared entries in a vector, with an
//! optional hostile guest that rewrites entries between the hypervisor's read and its
//! compare-exchange, and a frame table with general and writable-type counts.
#![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use crate::copy::GrantTables;
use crate::entry::{EntryAccess, GuestEntryAccess, Header};
use crate::{FrameRefs, GrantTable};
use alloc_crate::boxed::Box;
use alloc_crate::collections::BTreeMap;
use alloc_crate::vec::Vec;
use xen_abi::grant_table::GrantEntryV1;
use xen_abi::{DomId, GrantRef, Mfn};

/// A guest that may change entry `gref` (header word passed in, returned) just before
/// the hypervisor's compare-exchange.
pub type Meddler = Box<dyn FnMut(GrantRef, Header) -> Header>;

/// Shared entries of one domain.
#[derive(Default)]
pub struct MockEntries {
    /// The entries.
    pub entries: Vec<GrantEntryV1>,
    /// The hostile guest, if any.
    pub meddler: Option<Meddler>,
    /// Compare-exchanges attempted.
    pub cas_count: u64,
}

impl core::fmt::Debug for MockEntries {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MockEntries")
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl MockEntries {
    /// `n` zeroed entries.
    pub fn new(n: usize) -> MockEntries {
        MockEntries {
            entries: alloc_crate::vec![GrantEntryV1::default(); n],
            meddler: None,
            cas_count: 0,
        }
    }

    /// Entry `gref` (panics if out of range: tests only).
    pub fn get(&self, gref: u32) -> GrantEntryV1 {
        self.entries[gref as usize]
    }

    /// Sets entry `gref`.
    pub fn set(&mut self, gref: u32, flags: u16, domid: DomId, frame: u32) {
        self.entries[gref as usize] = crate::entry::entry(flags, domid, frame);
    }

    fn header(&self, gref: GrantRef) -> Header {
        let e = self.entries[gref.raw() as usize];
        Header::new(e.flags, DomId::new(e.domid))
    }

    fn set_header(&mut self, gref: GrantRef, h: Header) {
        let e = &mut self.entries[gref.raw() as usize];
        e.flags = h.flags();
        e.domid = h.domid().raw();
    }
}

impl EntryAccess for MockEntries {
    fn read_header(&mut self, gref: GrantRef) -> Header {
        self.header(gref)
    }
    fn read_frame(&mut self, gref: GrantRef) -> u32 {
        self.entries[gref.raw() as usize].frame
    }
    fn cmpxchg_header(&mut self, gref: GrantRef, old: Header, new: Header) -> Result<(), Header> {
        self.cas_count += 1;
        let cur = self.header(gref);
        if let Some(m) = self.meddler.as_mut() {
            let h = m(gref, cur);
            self.set_header(gref, h);
        }
        let cur = self.header(gref);
        if cur == old {
            self.set_header(gref, new);
            Ok(())
        } else {
            Err(cur)
        }
    }
    fn clear_flags(&mut self, gref: GrantRef, bits: u16) {
        self.entries[gref.raw() as usize].flags &= !bits;
    }
}

impl GuestEntryAccess for MockEntries {
    fn write_domid_frame(&mut self, gref: GrantRef, domid: DomId, frame: u32) {
        let e = &mut self.entries[gref.raw() as usize];
        e.domid = domid.raw();
        e.frame = frame;
    }
    fn write_flags_release(&mut self, gref: GrantRef, flags: u16) {
        self.entries[gref.raw() as usize].flags = flags;
    }
}

/// Bookkeeping of one mock frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MockFrame {
    /// Owner.
    pub owner: Option<DomId>,
    /// General references taken through [`FrameRefs`].
    pub count: u32,
    /// Writable type references taken through [`FrameRefs`].
    pub writable: u32,
    /// The frame is a page table (cannot become writable).
    pub page_table: bool,
}

/// A frame table for [`FrameRefs`].
#[derive(Clone, Debug, Default)]
pub struct MockRefs {
    /// Frames by number.
    pub frames: BTreeMap<u64, MockFrame>,
    /// References dropped that were not held.
    pub bugs: u64,
}

impl MockRefs {
    /// Gives `mfn` to `dom`.
    pub fn own(&mut self, mfn: u64, dom: DomId) {
        self.frames.entry(mfn).or_default().owner = Some(dom);
    }

    /// Whether no reference is held on any frame.
    pub fn idle(&self) -> bool {
        self.frames
            .values()
            .all(|f| f.count == 0 && f.writable == 0)
    }
}

impl FrameRefs for MockRefs {
    fn get_frame(&mut self, mfn: Mfn, owner: DomId) -> bool {
        match self.frames.get_mut(&mfn.raw()) {
            Some(f) if f.owner == Some(owner) => {
                f.count += 1;
                true
            }
            _ => false,
        }
    }
    fn put_frame(&mut self, mfn: Mfn) {
        match self.frames.get_mut(&mfn.raw()) {
            Some(f) if f.count > 0 => f.count -= 1,
            _ => self.bugs += 1,
        }
    }
    fn get_writable(&mut self, mfn: Mfn) -> bool {
        match self.frames.get_mut(&mfn.raw()) {
            Some(f) if f.count > 0 && !f.page_table => {
                f.writable += 1;
                true
            }
            _ => false,
        }
    }
    fn put_writable(&mut self, mfn: Mfn) {
        match self.frames.get_mut(&mfn.raw()) {
            Some(f) if f.writable > 0 => f.writable -= 1,
            _ => self.bugs += 1,
        }
    }
}

/// Grant tables and entries of several domains, for copies.
#[derive(Debug, Default)]
pub struct MockTables {
    /// Per domain.
    pub doms: BTreeMap<u16, (GrantTable, MockEntries)>,
}

impl MockTables {
    /// Adds `dom` with a one-frame table.
    pub fn add(&mut self, dom: DomId) {
        let mut t = GrantTable::new(crate::DEFAULT_MAX_FRAMES);
        let mut next = 0x10_0000u64;
        let _ = t.setup_table(1, || {
            next += 1;
            Some(Mfn::new(next))
        });
        let n = t.nr_entries() as usize;
        self.doms.insert(dom.raw(), (t, MockEntries::new(n)));
    }

    /// Entries of `dom`.
    pub fn entries(&mut self, dom: DomId) -> &mut MockEntries {
        &mut self.doms.get_mut(&dom.raw()).expect("domain").1
    }

    /// Table of `dom`.
    pub fn table(&mut self, dom: DomId) -> &mut GrantTable {
        &mut self.doms.get_mut(&dom.raw()).expect("domain").0
    }
}

impl GrantTables for MockTables {
    type Entries = MockEntries;
    fn table(&mut self, dom: DomId) -> Option<(&mut GrantTable, &mut MockEntries)> {
        self.doms.get_mut(&dom.raw()).map(|(t, e)| (t, e))
    }
}
