//! `sched_op` hypercall (`xen/include/public/sched.h`): yield, block, shutdown, poll.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Yield the CPU.
pub const SCHEDOP_YIELD: u32 = 0;
/// Block until an event is pending (re-enables event delivery).
pub const SCHEDOP_BLOCK: u32 = 1;
/// Shut the domain down ([`SchedShutdown`]).
pub const SCHEDOP_SHUTDOWN: u32 = 2;
/// Poll a set of event channels with timeout ([`SchedPoll`]).
pub const SCHEDOP_POLL: u32 = 3;
/// Shut another domain down ([`SchedRemoteShutdown`]).
pub const SCHEDOP_REMOTE_SHUTDOWN: u32 = 4;
/// Record the shutdown reason without shutting down ([`SchedShutdown`]).
pub const SCHEDOP_SHUTDOWN_CODE: u32 = 5;
/// Manage watchdog timers.
pub const SCHEDOP_WATCHDOG: u32 = 6;
/// Override vCPU pinning temporarily.
pub const SCHEDOP_PIN_OVERRIDE: u32 = 7;

/// Shutdown reason: power off.
pub const SHUTDOWN_POWEROFF: u32 = 0;
/// Shutdown reason: reboot.
pub const SHUTDOWN_REBOOT: u32 = 1;
/// Shutdown reason: suspend.
pub const SHUTDOWN_SUSPEND: u32 = 2;
/// Shutdown reason: crash.
pub const SHUTDOWN_CRASH: u32 = 3;
/// Shutdown reason: watchdog fired.
pub const SHUTDOWN_WATCHDOG: u32 = 4;
/// Shutdown reason: soft reset.
pub const SHUTDOWN_SOFT_RESET: u32 = 5;

/// `struct sched_shutdown` (4 bytes), guest writes.
#[doc(alias = "sched_shutdown")]
#[doc(alias = "sched_shutdown_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SchedShutdown {
    /// `SHUTDOWN_*`.
    pub reason: u32,
}
assert_layout!(SchedShutdown, 4, { reason: 0 });

/// `struct sched_poll` (24 bytes), guest writes.
#[doc(alias = "sched_poll")]
#[doc(alias = "sched_poll_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SchedPoll {
    /// Guest virtual address of an array of `evtchn_port_t` (u32).
    pub ports: u64,
    /// Number of ports in the array.
    pub nr_ports: u32,
    /// Padding.
    pub pad: u32,
    /// Absolute system-time timeout in ns (0 = none).
    pub timeout: u64,
}
assert_layout!(SchedPoll, 24, { ports: 0, nr_ports: 8, pad: 12, timeout: 16 });

/// `struct sched_remote_shutdown` (8 bytes), guest writes.
#[doc(alias = "sched_remote_shutdown")]
#[doc(alias = "sched_remote_shutdown_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SchedRemoteShutdown {
    /// Domain to shut down.
    pub domain_id: u16,
    /// Padding.
    pub pad: u16,
    /// `SHUTDOWN_*`.
    pub reason: u32,
}
assert_layout!(SchedRemoteShutdown, 8, { domain_id: 0, pad: 2, reason: 4 });
