//! The rxen hypervisor.
//!
//! The portable core (log ring, time scale, event channels, ...) is plain Rust that the
//! host tests exercise; `arch` holds the x86_64 bare-metal code (boot, paging, traps,
//! guest entry and exit) and is compiled only for `x86_64-unknown-none`.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod cmdline;
pub mod evtchn;
pub mod guest_addr;
pub mod log;
pub mod pci;
pub mod pirq;
pub mod ptwr;
pub mod pvmm;
pub mod time;

#[cfg(target_os = "none")]
#[allow(unsafe_code)]
pub mod arch;
