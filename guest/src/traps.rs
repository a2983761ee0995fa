//! The virtual IDT (`set_trap_table`, ABI.md §1.11 and §2.1): handlers for vectors 0-19
//! using Xen's bounce frame, per-vector hooks for kernels, and the default policy for an
//! unexpected exception: print it and crash the domain (`SHUTDOWN_crash`).

use spin::Mutex;
use xen_abi::xen::{TrapInfo, FLAT_KERNEL_CS};
use zerocopy::FromZeros;

use crate::arch::{self, hypercall, TrapFrame, NR_EXCEPTION_VECTORS, UPCALL_VECTOR};

/// A per-vector hook. Return true if the exception was handled (the frame, possibly
/// modified, is resumed), false to fall through to the default (crash).
pub type Hook = fn(&mut TrapFrame) -> bool;

static HOOKS: Mutex<[Option<Hook>; NR_EXCEPTION_VECTORS]> =
    Mutex::new([None; NR_EXCEPTION_VECTORS]);

/// Mnemonic of an exception vector.
pub fn vector_name(v: u64) -> &'static str {
    const NAMES: [&str; NR_EXCEPTION_VECTORS] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS", "#NP", "#SS",
        "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM",
    ];
    usize::try_from(v)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("#??")
}

/// The trap table for our stubs: every vector with "mask events" (flag bit 2), DPL 0,
/// except #BP and #OF with DPL 3 (as XTF does), then the terminating zero entry.
pub fn trap_table(stubs: &[u64; NR_EXCEPTION_VECTORS]) -> [TrapInfo; NR_EXCEPTION_VECTORS + 1] {
    let mut t = [TrapInfo::new_zeroed(); NR_EXCEPTION_VECTORS + 1];
    for (v, (e, &addr)) in t.iter_mut().zip(stubs.iter()).enumerate() {
        e.vector = v as u8;
        e.flags = if v == 3 || v == 4 { 3 | 4 } else { 4 };
        e.cs = FLAT_KERNEL_CS;
        e.address = addr;
    }
    t
}

/// Register our handlers for vectors 0-19 with `set_trap_table`.
pub fn install() -> hypercall::Result<u64> {
    let table = trap_table(&arch::entry_points().exceptions);
    hypercall::set_trap_table(&table)
}

/// Set (or clear) the hook of `vector` (0-19). Returns false for other vectors.
pub fn set_hook(vector: u8, hook: Option<Hook>) -> bool {
    match HOOKS.lock().get_mut(usize::from(vector)) {
        Some(slot) => {
            *slot = hook;
            true
        }
        None => false,
    }
}

/// Entry from the assembly stubs.
pub(crate) fn dispatch(frame: &mut TrapFrame) {
    if frame.vector == UPCALL_VECTOR {
        crate::events::upcall(frame);
    } else {
        // try_lock: a fault while a hook is being registered falls through to the default.
        let hook = HOOKS.try_lock().and_then(|h| {
            usize::try_from(frame.vector)
                .ok()
                .and_then(|v| h.get(v).copied().flatten())
        });
        let handled = hook.is_some_and(|h| h(frame));
        if !handled {
            fatal(frame);
        }
    }
    // Xen keeps the saved upcall mask in CS bits 32-39; hand back a plain selector.
    frame.cs &= 0xffff;
}

/// Default policy: report the exception and crash the domain.
fn fatal(f: &TrapFrame) -> ! {
    crate::println!(
        "pv-guest: unhandled exception {} {} err={:#x} rip={:#x} cs={:#x} rflags={:#x} rsp={:#x} ss={:#x} cr2={:#x}",
        f.vector,
        vector_name(f.vector),
        f.error_code,
        f.rip,
        f.cs,
        f.rflags,
        f.rsp,
        f.ss,
        crate::shared::cr2()
    );
    crate::println!(
        "pv-guest: rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}",
        f.rax,
        f.rbx,
        f.rcx,
        f.rdx,
        f.rsi,
        f.rdi,
        f.rbp
    );
    crate::sched::crash()
}

/// Entry from the failsafe stub: a segment reload failed on return to us.
pub(crate) fn failsafe(w: &[u64; 11]) -> ! {
    crate::println!(
        "pv-guest: failsafe callback: ds={:#x} es={:#x} fs={:#x} gs={:#x} rip={:#x} cs={:#x}",
        w[2],
        w[3],
        w[4],
        w[5],
        w[6],
        w[7]
    );
    crate::sched::crash()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_layout() {
        let mut stubs = [0u64; NR_EXCEPTION_VECTORS];
        for (i, s) in stubs.iter_mut().enumerate() {
            *s = 0xffff_ffff_8010_0000 + 16 * i as u64;
        }
        let t = trap_table(&stubs);
        assert_eq!(t[0].vector, 0);
        assert_eq!(t[0].flags, 4);
        assert_eq!(t[3].flags, 7);
        assert_eq!(t[13].address, stubs[13]);
        assert_eq!(t[NR_EXCEPTION_VECTORS].address, 0);
    }

    #[test]
    fn names() {
        assert_eq!(vector_name(14), "#PF");
        assert_eq!(vector_name(300), "#??");
    }
}
