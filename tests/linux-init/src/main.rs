//! PID 1 for Debian's kernel as an rxen domU: loads Linux's own `xen-blkfront` and checks
//! the disk rxen's blkback serves it (see README.md). Built for `x86_64-unknown-none` and
//! run by Linux as a static executable; all I/O is raw system calls.
//!
//! Output, on the console (`/dev/console`, i.e. hvc0): `linux-init: ...` progress lines and
//! one verdict, `linux-init: PASS ...` or `linux-init: FAIL ...`. Then the domain powers
//! off, whatever the verdict.

#![cfg_attr(target_os = "none", no_std, no_main)]

// On the host only the parser's unit tests use it.
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
mod params;

#[cfg(target_os = "none")]
mod linux;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("linux-init is PID 1 of a Linux guest's initramfs: build it for x86_64-unknown-none");
}
