//! The bootable hypervisor image; everything lives in the library's `arch` module
//! (entry point, panic handler), which this binary links in.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
use xen_core as _;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the hypervisor image is built for x86_64-unknown-none; see `cargo xtask build`");
}
