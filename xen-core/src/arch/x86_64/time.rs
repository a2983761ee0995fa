//! Platform time: the TSC calibrated against the PIT, system time in nanoseconds since
//! boot (Xen's NOW()), the local APIC timer as the hypervisor's periodic tick, and the
//! CMOS clock for the wall clock published in shared_info.

use super::cpu::rdtsc;
use super::mm::maddr_to_virt;
use super::port::{inb, outb};
use crate::time::TimeScale;
use core::sync::atomic::{AtomicU64, Ordering};

/// Vector of the local APIC timer.
pub const TIMER_VECTOR: u8 = 0xf0;
/// Vector of spurious APIC interrupts.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// Hypervisor ticks per second (the granularity of guest timers).
pub const TICK_HZ: u64 = 1000;

const LAPIC_BASE: u64 = 0xfee0_0000;
const LAPIC_EOI: u64 = 0xb0;
const LAPIC_SVR: u64 = 0xf0;
const LAPIC_LVT_TIMER: u64 = 0x320;
const LAPIC_TIMER_INIT: u64 = 0x380;
const LAPIC_TIMER_CURRENT: u64 = 0x390;
const LAPIC_TIMER_DIVIDE: u64 = 0x3e0;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TSC_AT_BOOT: AtomicU64 = AtomicU64::new(0);
static SCALE: AtomicU64 = AtomicU64::new(0);
static WALLCLOCK_AT_BOOT: AtomicU64 = AtomicU64::new(0);

fn lapic_write(reg: u64, value: u32) {
    // SAFETY: the local APIC's MMIO page is mapped uncached in the direct map and owned
    // by the hypervisor; `reg` is a valid register offset.
    unsafe { core::ptr::write_volatile(maddr_to_virt(LAPIC_BASE + reg) as *mut u32, value) };
}

fn lapic_read(reg: u64) -> u32 {
    // SAFETY: as for lapic_write.
    unsafe { core::ptr::read_volatile(maddr_to_virt(LAPIC_BASE + reg) as *const u32) }
}

/// Signals end of interrupt to the local APIC.
pub fn eoi() {
    lapic_write(LAPIC_EOI, 0);
}

/// Busy-waits `ms` milliseconds on PIT channel 2 (used only for calibration).
fn pit_wait_ms(ms: u16) {
    let count: u16 = (1_193_182u32 * u32::from(ms) / 1000) as u16;
    // SAFETY: the PIT and port 0x61 belong to the hypervisor during boot.
    unsafe {
        let gate = inb(0x61);
        outb(0x61, (gate & !0x02) | 0x01); // speaker off, gate on
        outb(0x43, 0xb0); // channel 2, lobyte/hibyte, mode 0
        outb(0x42, count as u8);
        outb(0x42, (count >> 8) as u8);
        // Restart the count by toggling the gate.
        let g = inb(0x61) & !0x01;
        outb(0x61, g);
        outb(0x61, g | 0x01);
        let mut spins = 0u64;
        while inb(0x61) & 0x20 == 0 {
            spins += 1;
            if spins > 100_000_000 {
                break;
            }
        }
    }
}

/// Calibrates the TSC and starts the periodic local APIC tick.
pub fn init() {
    // Mask the legacy PICs: rxen uses the local APIC only.
    // SAFETY: writing the 8259 mask registers only masks legacy interrupts.
    unsafe {
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
    }
    let t0 = rdtsc();
    pit_wait_ms(50);
    let t1 = rdtsc();
    let hz = (t1 - t0).saturating_mul(20).max(1_000_000);
    TSC_HZ.store(hz, Ordering::Relaxed);
    TSC_AT_BOOT.store(t0, Ordering::Relaxed);
    let s = TimeScale::from_frequency(hz);
    SCALE.store(
        (u64::from(s.mul_frac) << 8) | u64::from(s.shift as u8),
        Ordering::Relaxed,
    );

    // Local APIC: software-enable, calibrate its timer against the TSC, then periodic.
    lapic_write(LAPIC_SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    lapic_write(LAPIC_TIMER_DIVIDE, 0x3); // divide by 16
    lapic_write(LAPIC_LVT_TIMER, 1 << 16); // masked while calibrating
    lapic_write(LAPIC_TIMER_INIT, u32::MAX);
    let start = rdtsc();
    while rdtsc() - start < hz / 100 {}
    let elapsed = u32::MAX - lapic_read(LAPIC_TIMER_CURRENT);
    let apic_hz = u64::from(elapsed) * 100;
    let per_tick = (apic_hz / TICK_HZ).clamp(1, u64::from(u32::MAX)) as u32;
    lapic_write(LAPIC_LVT_TIMER, (1 << 17) | u32::from(TIMER_VECTOR)); // periodic
    lapic_write(LAPIC_TIMER_INIT, per_tick);

    WALLCLOCK_AT_BOOT.store(read_rtc(), Ordering::Relaxed);
    crate::xinfo!(
        "TSC {}.{:03} MHz, APIC timer {} kHz, tick {} Hz\n",
        hz / 1_000_000,
        (hz / 1000) % 1000,
        apic_hz / 1000,
        TICK_HZ
    );
}

/// The TSC scale published to guests.
pub fn scale() -> TimeScale {
    let v = SCALE.load(Ordering::Relaxed);
    TimeScale {
        mul_frac: (v >> 8) as u32,
        shift: v as u8 as i8,
    }
}

/// TSC frequency in Hz.
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// TSC value at system time 0.
pub fn tsc_at_boot() -> u64 {
    TSC_AT_BOOT.load(Ordering::Relaxed)
}

/// System time: nanoseconds since boot (Xen's `NOW()`).
pub fn now() -> u64 {
    scale().ticks_to_ns(rdtsc().wrapping_sub(tsc_at_boot()))
}

/// Wall-clock seconds (Unix time) at system time 0.
pub fn wallclock_at_boot() -> u64 {
    WALLCLOCK_AT_BOOT.load(Ordering::Relaxed)
}

fn cmos(reg: u8) -> u8 {
    // SAFETY: the CMOS/RTC index and data ports belong to the hypervisor.
    unsafe {
        outb(0x70, reg);
        inb(0x71)
    }
}

/// Reads the CMOS real-time clock as Unix seconds.
fn read_rtc() -> u64 {
    // Wait for an update not to be in progress.
    for _ in 0..1_000_000 {
        if cmos(0x0a) & 0x80 == 0 {
            break;
        }
    }
    let status_b = cmos(0x0b);
    let bcd = status_b & 0x04 == 0;
    let conv = |v: u8| -> u64 {
        if bcd {
            u64::from((v & 0x0f) + (v >> 4) * 10)
        } else {
            u64::from(v)
        }
    };
    let sec = conv(cmos(0x00));
    let min = conv(cmos(0x02));
    let hour_raw = cmos(0x04);
    let mut hour = conv(hour_raw & 0x7f);
    if status_b & 0x02 == 0 && hour_raw & 0x80 != 0 {
        hour = (hour + 12) % 24;
    }
    let day = conv(cmos(0x07));
    let month = conv(cmos(0x08));
    let year = conv(cmos(0x09)) + 2000;
    days_from_civil(year, month, day) * 86400 + hour * 3600 + min * 60 + sec
}

/// Days since 1970-01-01 of a Gregorian date.
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}
