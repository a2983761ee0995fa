//! Feature flags (`xen/include/public/features.h`), reported by `XENVER_get_features` and
//! named in a kernel's `FEATURES` ELF note.

/// The guest may write its page tables directly (writable page tables assist).
pub const XENFEAT_WRITABLE_PAGE_TABLES: u32 = 0;
/// The guest may write its descriptor tables directly.
pub const XENFEAT_WRITABLE_DESCRIPTOR_TABLES: u32 = 1;
/// The guest's physical address space is translated by the hypervisor.
pub const XENFEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 2;
/// The guest kernel runs in ring 0.
pub const XENFEAT_SUPERVISOR_MODE_KERNEL: u32 = 3;
/// The guest can place PAE page directories above 4GB (x86_32).
pub const XENFEAT_PAE_PGDIR_ABOVE_4GB: u32 = 4;
/// `MMU_PT_UPDATE_PRESERVE_AD` is supported.
pub const XENFEAT_MMU_PT_UPDATE_PRESERVE_AD: u32 = 5;
/// Highmem assist (x86_32).
pub const XENFEAT_HIGHMEM_ASSIST: u32 = 6;
/// Grant mappings may use the PTE's available bits.
pub const XENFEAT_GNTTAB_MAP_AVAIL_BITS: u32 = 7;
/// HVM: event delivery through a callback vector.
pub const XENFEAT_HVM_CALLBACK_VECTOR: u32 = 8;
/// HVM: safe to use the PV clock.
pub const XENFEAT_HVM_SAFE_PVCLOCK: u32 = 9;
/// HVM: PIRQs supported.
pub const XENFEAT_HVM_PIRQS: u32 = 10;
/// The guest is (or may run as) dom0.
pub const XENFEAT_DOM0: u32 = 11;
/// Grant maps return identity (bus = machine) addresses (ARM).
pub const XENFEAT_GRANT_MAP_IDENTITY: u32 = 12;
/// `XENMEM_get_vnumainfo` is supported.
pub const XENFEAT_MEMORY_OP_VNODE_SUPPORTED: u32 = 13;
/// ARM SMCCC supported.
pub const XENFEAT_ARM_SMCCC_SUPPORTED: u32 = 14;
/// Linux may use the RSDP without restriction.
pub const XENFEAT_LINUX_RSDP_UNRESTRICTED: u32 = 15;
/// The domain is not direct-mapped (Xen's value 16).
pub const XENFEAT_NOT_DIRECT_MAPPED: u32 = 16;
/// The domain is direct-mapped (Xen's value 17).
pub const XENFEAT_DIRECT_MAPPED: u32 = 17;
/// Runstate area may be registered by physical address.
pub const XENFEAT_RUNSTATE_PHYS_AREA: u32 = 18;
/// vCPU time area may be registered by physical address.
pub const XENFEAT_VCPU_TIME_PHYS_AREA: u32 = 19;
/// Device-model MSI-X writes are all forwarded.
pub const XENFEAT_DM_MSIX_ALL_WRITES: u32 = 20;
/// Number of 32-bit feature submaps (`XENFEAT_NR_SUBMAPS`).
pub const XENFEAT_NR_SUBMAPS: u32 = 1;

/// Maps a feature name as written in a kernel's `FEATURES` ELF note (without the `!`
/// "required" prefix) to its `XENFEAT_*` number.
///
/// The accepted names are exactly those of Xen's ELF loader (`elf_xen_feature_names` in
/// `xen/common/libelf/libelf-dominfo.c`); Xen ignores other names, so this returns `None`
/// for them.
pub fn feature_from_name(name: &str) -> Option<u32> {
    Some(match name {
        "writable_page_tables" => XENFEAT_WRITABLE_PAGE_TABLES,
        "writable_descriptor_tables" => XENFEAT_WRITABLE_DESCRIPTOR_TABLES,
        "auto_translated_physmap" => XENFEAT_AUTO_TRANSLATED_PHYSMAP,
        "supervisor_mode_kernel" => XENFEAT_SUPERVISOR_MODE_KERNEL,
        "pae_pgdir_above_4gb" => XENFEAT_PAE_PGDIR_ABOVE_4GB,
        "hvm_callback_vector" => XENFEAT_HVM_CALLBACK_VECTOR,
        "dom0" => XENFEAT_DOM0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(feature_from_name("writable_page_tables"), Some(0));
        assert_eq!(feature_from_name("writable_descriptor_tables"), Some(1));
        assert_eq!(feature_from_name("auto_translated_physmap"), Some(2));
        assert_eq!(feature_from_name("supervisor_mode_kernel"), Some(3));
        assert_eq!(feature_from_name("pae_pgdir_above_4gb"), Some(4));
        assert_eq!(feature_from_name("hvm_callback_vector"), Some(8));
        assert_eq!(feature_from_name("dom0"), Some(11));
        assert_eq!(feature_from_name("!dom0"), None);
        assert_eq!(feature_from_name(""), None);
        assert_eq!(feature_from_name("Dom0"), None);
    }
}
