//! `bench`: micro-benchmarks of the PV paths, printed as machine-readable lines
//! `BENCH <name> <value> <unit>` for `cargo xtask bench`:
//!
//! * `hypercall_null`: a `xen_version(XENVER_version)` round trip through inline `syscall`;
//! * `mmu_update_per_entry_b512`: one `mmu_update` of 512 L1 entries (map 512 frames into
//!   the map area, then clear them), per entry;
//! * `new_baseptr`: one `MMUEXT_NEW_BASEPTR` switch between two pinned L4s that map the
//!   kernel identically;
//! * `grant_copy_4k`, `grant_copy_4k_b16`, `grant_copy_4k_b64`: `GNTTABOP_copy` of 4 KiB
//!   from a grant of ours to a frame of ours, one element per call or batches of 16 / 64
//!   in one call, ns per element; each also as `..._gbps` (GB/s = bytes per ns);
//! * `grant_map_unmap`, `grant_map_unmap_b64`: `map_grant_ref` (host_map into the map
//!   area) + `unmap_grant_ref` of one page, or of 64 pages with one call each (one TLB
//!   flush per unmap batch), ns per page;
//! * baselines measured in the same run: `call` (a non-inlined function call) and
//!   `memcpy_4k` (copying 4 KiB).
//!
//! Time is the TSC converted to ns with this vCPU's pvclock scale (`vcpu_time_info`
//! `tsc_to_system_mul`/`tsc_shift`). Each value is the median of `ROUNDS` rounds of
//! `iters` operations each.

use core::hint::black_box;

use pv_guest::arch::cpu::rdtsc;
use pv_guest::arch::gnttab::{self, entry_v1};
use pv_guest::arch::mmu;
use pv_guest::hypercall as hc;
use pv_guest::mm::{median, pte, pte_of, Pool};
use pv_guest::xen_abi::grant_table::{
    GnttabCopy, GnttabCopyPtr, GnttabMapGrantRef, GnttabUnmapGrantRef, GNTCOPY_SOURCE_GREF,
    GNTMAP_HOST_MAP, GNTST_OKAY, GTF_PERMIT_ACCESS,
};
use pv_guest::xen_abi::xen::MmuUpdate;
use pv_guest::xen_abi::DomId;
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

/// `bytes` per operation at `ps` picoseconds per operation, as GB/s (bytes per ns).
fn report_gbps(r: &mut Report, name: &str, bytes: u64, ps: Option<u64>) {
    match ps.filter(|&ps| ps > 0) {
        Some(ps) => {
            // Thousandths of a GB/s: bytes * 1000 / ns * 1000 = bytes * 1e6 / ps.
            let milli = bytes.saturating_mul(1_000_000) / ps;
            println!("BENCH {name} {}.{:03} GB/s", milli / 1000, milli % 1000);
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
            grant(r);
        }
        Err(e) => {
            println!("bench: memory manager: {e}");
            r.fail("mmu_update_per_entry_b512", "no map area", "measured");
            r.fail("new_baseptr", "no map area", "measured");
            r.fail("grant benchmarks", "no map area", "measured");
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
    // The entries are clear again: the slots serve the benchmarks that follow.
    mmu::release_slots(first, N);
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

/// Frames granted to ourselves for the grant benchmarks (refs from [`FIRST_REF`]), and
/// as many copy destinations.
const GRANTS: usize = 64;
/// First grant reference free for us (0..8 are the toolstack's).
const FIRST_REF: u32 = 8;

fn grant(r: &mut Report) {
    let mut table = [0u64; 1];
    if gnttab::setup_table(DomId::SELF.raw(), &mut table) != Ok(GNTST_OKAY) {
        r.fail("grant benchmarks", "setup_table failed", "a table");
        return;
    }
    let Ok(t) = mmu::map(table[0], true) else {
        r.fail("grant benchmarks", "table frame not mappable", "mapped");
        return;
    };
    // Granted sources and copy destinations, kept for the rest of the run.
    let mut src = [0u64; GRANTS];
    let mut dst = [0u64; GRANTS];
    for (s, d) in src.iter_mut().zip(dst.iter_mut()) {
        match (
            mmu::alloc_frame(Pool::Unmapped),
            mmu::alloc_frame(Pool::Unmapped),
        ) {
            (Ok(a), Ok(b)) => {
                *s = a.mfn();
                *d = b.mfn();
            }
            _ => {
                r.fail("grant benchmarks", "out of frames", "128 frames");
                return;
            }
        }
    }
    for (i, &mfn) in src.iter().enumerate() {
        let _ = t.write(
            FIRST_REF as usize + i,
            entry_v1(GTF_PERMIT_ACCESS, 0, mfn as u32),
        );
    }
    for n in [1usize, 16, 64] {
        grant_copy(r, &dst, n);
    }
    grant_map(r, 1);
    grant_map(r, GRANTS);
}

/// `n` copies of 4 KiB per `GNTTABOP_copy` call.
fn grant_copy(r: &mut Report, dst: &[u64; GRANTS], n: usize) {
    let (name, gbps) = match n {
        1 => ("grant_copy_4k", "grant_copy_4k_gbps"),
        16 => ("grant_copy_4k_b16", "grant_copy_4k_b16_gbps"),
        _ => ("grant_copy_4k_b64", "grant_copy_4k_b64_gbps"),
    };
    let mut ops = [GnttabCopy::default(); GRANTS];
    for (i, op) in ops.iter_mut().enumerate().take(n) {
        *op = GnttabCopy {
            source: GnttabCopyPtr {
                u: u64::from(FIRST_REF) + i as u64,
                domid: DomId::SELF.raw(),
                offset: 0,
                pad: 0,
            },
            dest: GnttabCopyPtr {
                u: dst[i],
                domid: DomId::SELF.raw(),
                offset: 0,
                pad: 0,
            },
            len: 4096,
            flags: GNTCOPY_SOURCE_GREF,
            ..Default::default()
        };
    }
    let mut batch = match gnttab::CopyBatch::new(&mut ops[..n]) {
        Ok(b) => b,
        Err(e) => {
            println!("bench: {name}: copy batch refused: {e}");
            r.fail(name, "batch refused", "measured");
            return;
        }
    };
    // About 64 KiB per round trip at least, so the fixed costs average out.
    let iters = (64 / n as u64).max(4);
    let ps = measure(iters, || {
        batch.issue().is_ok() && batch.ops().iter().all(|o| o.status == GNTST_OKAY)
    })
    .map(|ps| ps / n as u64);
    report(r, name, ps);
    report_gbps(r, gbps, 4096, ps);
}

/// Map + unmap of `n` granted pages (one call each way), ns per page.
fn grant_map(r: &mut Report, n: usize) {
    let name = if n == 1 {
        "grant_map_unmap"
    } else {
        "grant_map_unmap_b64"
    };
    let Ok(first) = mmu::reserve_slots(n) else {
        r.fail(name, "no slots", "slots");
        return;
    };
    let mut map = [GnttabMapGrantRef::default(); GRANTS];
    let mut unmap = [GnttabUnmapGrantRef::default(); GRANTS];
    for i in 0..n {
        map[i] = GnttabMapGrantRef {
            host_addr: mmu::slot_va(first + i),
            flags: GNTMAP_HOST_MAP,
            gref: FIRST_REF + i as u32,
            // map_grant_ref looks the granter up by id: DOMID_SELF is not accepted.
            dom: 0,
            ..Default::default()
        };
        unmap[i].host_addr = mmu::slot_va(first + i);
    }
    let iters = if n == 1 { 64 } else { 2 };
    let ps = measure(iters, || {
        if gnttab::map_grant_ref(&mut map[..n]).is_err() {
            return false;
        }
        let mut ok = true;
        for (m, u) in map[..n].iter().zip(unmap[..n].iter_mut()) {
            ok &= m.status == GNTST_OKAY;
            u.handle = m.handle;
        }
        ok && gnttab::unmap_grant_ref(&mut unmap[..n]).is_ok()
            && unmap[..n].iter().all(|u| u.status == GNTST_OKAY)
    });
    report(r, name, ps.map(|ps| ps / n as u64));
    mmu::release_slots(first, n);
}
