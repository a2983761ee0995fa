//! Conversion of TSC ticks to nanoseconds in the form Xen publishes to guests
//! (`vcpu_time_info.tsc_to_system_mul` / `tsc_shift`): `ns = ((ticks << shift) * mul) >> 32`,
//! with a negative shift meaning a right shift.

/// A TSC-to-nanoseconds scale as published in `vcpu_time_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeScale {
    /// 32.32 fixed-point multiplier (nanoseconds per shifted tick, below 2.0).
    pub mul_frac: u32,
    /// Pre-shift applied to the tick delta (negative = right shift).
    pub shift: i8,
}

const NS_PER_SEC: u64 = 1_000_000_000;

impl TimeScale {
    /// The scale for a counter running at `ticks_per_sec` (which must be non-zero).
    /// The shifted frequency is brought into (0.5 GHz, 1 GHz .. 2 GHz] so that the
    /// multiplier is a fraction in [0.5, 2) as Xen's own computation does.
    pub fn from_frequency(ticks_per_sec: u64) -> TimeScale {
        let mut tps = ticks_per_sec.max(1);
        let mut shift: i8 = 0;
        while tps > 2 * NS_PER_SEC {
            tps >>= 1;
            shift -= 1;
        }
        while tps <= NS_PER_SEC {
            tps <<= 1;
            shift += 1;
        }
        // mul = 1e9 / tps in 32.32; tps is in (1e9, 2e9], so mul < 2^32.
        let mul = ((NS_PER_SEC as u128) << 32) / tps as u128;
        TimeScale {
            mul_frac: mul as u32,
            shift,
        }
    }

    /// Nanoseconds for a tick delta, exactly as a guest computes it.
    pub fn ticks_to_ns(&self, delta: u64) -> u64 {
        let shifted = if self.shift >= 0 {
            delta << self.shift
        } else {
            delta >> (-self.shift)
        };
        ((shifted as u128 * self.mul_frac as u128) >> 32) as u64
    }

    /// Ticks for a nanosecond span (inverse of [`ticks_to_ns`], rounded down).
    pub fn ns_to_ticks(&self, ns: u64, ticks_per_sec: u64) -> u64 {
        ((ns as u128 * ticks_per_sec as u128) / NS_PER_SEC as u128) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_second_is_one_second_at_common_frequencies() {
        for f in [
            1_000_000u64,
            100_000_000,
            1_000_000_000,
            2_500_000_000,
            3_999_999_999,
        ] {
            let s = TimeScale::from_frequency(f);
            let ns = s.ticks_to_ns(f);
            let err = ns.abs_diff(NS_PER_SEC);
            assert!(err < 10, "freq {f}: {ns} ns for one second ({s:?})");
        }
    }

    #[test]
    fn shift_direction_follows_frequency() {
        assert!(TimeScale::from_frequency(3_000_000_000).shift < 0);
        assert!(TimeScale::from_frequency(10_000_000).shift > 0);
    }

    #[test]
    fn ns_to_ticks_inverts() {
        let f = 2_100_000_000;
        let s = TimeScale::from_frequency(f);
        let t = s.ns_to_ticks(1_000_000, f);
        assert_eq!(t, 2_100_000);
        assert!(s.ticks_to_ns(t).abs_diff(1_000_000) < 2);
    }
}
