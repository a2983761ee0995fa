//! `xen_version` hypercall (`xen/include/public/version.h`). Without an argument buffer
//! `XENVER_version` returns `major << 16 | minor`; the other commands fill the buffer types
//! below. Feature flags (`features.h`) live in [`crate::features`] and are re-exported here.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use crate::features::*;

/// Returns `major << 16 | minor` (no argument).
pub const XENVER_VERSION: u32 = 0;
/// Fills a [`XenExtraversion`].
pub const XENVER_EXTRAVERSION: u32 = 1;
/// Fills a [`XenCompileInfo`].
pub const XENVER_COMPILE_INFO: u32 = 2;
/// Fills a [`XenCapabilitiesInfo`].
pub const XENVER_CAPABILITIES: u32 = 3;
/// Fills a [`XenChangesetInfo`].
pub const XENVER_CHANGESET: u32 = 4;
/// Fills a [`XenPlatformParameters`].
pub const XENVER_PLATFORM_PARAMETERS: u32 = 5;
/// Fills a [`XenFeatureInfo`] (guest sets `submap_idx`).
pub const XENVER_GET_FEATURES: u32 = 6;
/// Returns the page size (no argument).
pub const XENVER_PAGESIZE: u32 = 7;
/// Fills a [`XenDomainHandle`].
pub const XENVER_GUEST_HANDLE: u32 = 8;
/// Fills a [`XenCommandline`] (privileged).
pub const XENVER_COMMANDLINE: u32 = 9;
/// Fills a build-id buffer (privileged).
pub const XENVER_BUILD_ID: u32 = 10;

/// `xen_extraversion_t`: NUL-terminated extra version string, e.g. `".0-rxen"`.
#[doc(alias = "xen_extraversion_t")]
pub type XenExtraversion = [u8; 16];
/// `xen_capabilities_info_t`: space-separated capabilities, e.g. `"xen-3.0-x86_64"`.
#[doc(alias = "xen_capabilities_info_t")]
pub type XenCapabilitiesInfo = [u8; 1024];
/// `xen_changeset_info_t`: NUL-terminated source changeset string.
#[doc(alias = "xen_changeset_info_t")]
pub type XenChangesetInfo = [u8; 64];
/// `xen_domain_handle_t`: the domain's UUID.
#[doc(alias = "xen_domain_handle_t")]
pub type XenDomainHandle = [u8; 16];
/// `xen_commandline_t`: the hypervisor command line.
#[doc(alias = "xen_commandline_t")]
pub type XenCommandline = [u8; 1024];

/// `struct xen_compile_info` (144 bytes): NUL-terminated build strings (hypervisor writes).
#[doc(alias = "xen_compile_info")]
#[doc(alias = "xen_compile_info_t")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XenCompileInfo {
    /// Compiler used.
    pub compiler: [u8; 64],
    /// User who built it.
    pub compile_by: [u8; 16],
    /// Build domain.
    pub compile_domain: [u8; 32],
    /// Build date.
    pub compile_date: [u8; 32],
}
assert_layout!(XenCompileInfo, 144, {
    compiler: 0,
    compile_by: 64,
    compile_domain: 80,
    compile_date: 112,
});
zeroed_default!(XenCompileInfo);

/// `struct xen_platform_parameters` (8 bytes, hypervisor writes).
#[doc(alias = "xen_platform_parameters")]
#[doc(alias = "xen_platform_parameters_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenPlatformParameters {
    /// Start of the hypervisor's virtual range (`HYPERVISOR_VIRT_START`).
    pub virt_start: u64,
}
assert_layout!(XenPlatformParameters, 8, { virt_start: 0 });

/// `struct xen_feature_info` (8 bytes).
#[doc(alias = "xen_feature_info")]
#[doc(alias = "xen_feature_info_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenFeatureInfo {
    /// IN (guest writes): which 32-bit submap.
    pub submap_idx: u32,
    /// OUT (hypervisor writes): bit `i` = feature `32 * submap_idx + i` present.
    pub submap: u32,
}
assert_layout!(XenFeatureInfo, 8, { submap_idx: 0, submap: 4 });
