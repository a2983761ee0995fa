//! Domain builder for 64-bit Xen PV guests: the start-of-day memory layout of Xen's public
//! `xen.h` ("Start-of-day memory layout") as produced by libxc (`xg_dom_core.c`,
//! `xg_dom_x86.c`) and libelf (`libelf-dominfo.c`, `libelf-loader.c`).
//!
//! The same code builds dom0 (called by the hypervisor) and domUs (called by dom0's
//! toolstack), so a kernel gets the same layout either way.
//!
//! Steps, each its own module:
//!
//! 0. [`bzimage::unpack_kernel`]: unwrap a bzImage, decompressing an xz payload ([`xz`]).
//! 1. [`image::KernelImage::parse`]: unwrap a bzImage ([`bzimage`]), parse the ELF64
//!    ([`elf`]), read the Xen notes ([`notes`]) and apply Xen's acceptance checks.
//! 2. [`layout::plan`]: decide which guest frame (PFN) holds what, in libxc's order.
//! 3. [`build::build`]: write segments, p2m list, page tables, hypercall page, start_info
//!    and ramdisk through the [`build::BuildMemory`] trait, and return the [`BootState`].
//!
//! Every input (the kernel image in particular) is treated as hostile: all offsets and sizes
//! are bounds-checked with checked arithmetic, and rejections are [`BuildError`] values,
//! never panics.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod bytes;

pub mod build;
pub mod bzimage;
pub mod elf;
pub mod error;
pub mod hypercall_page;
pub mod image;
pub mod layout;
pub mod notes;
pub mod xz;

pub use build::{build, BootState, BuildMemory, StartInfoParams};
pub use bzimage::{unpack_kernel, Compression};
pub use error::{BuildError, FeatureName};
pub use hypercall_page::{fill_hypercall_page, hypercall_page};
pub use image::KernelImage;
pub use layout::{plan, Layout, LayoutParams, P2mPlacement, Ramdisk, Region};
pub use notes::XenNotes;

/// Size of a guest page in bytes.
pub const PAGE_SIZE: u64 = 4096;
