//! Xen system time and timers (ABI.md §1.6, §2.1 set_timer_op / vcpu_op timers):
//! `vcpu_time_info` read under its version protocol, scaled from the TSC; wall clock from
//! shared_info; one-shot and periodic timers that raise VIRQ_TIMER.

use xen_abi::xen::VcpuTimeInfo;

use crate::arch::{cpu, hypercall};
use crate::shared;

/// Nanoseconds for `delta` TSC ticks: `((delta << shift or >> -shift) * mul) >> 32`.
pub fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let d = if shift >= 0 {
        delta
            .checked_shl(u32::from(shift.unsigned_abs()))
            .unwrap_or(0)
    } else {
        delta
            .checked_shr(u32::from(shift.unsigned_abs()))
            .unwrap_or(0)
    };
    ((u128::from(d) * u128::from(mul)) >> 32) as u64
}

/// System time for a snapshot `t` at TSC value `tsc`.
pub fn system_time_at(t: &VcpuTimeInfo, tsc: u64) -> u64 {
    let delta = tsc.saturating_sub(t.tsc_timestamp);
    t.system_time
        .wrapping_add(scale_delta(delta, t.tsc_to_system_mul, t.tsc_shift))
}

/// Read a consistent snapshot: version even and unchanged across the read (bounded retries).
fn snapshot() -> Option<(VcpuTimeInfo, u64)> {
    for _ in 0..1000 {
        let v1 = shared::time_version();
        if v1 & 1 != 0 {
            cpu::pause();
            continue;
        }
        let t = shared::time_info_raw()?;
        let tsc = cpu::rdtsc();
        if shared::time_version() == v1 && t.version == v1 {
            return Some((t, tsc));
        }
    }
    None
}

/// Current system time in ns since the hypervisor's boot (0 if unavailable).
pub fn now_ns() -> u64 {
    snapshot().map_or(0, |(t, tsc)| system_time_at(&t, tsc))
}

/// Wall clock at system time 0: (seconds, nanoseconds), read under `wc_version`.
pub fn wallclock_base() -> (u64, u32) {
    for _ in 0..1000 {
        let (v, sec, nsec) = shared::wallclock_raw();
        if v & 1 == 0 && shared::wallclock_version() == v {
            return (sec, nsec);
        }
        cpu::pause();
    }
    (0, 0)
}

/// Current wall-clock time: (seconds since the epoch, nanoseconds).
pub fn wallclock_now() -> (u64, u32) {
    let (sec, nsec) = wallclock_base();
    let total = u128::from(sec) * 1_000_000_000 + u128::from(nsec) + u128::from(now_ns());
    (
        (total / 1_000_000_000) as u64,
        (total % 1_000_000_000) as u32,
    )
}

/// One-shot VIRQ_TIMER at absolute system time `deadline_ns` (`set_timer_op`); 0 cancels.
pub fn set_timer(deadline_ns: u64) -> hypercall::Result<u64> {
    hypercall::set_timer_op(deadline_ns)
}

/// Periodic VIRQ_TIMER on vCPU 0 every `period_ns` (Xen requires at least 1 ms).
pub fn set_periodic(period_ns: u64) -> hypercall::Result<u64> {
    hypercall::vcpu_set_periodic_timer(0, period_ns)
}

/// Stop vCPU 0's periodic timer.
pub fn stop_periodic() -> hypercall::Result<u64> {
    hypercall::vcpu_stop_periodic_timer(0)
}

/// One-shot VIRQ_TIMER via `VCPUOP_set_singleshot_timer` on vCPU 0.
pub fn set_singleshot(deadline_ns: u64) -> hypercall::Result<u64> {
    hypercall::vcpu_set_singleshot_timer(0, deadline_ns, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn scaling() {
        // mul = 2^32 means 1 ns per (shifted) tick.
        assert_eq!(scale_delta(1000, u32::MAX, 0), 999);
        assert_eq!(scale_delta(1000, 1 << 31, 0), 500);
        assert_eq!(scale_delta(1000, 1 << 31, 1), 1000);
        assert_eq!(scale_delta(1000, 1 << 31, -1), 250);
        // 3 GHz TSC: mul = 2^32 / 3 → 1e9 ticks ≈ 333 ms
        let mul = ((1u64 << 32) / 3) as u32;
        let ns = scale_delta(1_000_000_000, mul, 0);
        assert!((333_333_300..=333_333_334).contains(&ns), "{ns}");
        // Large deltas do not overflow.
        assert!(scale_delta(u64::MAX >> 1, u32::MAX, 0) > 0);
    }

    #[test]
    fn system_time() {
        let mut t = VcpuTimeInfo::new_zeroed();
        t.tsc_timestamp = 1000;
        t.system_time = 5_000;
        t.tsc_to_system_mul = 1 << 31;
        t.tsc_shift = 1;
        assert_eq!(system_time_at(&t, 1000), 5_000);
        assert_eq!(system_time_at(&t, 3000), 7_000);
        // A TSC behind the timestamp does not go backwards.
        assert_eq!(system_time_at(&t, 10), 5_000);
    }
}
