//! The v1 grant entry as the hypervisor sees it (`grant_entry_v1`, Xen's
//! `union grant_combo`): the `flags` and `domid` fields form one naturally aligned 32-bit
//! word (flags in the low half on little-endian x86), which is read and compare-exchanged
//! as a unit so that a concurrent change of `domid` is detected together with `flags`.

use xen_abi::grant_table::{
    GRANT_ENTRIES_V1_PER_FRAME, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_SUB_PAGE,
    GTF_TYPE_MASK, GTF_WRITING,
};
use xen_abi::{DomId, GrantRef};

pub use xen_abi::grant_table::GrantEntryV1;

/// Entries per grant-table frame.
pub const ENTRIES_PER_FRAME: u32 = GRANT_ENTRIES_V1_PER_FRAME;

/// The `flags | domid << 16` word of a v1 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header(pub u32);

impl Header {
    /// Builds the word from its fields.
    pub const fn new(flags: u16, domid: DomId) -> Header {
        Header(flags as u32 | (domid.raw() as u32) << 16)
    }

    /// The `flags` field.
    pub const fn flags(self) -> u16 {
        self.0 as u16
    }

    /// The `domid` field.
    pub const fn domid(self) -> DomId {
        DomId::new((self.0 >> 16) as u16)
    }

    /// The word with `bits` set in `flags`.
    pub const fn with_flags(self, bits: u16) -> Header {
        Header(self.0 | bits as u32)
    }

    /// Whether the entry grants access to `to` for a map (`map` true: `GTF_sub_page` is
    /// refused too) or a copy: type `GTF_permit_access` and `domid == to` (Xen's check in
    /// `_set_status_v1`).
    pub fn permits(self, to: DomId, map: bool) -> bool {
        let mask = if map {
            GTF_TYPE_MASK | GTF_SUB_PAGE
        } else {
            GTF_TYPE_MASK
        };
        self.flags() & mask == GTF_PERMIT_ACCESS && self.domid() == to
    }

    /// Whether the granter allows only read access (`GTF_readonly`).
    pub fn readonly(self) -> bool {
        self.flags() & GTF_READONLY != 0
    }

    /// Whether the hypervisor holds the entry in use (`GTF_reading` or `GTF_writing`):
    /// the granter must not revoke or reuse it.
    pub fn in_use(self) -> bool {
        self.flags() & (GTF_READING | GTF_WRITING) != 0
    }
}

/// The byte image of an entry, as the guest lays it out in its table.
pub fn entry(flags: u16, domid: DomId, frame: u32) -> GrantEntryV1 {
    GrantEntryV1 {
        flags,
        domid: domid.raw(),
        frame,
    }
}

/// The hypervisor's access to one domain's shared v1 entries (guest-writable memory).
///
/// `gref` is always below the table's current size (the [`crate::GrantTable`] checks it
/// first). Implementations read and write with atomic accesses and never hand out
/// references into the shared frames: the guest may change any field at any time.
pub trait EntryAccess {
    /// One atomic 32-bit read of entry `gref`'s `flags | domid << 16` word.
    fn read_header(&mut self, gref: GrantRef) -> Header;
    /// One read of entry `gref`'s `frame` field.
    fn read_frame(&mut self, gref: GrantRef) -> u32;
    /// Atomically replaces the header word with `new` if it still holds `old`; otherwise
    /// returns the word found.
    fn cmpxchg_header(&mut self, gref: GrantRef, old: Header, new: Header) -> Result<(), Header>;
    /// Atomically clears `bits` in the `flags` field (a locked `and`; Xen's
    /// `gnttab_clear_flags`), leaving every other bit as the guest has it.
    fn clear_flags(&mut self, gref: GrantRef, bits: u16);
}

/// The guest's access to its own entries, for the granter's side of the protocol
/// ([`crate::alloc::grant_access`], [`crate::alloc::end_access`]).
pub trait GuestEntryAccess: EntryAccess {
    /// Writes `domid` and `frame` of entry `gref` (not `flags`).
    fn write_domid_frame(&mut self, gref: GrantRef, domid: DomId, frame: u32);
    /// Writes `flags` after a write barrier, so that the hypervisor never sees the new
    /// flags with old `domid`/`frame`.
    fn write_flags_release(&mut self, gref: GrantRef, flags: u16);
}
