//! `bench`: micro-benchmarks of the PV paths, printed as machine-readable lines
//! `BENCH <name> <value> <unit>` for `cargo xtask bench`:
//!
//! * `hypercall_null`: a `xen_version(XENVER_version)` round trip through inline `syscall`;
//! * `mmu_update_per_entry_b512`: one `mmu_update` of 512 L1 entries (map 512 frames into
//!   the map area, then clear them), per entry;
//! * `new_baseptr`: one `MMUEXT_NEW_BASEPTR` switch between two pinned L4s that map the
//!   kernel identically;
//! * baselines measured in the same run: `call` (a non-inlined function call) and
//!   `memcpy_4k` (copying 4 KiB).
//!
//! Time is the TSC converted to ns with this vCPU's pvclock scale (`vcpu_time_info`
//! `tsc_to_system_mul`/`tsc_shift`). Each value is the median of `ROUNDS` rounds of
//! `iters` operations each.

use core::hint::black_box;

use pv_guest::arch::cpu::rdtsc;
use pv_guest::arch::mmu;
use pv_guest::hypercall as hc;
use pv_guest::mm::{median, pte, pte_of, Pool};
use pv_guest::xen_abi::xen::MmuUpdate;
use pv_guest::{println, shared, start, time};

use crate::report::Report;

const ROUNDS: usize = 11;

/// ns per operation of `f` run `iters` times, median of ROUNDS rounds, in picoseconds (so
/// that sub-ns baselines keep precision); `None` if `f` failed.
fn measure(iters: u64, mut f: impl FnMut() -> bool) -> Option<u64> {
    let t = shared::time_info_raw()?;
    let mut samples = [0u64; ROUNDS];
    for s in samples.iter_mut() {
        let t0 = rdtsc();
        for _ in 0..iters {
            if !f() {
                return None;
            }
        }
        let dt = rdtsc().saturating_sub(t0);
        let ns = time::scale_delta(dt.saturating_mul(1000), t.tsc_to_system_mul, t.tsc_shift);
        *s = ns / iters.max(1);
    }
    Some(median(&mut samples))
}

fn report(r: &mut Report, name: &str, ps: Option<u64>) {
    match ps {
        Some(ps) => {
            println!("BENCH {name} {}.{:03} ns", ps / 1000, ps % 1000);
            r.pass(name);
        }
        None => r.fail(name, "operation failed", "measured"),
    }
}

#[inline(never)]
fn called(x: u64) -> u64 {
    black_box(x).wrapping_add(1)
}

pub fn run(r: &mut Report) {
    super::setup(r);
    let Some(si) = start::start_info() else {
        r.fail("start_info", "missing", "present");
        return;
    };
    if let Some(t) = shared::time_info_raw() {
        println!(
            "bench: pvclock tsc_to_system_mul {:#x} tsc_shift {}",
            t.tsc_to_system_mul, t.tsc_shift
        );
    }

    // Baselines.
    let mut acc = 0u64;
    let call = measure(10_000, || {
        acc = called(acc);
        true
    });
    black_box(acc);
    report(r, "call", call);
    let mut src = [0x5au8; 4096];
    let mut dst = [0u8; 4096];
    let copy = measure(200, || {
        black_box(&mut src);
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
        true
    });
    report(r, "memcpy_4k", copy);

    let null = measure(1000, || hc::null_hypercall_syscall() >= 0);
    report(r, "hypercall_null", null);

    match mmu::init(si).and_then(|_| mmu::map_area_init()) {
        Ok(_) => {
            mmu_batch(r);
            baseptr(r);
        }
        Err(e) => {
            println!("bench: memory manager: {e}");
            r.fail("mmu_update_per_entry_b512", "no map area", "measured");
            r.fail("new_baseptr", "no map area", "measured");
        }
    }
}

fn mmu_batch(r: &mut Report) {
    const N: usize = 512;
    let Ok(first) = mmu::reserve_slots(N) else {
        r.fail("mmu_update_per_entry_b512", "no slots", "512 slots");
        return;
    };
    // 512 frames if we have them (one frame mapped 512 times otherwise).
    let mut mfns = [0u64; N];
    let mut frames = 0;
    for i in 0..N {
        mfns[i] = match mmu::alloc_frame(Pool::Unmapped) {
            Ok(f) => {
                frames += 1;
                // Kept (mapped and unmapped by the batches) for the rest of the run.
                f.mfn()
            }
            Err(_) => mfns[0],
        };
    }
    let mut map = [MmuUpdate::default(); N];
    let mut clear = [MmuUpdate::default(); N];
    for i in 0..N {
        let ptr = mmu::slot_maddr(first + i).unwrap_or(0);
        map[i] = MmuUpdate {
            ptr,
            val: pte_of(mfns[i], pte::KERNEL_RO),
        };
        clear[i] = MmuUpdate { ptr, val: 0 };
    }
    println!("bench: mmu_update batches of {N} entries over {frames} distinct frames");
    let mut ok = true;
    // One iteration = map 512 + clear 512, i.e. 1024 entries.
    let ps = measure(4, || {
        let a = mmu::mmu_update(&map);
        let b = mmu::mmu_update(&clear);
        ok = a.result.is_ok() && b.result.is_ok() && a.done == N as u32;
        ok
    });
    let _ = mmu::flush_tlb();
    report(
        r,
        "mmu_update_per_entry_b512",
        ps.map(|ps| ps / (2 * N as u64)),
    );
}

fn baseptr(r: &mut Report) {
    let space = match mmu::clone_current() {
        Ok(s) => s,
        Err(e) => {
            println!("bench: clone of the address space: {e}");
            r.fail("new_baseptr", "no second L4", "measured");
            return;
        }
    };
    println!(
        "bench: second L4 {:#x} ({} tables), switching against the builder's",
        space.l4_mfn(),
        space.nr_tables()
    );
    // One iteration = two switches.
    let ps = measure(50, || {
        mmu::switch_to(&space).is_ok() && mmu::switch_to_boot().is_ok()
    });
    let _ = mmu::switch_to_boot();
    report(r, "new_baseptr", ps.map(|ps| ps / 2));
    if let Err(e) = mmu::destroy(space) {
        println!("bench: releasing the second L4: {e}");
    }
}
