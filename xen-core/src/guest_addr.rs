//! Which virtual addresses belong to a PV guest: everything canonical outside the slots
//! Xen reserves for itself (L4 slots 256..=271, `HYPERVISOR_VIRT_START..END`). Hypercall
//! pointers and guest stacks are checked against this before the hypervisor touches them.

use xen_abi::xen::HYPERVISOR_VIRT_END;

/// Lowest non-canonical address of the lower half.
const LOWER_HALF_END: u64 = 0x0000_8000_0000_0000;

/// True if `va` is canonical (bits 63..48 copy bit 47).
pub fn is_canonical(va: u64) -> bool {
    ((va as i64) << 16 >> 16) as u64 == va
}

/// True if `[va, va + len)` lies entirely in guest-owned virtual address space. A range
/// whose end does not fit in 64 bits is refused, even one ending exactly at 2^64.
pub fn is_guest_range(va: u64, len: usize) -> bool {
    let Some(end) = va.checked_add(len as u64) else {
        return false;
    };
    if !is_canonical(va) {
        return false;
    }
    if end <= LOWER_HALF_END {
        return true;
    }
    // The upper half, above the hypervisor's slots.
    va >= HYPERVISOR_VIRT_END
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_abi::xen::HYPERVISOR_VIRT_START;

    #[test]
    fn lower_half_is_the_guests() {
        assert!(is_guest_range(0, 1));
        assert!(is_guest_range(0x1000, 4096));
        assert!(is_guest_range(LOWER_HALF_END - 8, 8));
        assert!(
            !is_guest_range(LOWER_HALF_END - 8, 9),
            "crosses into the non-canonical hole"
        );
    }

    #[test]
    fn hypervisor_slots_are_refused() {
        assert!(!is_guest_range(HYPERVISOR_VIRT_START, 1));
        assert!(!is_guest_range(0xffff_8300_0000_0000, 8), "direct map");
        assert!(
            !is_guest_range(0xffff_82d0_4000_0000, 8),
            "hypervisor image"
        );
        assert!(!is_guest_range(HYPERVISOR_VIRT_END - 1, 1));
        assert!(is_guest_range(HYPERVISOR_VIRT_END, 4096));
        assert!(
            is_guest_range(0xffff_ffff_8000_0000, 4096),
            "a Linux-style kernel image"
        );
    }

    #[test]
    fn non_canonical_and_wrapping_ranges_are_refused() {
        assert!(!is_guest_range(0x8000_0000_0000_0000, 1));
        assert!(!is_guest_range(LOWER_HALF_END, 0));
        assert!(!is_guest_range(u64::MAX, 2), "wraps around");
        assert!(
            !is_guest_range(u64::MAX - 7, 8),
            "ends exactly at 2^64: refused"
        );
        assert!(is_guest_range(u64::MAX - 7, 7));
        assert!(!is_canonical(0x0000_8000_0000_0000));
        assert!(is_canonical(0xffff_8000_0000_0000));
    }
}
