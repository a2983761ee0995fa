//! Segment descriptor checks for GDT/LDT pages of 64-bit PV guests (Xen's
//! `pv/descriptor-tables.c` `check_descriptor`).

/// Segment present.
const SEG_P: u32 = 1 << 15;
/// Descriptor privilege level.
const SEG_DPL: u32 = 3 << 13;
/// Code or data segment (not a system descriptor).
const SEG_S: u32 = 1 << 12;
/// Type field.
const SEG_TYPE: u32 = 0xf << 8;
/// 64-bit call gate type.
const TYPE_CALL_GATE: u32 = 0xc << 8;

/// First GDT entry reserved for the hypervisor (`FIRST_RESERVED_GDT_ENTRY`: page 14).
pub const FIRST_RESERVED_GDT_ENTRY: u32 = 14 * 512;
/// The hypervisor's flat 64-bit kernel code selector (`FLAT_KERNEL_CS64`).
const FLAT_KERNEL_CS: u32 = 0xe033;

/// Checks one 8-byte descriptor a 64-bit PV guest wants in its GDT or LDT and returns
/// the value to store, or `None` if it must be refused.
///
/// Not-present descriptors and the empty type 0 (the upper half of a 64-bit gate) are
/// kept as they are; code and data segments are allowed with DPL 0-2 raised to 3 (the
/// guest kernel runs in ring 3); the only system descriptor allowed is a call gate,
/// whose target selector must be a guest selector (GDT below the reserved area, LDT, or
/// the flat kernel CS) and whose DPL is forced to 0 (the original DPL moves into the
/// selector's RPL) so that using it faults and can be emulated.
pub fn check_descriptor(desc: u64) -> Option<u64> {
    let mut a = desc as u32;
    let mut b = (desc >> 32) as u32;
    if b & SEG_P == 0 {
        return Some(desc);
    }
    let dpl = ((b >> 13) & 3).max(3);
    b = (b & !SEG_DPL) | (dpl << 13);
    if b & SEG_S == 0 {
        if b & SEG_TYPE == 0 {
            return Some(desc);
        }
        if b & SEG_TYPE != TYPE_CALL_GATE {
            return None;
        }
        let cs = a >> 16;
        let gate_ok = (cs >> 3) < FIRST_RESERVED_GDT_ENTRY || cs == FLAT_KERNEL_CS || cs & 4 != 0;
        if !gate_ok {
            return None;
        }
        b &= !SEG_DPL;
        let cs = (cs & !3) | dpl;
        a = (a & 0xffff) | (cs << 16);
        if b & 0xff != 0 {
            return None;
        }
    }
    Some(u64::from(a) | (u64::from(b) << 32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_and_data() {
        // Flat 64-bit code, DPL 0 -> DPL 3.
        assert_eq!(
            check_descriptor(0x00af_9a00_0000_ffff),
            Some(0x00af_fa00_0000_ffff)
        );
        // Data DPL 3 unchanged.
        assert_eq!(
            check_descriptor(0x00cf_f200_0000_ffff),
            Some(0x00cf_f200_0000_ffff)
        );
        // Not present: anything goes.
        assert_eq!(
            check_descriptor(0x0000_0f00_1234_5678),
            Some(0x0000_0f00_1234_5678)
        );
        assert_eq!(check_descriptor(0), Some(0));
    }

    #[test]
    fn system_descriptors() {
        // Present empty type (upper half of a gate) kept.
        assert_eq!(
            check_descriptor(0x0000_8000_0000_0000),
            Some(0x0000_8000_0000_0000)
        );
        // 64-bit TSS (type 9) refused; LDT (type 2) refused; interrupt gate refused.
        assert_eq!(check_descriptor(0x0000_8900_0000_0067), None);
        assert_eq!(check_descriptor(0x0000_8200_0000_0067), None);
        assert_eq!(check_descriptor(0x0000_8e00_0010_0000), None);
        // Call gate to a guest selector 0x10, DPL 3: DPL forced to 0, RPL 3.
        assert_eq!(
            check_descriptor(0x0000_ec00_0010_1234),
            Some(0x0000_8c00_0013_1234)
        );
        // Call gate to the hypervisor's reserved GDT area refused, flat kernel CS allowed.
        assert_eq!(check_descriptor(0x0000_ec00_e008_1234), None);
        assert_eq!(
            check_descriptor(0x0000_ec00_e033_1234),
            Some(0x0000_8c00_e033_1234)
        );
        // Call gate with a parameter count (reserved for 64-bit) refused.
        assert_eq!(check_descriptor(0x0000_ec01_0010_1234), None);
    }
}
