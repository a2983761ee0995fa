//! Page-table entry bits and the per-level flag rules of Xen's PV MMU
//! (`xen/arch/x86/include/asm/page.h`, `mm.c` `*_DISALLOW_MASK`, `pv/mm.h`
//! `adjust_guest_l*e`).

/// Present.
pub const P: u64 = 1 << 0;
/// Writable.
pub const RW: u64 = 1 << 1;
/// User-accessible.
pub const USER: u64 = 1 << 2;
/// Write-through.
pub const PWT: u64 = 1 << 3;
/// Cache disable.
pub const PCD: u64 = 1 << 4;
/// Accessed.
pub const A: u64 = 1 << 5;
/// Dirty.
pub const D: u64 = 1 << 6;
/// PAT (in an L1 entry).
pub const PAT: u64 = 1 << 7;
/// Large page (in an L2/L3 entry): never allowed for PV guests.
pub const PSE: u64 = 1 << 7;
/// Global.
pub const G: u64 = 1 << 8;
/// Software-available bits 9-11.
pub const AVAIL: u64 = 0x7 << 9;
/// Software-available bits 52-62 (Xen's `_PAGE_AVAIL_HIGH`).
pub const AVAIL_HIGH: u64 = 0x7ff << 52;
/// Bit 52: Xen's `_PAGE_GUEST_KERNEL`, marks a guest-kernel page (rule 7).
pub const GUEST_KERNEL: u64 = 1 << 52;
/// Bit 62: Xen's `_PAGE_GNTTAB`, reserved for grant mappings in L1 entries.
pub const GNTTAB: u64 = 1 << 62;
/// No-execute.
pub const NX: u64 = 1 << 63;
/// Cache attribute bits of an L1 entry.
pub const CACHE_ATTRS: u64 = PAT | PCD | PWT;
/// Machine-address bits (Xen's `PADDR_MASK & PAGE_MASK`, 52-bit physical addresses).
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Flags a guest may set in any entry (Xen's complement of `base_disallow_mask`).
const BASE_ALLOWED: u64 = P | RW | USER | A | D | AVAIL | AVAIL_HIGH | NX;

/// Flags refused in an L1 entry (`L1_DISALLOW_MASK`): the base mask plus the grant
/// bit, minus Global; cache attributes are allowed only with `io_caps`
/// (`cache_flush_permitted`).
pub fn l1_disallow(io_caps: bool) -> u64 {
    let m = (!BASE_ALLOWED | GNTTAB) & !G & !ADDR_MASK;
    if io_caps {
        m & !CACHE_ATTRS
    } else {
        m
    }
}

/// Flags refused in L2, L3 and L4 entries (`L2/L4_DISALLOW_MASK`, 64-bit
/// `l3_disallow_mask`): among others PSE (superpages), PWT/PCD and Global.
pub const LN_DISALLOW: u64 = !BASE_ALLOWED & !ADDR_MASK;

/// Flags a guest may change in an L1 entry without re-validation
/// (`FASTPATH_FLAG_WHITELIST`).
const FASTPATH_WHITELIST: u64 = NX | AVAIL_HIGH | AVAIL | G | D | A | USER;

/// Whether `new` differs from `old` in the frame or in a flag that needs validation
/// (Xen's `l1e_has_changed(old, new, ~FASTPATH_FLAG_WHITELIST)`; the same mask is used
/// for L2-L4 because rxen, like Xen by default, allows linear page tables).
pub fn needs_revalidation(old: u64, new: u64) -> bool {
    (old ^ new) & !FASTPATH_WHITELIST != 0
}

/// Machine frame number an entry points to.
pub fn frame(e: u64) -> u64 {
    (e & ADDR_MASK) >> 12
}

/// Whether the entry is a present grant mapping (bit 62, `_PAGE_GNTTAB`).
pub fn is_grant_entry_bits(e: u64) -> bool {
    present(e) && e & GNTTAB != 0
}

/// Whether the entry is present.
pub fn present(e: u64) -> bool {
    e & P != 0
}

/// Rule 7 for L1 entries (`adjust_guest_l1e`): a kernel page (no User) gets User and
/// the guest-kernel bit; a user page gets User and Global.
pub fn adjust_l1(mut e: u64) -> u64 {
    if present(e) {
        if e & USER == 0 {
            e |= GUEST_KERNEL | USER;
        }
        if e & GUEST_KERNEL == 0 {
            e |= G | USER;
        }
    }
    e
}

/// Rule 7 for L2 and L3 entries: User.
pub fn adjust_l2_l3(e: u64) -> u64 {
    if present(e) {
        e | USER
    } else {
        e
    }
}

/// Rule 7 for L4 entries: User and Accessed.
pub fn adjust_l4(e: u64) -> u64 {
    if present(e) {
        e | USER | A
    } else {
        e
    }
}

/// Index of Xen's PAT entry selected by an L1 entry's cache bits, and whether that
/// entry is uncacheable (UC, UC- or WC in Xen's `XEN_MSR_PAT` = 0x050100070406).
fn pat_uncacheable(e: u64) -> bool {
    let idx = ((e & PAT) >> 5) | ((e & PCD) >> 3) | ((e & PWT) >> 3);
    // WB(0) WT(1) UC-(2) UC(3) WC(4) WP(5) UC(6) UC(7)
    !matches!(idx, 0 | 1 | 5)
}

/// Cache bits to flip so that an MMIO mapping is uncacheable (Xen forces potentially
/// cacheable MMIO mappings to UC).
pub fn mmio_cache_flip(e: u64) -> u64 {
    if pat_uncacheable(e) {
        0
    } else {
        (e & CACHE_ATTRS) ^ (PCD | PWT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_match_xen() {
        // Xen: base_disallow_mask as 24-bit flags is ~0x7ff0e67 ... expressed on a pte.
        assert_eq!(LN_DISALLOW & (PSE | PWT | PCD | G), PSE | PWT | PCD | G);
        assert_eq!(
            LN_DISALLOW & (P | RW | USER | A | D | NX | GNTTAB | AVAIL),
            0
        );
        assert_eq!(l1_disallow(false) & (G | GUEST_KERNEL | NX), 0);
        assert_eq!(
            l1_disallow(false) & (GNTTAB | PAT | PCD | PWT),
            GNTTAB | PAT | PCD | PWT
        );
        assert_eq!(l1_disallow(true) & CACHE_ATTRS, 0);
        assert_eq!(l1_disallow(true) & ADDR_MASK, 0);
    }

    #[test]
    fn adjust() {
        assert_eq!(adjust_l1(0x1003), 0x1003 | USER | GUEST_KERNEL);
        assert_eq!(adjust_l1(0x1007), 0x1007 | G);
        assert_eq!(adjust_l1(0x1002), 0x1002);
        assert_eq!(adjust_l4(0x1001), 0x1001 | USER | A);
        assert_eq!(mmio_cache_flip(P), PCD | PWT);
        assert_eq!(mmio_cache_flip(P | PCD | PWT), 0);
    }
}
