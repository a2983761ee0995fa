//! Xen's public pv64 guest interface (`xen/include/public/*.h`) as Rust types.
//!
//! rxen speaks Xen's ABI exactly, so every number and every structure layout in this crate
//! is Xen's own (x86_64, 64-bit PV guest view). Each module is named after the Xen public
//! header it mirrors; structures carry `#[doc(alias)]` with their C name and are checked at
//! compile time (`size_of` and `offset_of!` of every field) against the values the C headers
//! produce, so a layout mistake is a build error rather than a corrupted guest.
//!
//! The only exception is [`sysctl`], which keeps Xen's command numbers but uses rxen's own,
//! much smaller argument layout (rxen's dom0 tools are rxen's own).
//!
//! All structures derive zerocopy's `FromBytes`/`IntoBytes`, so hypervisor code can copy them
//! from and to guest memory without `unsafe`; padding is spelled out as explicit fields.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Compile-time check of a structure's size and of the offset of each listed field.
///
/// `assert_layout!(Type, size, { field: offset, ... })` expands to a `const` assertion, so a
/// mismatch against Xen's layout fails the build.
macro_rules! assert_layout {
    ($t:ty, $size:expr, { $($field:ident : $off:expr),* $(,)? }) => {
        const _: () = {
            assert!(core::mem::size_of::<$t>() == $size);
            $( assert!(core::mem::offset_of!($t, $field) == $off); )*
        };
    };
}

/// Implements `Default` (all zeroes) and an inherent `new_zeroed()` for structures whose
/// arrays are too large for `#[derive(Default)]`.
macro_rules! zeroed_default {
    ($($t:ty),* $(,)?) => {
        $(
            impl $t {
                /// Returns an all-zero value (every field 0).
                pub fn new_zeroed() -> Self {
                    <Self as zerocopy::FromZeros>::new_zeroed()
                }
            }
            impl Default for $t {
                fn default() -> Self {
                    Self::new_zeroed()
                }
            }
        )*
    };
}

pub mod callback;
pub mod domctl;
pub mod elfnote;
pub mod errno;
pub mod event_channel;
pub mod features;
pub mod grant_table;
pub mod hypercall;
pub mod memory;
pub mod physdev;
pub mod sched;
pub mod sysctl;
pub mod types;
pub mod vcpu;
pub mod version;
pub mod xen;
pub mod xenbus;

pub use errno::Errno;
pub use types::*;
