//! rxen's system-test harness: boot the hypervisor in QEMU and talk to its serial console.
//!
//! - [`qemu`]: the QEMU command line (multiboot hypervisor, dom0 and ramdisk as modules,
//!   `isa-debug-exit`), the meaning of QEMU's exit status, and the QEMU version check.
//!   `cargo xtask run` uses the same module, so tests boot exactly what a developer runs.
//! - [`machine`]: [`Machine`], one headless QEMU with timeouts on every wait, killed on
//!   drop.
//! - [`probe`]: tiny multiboot kernels for testing the harness itself and probing KVM.
//!
//! The integration tests in `tests/tests/` need the images built by `cargo xtask build`,
//! passed in `RXEN_XEN`, `RXEN_DOM0` and `RXEN_TEST_GUEST`; `cargo xtask test` does that.

#![forbid(unsafe_code)]

pub mod machine;
pub mod probe;
pub mod qemu;

pub mod shell;

pub use machine::{scaled, Config, Error, Images, Machine, Result};
pub use qemu::{Accel, Disk, ExitKind};

/// The dom0 shell's prompt.
pub const DOM0_PROMPT: &str = "dom0# ";
/// The hypervisor's log-line prefix.
pub const XEN_PREFIX: &str = "(XEN) ";
/// Printed by the hypervisor when dom0 powers the machine off.
pub const XEN_POWEROFF: &str = "(XEN) Hardware Dom0 halted: halting machine";
/// Printed by the hypervisor when dom0 reboots the machine.
pub const XEN_REBOOT: &str = "(XEN) Hardware Dom0 shutdown: rebooting machine";
/// Printed by the hypervisor when dom0 crashes (followed by the reason).
pub const XEN_DOM0_CRASHED: &str = "(XEN) Domain 0 crashed";
/// Printed after a dom0 crash when the hypervisor reboots.
pub const XEN_CRASH_REBOOT: &str = "(XEN) Hardware Dom0 crashed: rebooting machine";
/// Printed after a dom0 crash under the `noreboot` option, before halting.
pub const XEN_CRASH_NOREBOOT: &str = "(XEN) Hardware Dom0 crashed: 'noreboot' set - not rebooting.";
/// The prefix of a test guest's one verdict line (XTF's format).
pub const TEST_RESULT: &str = "Test result: ";
