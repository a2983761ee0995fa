//! ELF note types of a PV kernel image (`xen/include/public/elfnote.h`), found in notes
//! whose name is `"Xen"`.

/// Name of the ELF notes (`"Xen"`, NUL-terminated in the note).
pub const XEN_ELFNOTE_NAME: &[u8] = b"Xen";

/// Obsolete: NUL-terminated string of `__xen_guest` key/value pairs.
pub const XEN_ELFNOTE_INFO: u32 = 0;
/// Virtual address of the PV entry point.
pub const XEN_ELFNOTE_ENTRY: u32 = 1;
/// Virtual address of the hypercall page the hypervisor fills in.
pub const XEN_ELFNOTE_HYPERCALL_PAGE: u32 = 2;
/// Virtual base address of the kernel image.
pub const XEN_ELFNOTE_VIRT_BASE: u32 = 3;
/// Offset between virtual and "physical" load addresses.
pub const XEN_ELFNOTE_PADDR_OFFSET: u32 = 4;
/// Xen version the image is built for (string).
pub const XEN_ELFNOTE_XEN_VERSION: u32 = 5;
/// Guest OS name (string).
pub const XEN_ELFNOTE_GUEST_OS: u32 = 6;
/// Guest version (string).
pub const XEN_ELFNOTE_GUEST_VERSION: u32 = 7;
/// Loader type (string, `"generic"`).
pub const XEN_ELFNOTE_LOADER: u32 = 8;
/// PAE mode (string; x86_32).
pub const XEN_ELFNOTE_PAE_MODE: u32 = 9;
/// `|`-separated feature names, `!` = required (see [`crate::features::feature_from_name`]).
pub const XEN_ELFNOTE_FEATURES: u32 = 10;
/// Request to load the symbol table (string `"yes"`).
pub const XEN_ELFNOTE_BSD_SYMTAB: u32 = 11;
/// Lowest hypervisor virtual address (32-bit guests).
pub const XEN_ELFNOTE_HV_START_LOW: u32 = 12;
/// L1 PTE mask/value pair identifying valid MFN mappings.
pub const XEN_ELFNOTE_L1_MFN_VALID: u32 = 13;
/// The guest supports suspend cancellation.
pub const XEN_ELFNOTE_SUSPEND_CANCEL: u32 = 14;
/// Virtual address where the p2m list should be mapped separately.
pub const XEN_ELFNOTE_INIT_P2M: u32 = 15;
/// The guest accepts `mod_start` as a PFN (`SIF_MOD_START_PFN`).
pub const XEN_ELFNOTE_MOD_START_PFN: u32 = 16;
/// Bitmap of supported features (32-bit value, one submap).
pub const XEN_ELFNOTE_SUPPORTED_FEATURES: u32 = 17;
/// 32-bit physical entry point (PVH).
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// PVH relocation information.
pub const XEN_ELFNOTE_PHYS32_RELOC: u32 = 19;
