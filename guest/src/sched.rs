//! Scheduling hypercalls (`sched_op`, ABI.md §2.1): idle blocking, polling, and the
//! domain's end (`SCHEDOP_shutdown` with Xen's reasons).

use xen_abi::sched::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF, SHUTDOWN_REBOOT};

use crate::arch::hypercall;

/// `SCHEDOP_block`: Xen clears the upcall mask (events become enabled), then sleeps until
/// an event is pending — returning at once if one already is, so "disable events; check for
/// work; block" has no lost-wakeup race (xen/include/public/sched.h). Pending events are
/// delivered before this returns.
pub fn block() {
    let _ = hypercall::sched_block();
}

/// `SCHEDOP_yield`.
pub fn yield_now() {
    let _ = hypercall::sched_yield();
}

/// `SCHEDOP_poll`: wait until one of `ports` is pending (masked or not) or until system time
/// `timeout_ns` (0 = no timeout).
pub fn poll(ports: &[u32], timeout_ns: u64) -> hypercall::Result<u64> {
    hypercall::sched_poll(ports, timeout_ns)
}

/// Shut the domain down with `reason`; never returns (blocks forever if refused).
pub fn shutdown(reason: u32) -> ! {
    loop {
        let _ = hypercall::sched_shutdown(reason);
        // Refused or still running: don't spin on the CPU.
        let _ = hypercall::sched_block();
    }
}

/// Power off (`SHUTDOWN_poweroff`).
pub fn poweroff() -> ! {
    shutdown(SHUTDOWN_POWEROFF)
}

/// Reboot (`SHUTDOWN_reboot`).
pub fn reboot() -> ! {
    shutdown(SHUTDOWN_REBOOT)
}

/// Crash the domain (`SHUTDOWN_crash`).
pub fn crash() -> ! {
    shutdown(SHUTDOWN_CRASH)
}

/// Waits until event channel `port` is pending (and clears it) or `ns` nanoseconds pass;
/// false on timeout. The port should be masked, so that no upcall consumes the pending
/// bit: `SCHEDOP_poll` wakes on it all the same, and no notification is lost between a
/// look at shared memory and the sleep.
pub fn wait_port(port: u32, ns: u64) -> bool {
    let deadline = crate::time::now_ns().saturating_add(ns);
    loop {
        if crate::shared::test_and_clear_pending(port) {
            return true;
        }
        if crate::time::now_ns() >= deadline {
            return false;
        }
        if poll(&[port], deadline).is_err() {
            yield_now();
        }
    }
}
