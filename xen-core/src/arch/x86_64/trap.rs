//! What happens on every entry from a guest and on every return to one: exceptions
//! bounced to the guest's virtual IDT with Xen's frame layout, `int $n` and Xen's
//! forced-emulation `cpuid`, the periodic tick (guest timers, console input), event
//! upcalls on the way out, scheduling and idling, and crashing a domain.

use super::cpu;
use super::domain::{Domain, Hypervisor, RunState, Shutdown, Vcpu, HV};
use super::frame::{TrapFrame, VECTOR_SYSCALL};
use super::guestmem;
use super::mm;
use super::time;
use xen_abi::xen::{FLAT_KERNEL_CS, FLAT_KERNEL_SS};

const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_NT: u64 = 1 << 14;
const RFLAGS_RF: u64 = 1 << 16;
const RFLAGS_AC: u64 = 1 << 18;
const RFLAGS_VM: u64 = 1 << 17;
const RFLAGS_IOPL: u64 = 3 << 12;

/// Time slice of a vCPU when others are runnable (Xen's credit scheduler uses 30 ms;
/// rxen keeps consoles responsive under TCG with 10 ms).
const SLICE_NS: u64 = 10_000_000;

/// Exceptions that push an error code.
fn has_error_code(vector: u64) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Entry of every exception and interrupt (entry.S).
#[unsafe(no_mangle)]
extern "C" fn trap_dispatch(f: &mut TrapFrame) {
    let vector = f.vector;
    if !f.from_guest() {
        hypervisor_trap(f);
        return;
    }
    match vector {
        v if v == u64::from(time::TIMER_VECTOR) => {
            time::eoi();
            tick();
        }
        v if v == u64::from(time::SPURIOUS_VECTOR) => {}
        0..=31 => guest_exception(f),
        0x80 => int80(f),
        v if crate::pirq::is_device_vector(v) => super::irq::device_interrupt(v),
        _ => {
            time::eoi();
        }
    }
    exit_to_guest(f);
}

/// A trap taken while the hypervisor itself ran: the tick during idle, a guest-memory
/// access that faulted (recovered), or a hypervisor bug (fatal).
fn hypervisor_trap(f: &mut TrapFrame) {
    let vector = f.vector;
    if vector == 14 && guestmem::fixup(f) {
        return;
    }
    match vector {
        v if v == u64::from(time::TIMER_VECTOR) => {
            time::eoi();
            tick();
        }
        v if v == u64::from(time::SPURIOUS_VECTOR) => {}
        // A device interrupt while idle: the woken vCPU runs when the idle loop looks again.
        v if crate::pirq::is_device_vector(v) => super::irq::device_interrupt(v),
        2 => crate::xwarn!("NMI received\n"),
        _ => {
            crate::xerr!("----[ rxen hypervisor fault ]----\n");
            crate::xerr!(
                "vector {} error {:#x} cr2 {:#x}\n",
                f.vector,
                f.error_code,
                cpu::read_cr2()
            );
            dump_regs(f);
            crate::xerr!("Panic: hypervisor fault\n");
            super::power::fatal();
        }
    }
}

/// Prints a register frame, Xen-style.
pub fn dump_regs(f: &TrapFrame) {
    crate::xerr!("RIP:    {:04x}:[<{:016x}>]\n", f.cs, f.rip);
    crate::xerr!(
        "RFLAGS: {:016x}   vector {:#x} error {:#x}\n",
        f.rflags,
        f.vector,
        f.error_code
    );
    crate::xerr!(
        "rax: {:016x}   rbx: {:016x}   rcx: {:016x}\n",
        f.rax,
        f.rbx,
        f.rcx
    );
    crate::xerr!(
        "rdx: {:016x}   rsi: {:016x}   rdi: {:016x}\n",
        f.rdx,
        f.rsi,
        f.rdi
    );
    crate::xerr!(
        "rbp: {:016x}   rsp: {:016x}   r8:  {:016x}\n",
        f.rbp,
        f.rsp,
        f.r8
    );
    crate::xerr!(
        "r9:  {:016x}   r10: {:016x}   r11: {:016x}\n",
        f.r9,
        f.r10,
        f.r11
    );
    crate::xerr!(
        "r12: {:016x}   r13: {:016x}   r14: {:016x}\n",
        f.r12,
        f.r13,
        f.r14
    );
    crate::xerr!(
        "r15: {:016x}   cr2: {:016x}   ss: {:04x}\n",
        f.r15,
        cpu::read_cr2(),
        f.ss
    );
}

/// The periodic tick: fire due guest timers, notice console input.
fn tick() {
    let mut hv = HV.lock();
    let now = time::now();
    if super::console::poll_input() {
        hv.console_input_pending = true;
    }
    if hv.console_input_pending {
        if let Some(d0) = hv.domains.first_mut() {
            hv_send_virq_kick(d0, xen_abi::xen::VIRQ_CONSOLE, 0);
        }
        hv.console_input_pending = false;
    }
    for d in hv.domains.iter_mut() {
        if d.shutdown.is_some() {
            continue;
        }
        for i in 0..d.vcpus.len() {
            let mut fire = false;
            let v = &mut d.vcpus[i];
            if v.singleshot.is_some_and(|t| t <= now) {
                v.singleshot = None;
                fire = true;
            }
            if let Some((period, next)) = v.periodic {
                if next <= now {
                    let missed = (now - next) / period.max(1);
                    v.periodic = Some((period, next + (missed + 1) * period.max(1)));
                    fire = true;
                }
            }
            if v.state == RunState::Polling && v.poll_deadline.is_some_and(|t| t <= now) {
                v.state = RunState::Runnable;
                v.poll_deadline = None;
                v.regs.rax = 0;
            }
            if fire {
                hv_send_virq_kick(d, xen_abi::xen::VIRQ_TIMER, i as u32);
            }
        }
    }
}

/// Raises a VIRQ and wakes the vCPU it lands on.
pub fn hv_send_virq_kick(d: &mut Domain, virq: u32, vcpu: u32) {
    let _ = d.send_virq(virq, vcpu);
}

/// Saves the live frame into the current vCPU.
fn save_current(hv: &mut Hypervisor, f: &TrapFrame) {
    if let Some((di, vi)) = hv.current {
        if let Some(v) = hv.domains.get_mut(di).and_then(|d| d.vcpus.get_mut(vi)) {
            v.regs = *f;
        }
    }
}

/// Makes `(di, vi)` the running vCPU: its registers into the frame, its page table in CR3.
fn switch_to(hv: &mut Hypervisor, f: &mut TrapFrame, di: usize, vi: usize) {
    if hv.current == Some((di, vi)) {
        return;
    }
    save_current(hv, f);
    let now = time::now();
    if let Some((odi, ovi)) = hv.current {
        if let Some(v) = hv.domains.get_mut(odi).and_then(|d| d.vcpus.get_mut(ovi)) {
            // SAFETY: FS/GS base MSRs exist on every x86_64 CPU.
            unsafe {
                v.fs_base = cpu::rdmsr(cpu::MSR_FS_BASE);
                let gs = cpu::rdmsr(cpu::MSR_GS_BASE);
                if v.in_kernel {
                    v.gs_base_kernel = gs;
                } else {
                    v.gs_base_user = gs;
                }
            }
            let st = if v.state == RunState::Runnable {
                xen_abi::vcpu::RUNSTATE_RUNNABLE
            } else {
                xen_abi::vcpu::RUNSTATE_BLOCKED
            };
            v.set_runstate(st, now);
            save_fpu(&mut v.fpu);
        }
    }
    hv.current = Some((di, vi));
    let Some(v) = hv.domains.get_mut(di).and_then(|d| d.vcpus.get_mut(vi)) else {
        return;
    };
    *f = v.regs;
    v.set_runstate(xen_abi::vcpu::RUNSTATE_RUNNING, now);
    let l4 = if v.in_kernel {
        v.kernel_l4
    } else {
        v.user_l4.unwrap_or(v.kernel_l4)
    };
    // SAFETY: the vCPU's L4 was validated and has the hypervisor slots filled.
    unsafe {
        cpu::write_cr3(l4.raw() << 12);
        cpu::wrmsr(cpu::MSR_FS_BASE, v.fs_base);
        cpu::wrmsr(
            cpu::MSR_GS_BASE,
            if v.in_kernel {
                v.gs_base_kernel
            } else {
                v.gs_base_user
            },
        );
    }
    restore_fpu(&v.fpu);
    cpu::set_cr0_ts(v.fpu_ts);
    super::gdt::show(&v.gdt_frames);
    v.update_time();
}

/// Saves the live FPU/SSE registers (CR0.TS cleared first: fxsave would fault).
fn save_fpu(area: &mut super::domain::FpuState) {
    cpu::set_cr0_ts(false);
    // SAFETY: the area is 512 bytes and 16-byte aligned (FpuState's layout); CR4.OSFXSR
    // is set at boot; the hypervisor itself never uses the FPU.
    unsafe { core::arch::asm!("fxsave64 [{}]", in(reg) area.0.as_mut_ptr(), options(nostack)) };
}

/// Loads a vCPU's FPU/SSE registers.
fn restore_fpu(area: &super::domain::FpuState) {
    cpu::set_cr0_ts(false);
    // SAFETY: as for save_fpu; the area holds an fxsave image (ours, or the initial
    // state with reserved MXCSR bits clear), so fxrstor cannot fault.
    unsafe { core::arch::asm!("fxrstor64 [{}]", in(reg) area.0.as_ptr(), options(nostack)) };
}

fn pick_runnable(hv: &Hypervisor) -> Option<(usize, usize)> {
    // Round robin starting after the current vCPU.
    let flat: alloc::vec::Vec<(usize, usize)> = hv
        .domains
        .iter()
        .enumerate()
        .flat_map(|(di, d)| (0..d.vcpus.len()).map(move |vi| (di, vi)))
        .collect();
    let start = hv
        .current
        .and_then(|c| flat.iter().position(|&x| x == c))
        .map(|p| p + 1)
        .unwrap_or(0);
    (0..flat.len())
        .map(|i| flat[(start + i) % flat.len()])
        .find(|&(di, vi)| {
            let d = &hv.domains[di];
            d.shutdown.is_none() && !d.paused && d.vcpus[vi].state == RunState::Runnable
        })
}

/// The way out to a guest: pick a runnable vCPU (idling until there is one), deliver a
/// pending event upcall, and return so entry.S restores the frame.
pub fn exit_to_guest(f: &mut TrapFrame) {
    loop {
        let mut hv = HV.lock();
        let cur_ok = hv.current.is_some_and(|(di, vi)| {
            hv.domains.get(di).is_some_and(|d| {
                d.shutdown.is_none()
                    && !d.paused
                    && d.vcpus
                        .get(vi)
                        .is_some_and(|v| v.state == RunState::Runnable)
            })
        });
        // Round robin: the running vCPU keeps the CPU until it blocks, yields or has used
        // its time slice while another vCPU waits.
        let now = time::now();
        let rotate = hv.yield_requested || now.saturating_sub(hv.slice_start) >= SLICE_NS;
        hv.yield_requested = false;
        let next = if cur_ok && !rotate {
            hv.current
        } else {
            pick_runnable(&hv).or(if cur_ok { hv.current } else { None })
        };
        if next != hv.current || rotate {
            hv.slice_start = now;
        }
        match next {
            Some((di, vi)) => {
                switch_to(&mut hv, f, di, vi);
                deliver_events(&mut hv, f, di, vi);
                return;
            }
            None => {
                if hv.domains.is_empty() || hv.domains.iter().all(|d| d.shutdown.is_some()) {
                    drop(hv);
                    crate::xinfo!("no domains left: halting\n");
                    super::power::halt();
                }
                // Nothing runs while idle: the last vCPU leaves the running state (its
                // CPU time stops) and is reloaded in full when anything resumes.
                save_current(&mut hv, f);
                if let Some((di, vi)) = hv.current.take() {
                    if let Some(v) = hv.domains.get_mut(di).and_then(|d| d.vcpus.get_mut(vi)) {
                        // SAFETY: FS/GS base MSRs exist on every x86_64 CPU.
                        unsafe {
                            v.fs_base = cpu::rdmsr(cpu::MSR_FS_BASE);
                            let gs = cpu::rdmsr(cpu::MSR_GS_BASE);
                            if v.in_kernel {
                                v.gs_base_kernel = gs;
                            } else {
                                v.gs_base_user = gs;
                            }
                        }
                        let st = if v.state == RunState::Runnable {
                            xen_abi::vcpu::RUNSTATE_RUNNABLE
                        } else {
                            xen_abi::vcpu::RUNSTATE_BLOCKED
                        };
                        v.set_runstate(st, time::now());
                        save_fpu(&mut v.fpu);
                    }
                }
                drop(hv);
                cpu::idle_once();
            }
        }
    }
}

/// Delivers an event upcall if one is pending and not masked (Xen's test_guest_events).
fn deliver_events(hv: &mut Hypervisor, f: &mut TrapFrame, di: usize, vi: usize) {
    let d = &mut hv.domains[di];
    let v = &mut d.vcpus[vi];
    if v.event_callback == 0 || !v.upcall_pending() || v.upcall_mask() != 0 {
        return;
    }
    let cb = v.event_callback;
    if bounce(v, f, cb, None, true).is_err() {
        crash_domain(hv, di, "event upcall frame could not be written", f);
    }
}

/// Builds an exception/upcall frame on the guest's stack (ABI.md 1.11) and redirects the
/// frame to `handler`. Fails if the guest stack cannot be written.
pub fn bounce(
    v: &mut Vcpu,
    f: &mut TrapFrame,
    handler: u64,
    error: Option<u64>,
    mask_events: bool,
) -> Result<(), xen_abi::Errno> {
    let from_user = !v.in_kernel;
    if from_user {
        switch_mode(v, true);
    }
    let sp = if from_user { v.kernel_sp } else { f.rsp } & !15;
    let saved_mask = v.upcall_mask();
    let cs = if from_user { f.cs } else { f.cs & !3 };
    let mut rflags = f.rflags & !(RFLAGS_IF | RFLAGS_IOPL);
    if saved_mask == 0 {
        rflags |= RFLAGS_IF;
    }
    let mut words = arrayvec::ArrayVec::<u64, 8>::new();
    words.push(f.rcx);
    words.push(f.r11);
    if let Some(e) = error {
        words.push(e);
    }
    words.push(f.rip);
    words.push((cs & 0xffff) | (u64::from(saved_mask) << 32));
    words.push(rflags);
    words.push(f.rsp);
    words.push(f.ss);
    let len = (words.len() * 8) as u64;
    let new_sp = sp.checked_sub(len).ok_or(xen_abi::Errno::EFAULT)?;
    let bytes: alloc::vec::Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    guestmem::copy_to_guest(new_sp, &bytes)?;
    if mask_events {
        v.set_upcall_mask(true);
    }
    f.rip = handler;
    f.rsp = new_sp;
    f.cs = u64::from(FLAT_KERNEL_CS);
    f.ss = u64::from(FLAT_KERNEL_SS);
    f.rflags = (f.rflags
        & !(RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_AC | RFLAGS_VM | RFLAGS_IOPL))
        | RFLAGS_IF
        | 2;
    Ok(())
}

/// Switches a vCPU between guest-kernel and guest-user mode: page table and GS base.
pub fn switch_mode(v: &mut Vcpu, to_kernel: bool) {
    if v.in_kernel == to_kernel {
        return;
    }
    // SAFETY: GS base MSR exists; the L4s were validated.
    unsafe {
        let gs = cpu::rdmsr(cpu::MSR_GS_BASE);
        if v.in_kernel {
            v.gs_base_kernel = gs;
        } else {
            v.gs_base_user = gs;
        }
        v.in_kernel = to_kernel;
        let l4 = if to_kernel {
            v.kernel_l4
        } else {
            v.user_l4.unwrap_or(v.kernel_l4)
        };
        cpu::write_cr3(l4.raw() << 12);
        cpu::wrmsr(
            cpu::MSR_GS_BASE,
            if to_kernel {
                v.gs_base_kernel
            } else {
                v.gs_base_user
            },
        );
    }
}

/// An exception raised by the running guest.
fn guest_exception(f: &mut TrapFrame) {
    let mut hv = HV.lock();
    let Some((di, vi)) = hv.current else {
        return;
    };
    let vector = f.vector;
    let mut error = if has_error_code(vector) {
        Some(f.error_code)
    } else {
        None
    };
    // Xen's forced emulation prefix (ud2; .ascii "xen") before cpuid.
    if vector == 6 && emulate_forced_cpuid(f) {
        return;
    }
    // `int $n` arrives as #GP with the IDT vector in the error code (the IDT is DPL 0).
    // Xen permits it when the trap-table DPL is at least 1 from guest-kernel mode and 3
    // from guest-user mode (its permit_softint).
    if vector == 13 && f.error_code & 7 == 2 {
        let n = (f.error_code >> 3) as usize & 0xff;
        let v = &hv.domains[di].vcpus[vi];
        let entry = v.traps[n];
        let needed = if v.in_kernel { 1 } else { 3 };
        let mut insn = [0u8; 2];
        if entry.address != 0
            && entry.flags & 3 >= needed
            && guestmem::copy_from_guest(f.rip, &mut insn).is_ok()
            && insn == [0xcd, n as u8]
        {
            f.rip += 2;
            let v = &mut hv.domains[di].vcpus[vi];
            if bounce(v, f, entry.address, None, entry.flags & 4 != 0).is_err() {
                crash_domain(&mut hv, di, "bad guest stack for a software interrupt", f);
            }
            return;
        }
    }
    if vector == 13 && f.error_code == 0 && hv.domains[di].vcpus[vi].in_kernel {
        let d = &mut hv.domains[di];
        let mut ports = PortAccess {
            ranges: core::mem::take(&mut d.ioports),
            cf8: d.pci_cf8,
            hardware: d.privileged,
        };
        let v = &mut d.vcpus[vi];
        let emulated = emulate_privileged(v, &mut ports, f);
        d.ioports = ports.ranges;
        d.pci_cf8 = ports.cf8;
        if emulated {
            return;
        }
    }
    if vector == 14 && try_ptwr(&mut hv, di, vi, f) {
        return;
    }
    let v = &mut hv.domains[di].vcpus[vi];
    if vector == 7 {
        // Xen's ABI: taking #NM clears the guest's virtual CR0.TS.
        v.fpu_ts = false;
        cpu::set_cr0_ts(false);
    }
    if vector == 14 {
        v.set_cr2(cpu::read_cr2());
        // U/S in the error code tells the guest whether user or kernel faulted.
        error = error.map(|e| if v.in_kernel { e & !4 } else { e | 4 });
    }
    let entry = v.traps.get(vector as usize).copied().unwrap_or_default();
    if entry.address == 0 {
        let why = alloc::format!(
            "unhandled exception {} (error {:#x}, cr2 {:#x})",
            vector,
            f.error_code,
            cpu::read_cr2()
        );
        crash_domain(&mut hv, di, &why, f);
        return;
    }
    if bounce(v, f, entry.address, error, entry.flags & 4 != 0).is_err() {
        crash_domain(
            &mut hv,
            di,
            "exception frame could not be written to the guest stack",
            f,
        );
    }
}

/// `int $0x80` (the IDT gate is DPL 3, as Xen's): straight to the guest's trap-table
/// entry 0x80 whatever its DPL, or #GP at the instruction if the guest has none.
fn int80(f: &mut TrapFrame) {
    let mut hv = HV.lock();
    let Some((di, vi)) = hv.current else {
        return;
    };
    let v = &mut hv.domains[di].vcpus[vi];
    let entry = v.traps[0x80];
    let r = if entry.address != 0 {
        bounce(v, f, entry.address, None, entry.flags & 4 != 0)
    } else {
        f.rip = f.rip.wrapping_sub(2);
        let gp = v.traps[13];
        if gp.address == 0 {
            crash_domain(
                &mut hv,
                di,
                "int $0x80 with no handler and no #GP handler",
                f,
            );
            return;
        }
        bounce(v, f, gp.address, Some((0x80 << 3) | 2), gp.flags & 4 != 0)
    };
    if r.is_err() {
        crash_domain(
            &mut hv,
            di,
            "int $0x80 frame could not be written to the guest stack",
            f,
        );
    }
}

/// Emulates the privileged instructions Xen emulates for a PV guest kernel that this
/// hypervisor supports so far: `rdmsr`/`wrmsr` of the segment-base MSRs (Linux writes
/// GS_BASE in its first instructions) and reads of EFER. Returns true if handled;
/// everything else is bounced to the guest as #GP, as Xen does for unknown MSRs.
fn emulate_privileged(v: &mut Vcpu, ports: &mut PortAccess, f: &mut TrapFrame) -> bool {
    let mut insn = [0u8; 2];
    if guestmem::copy_from_guest(f.rip, &mut insn).is_err() {
        return false;
    }
    let msr = f.rcx as u32;
    match insn {
        [0x0f, 0x30] => {
            let value = (f.rdx << 32) | (f.rax & 0xffff_ffff);
            if !crate::guest_addr::is_canonical(value) {
                return false;
            }
            // SAFETY: the base MSRs exist; the value is canonical; the vCPU is running, so
            // the live MSRs are its own.
            unsafe {
                match msr {
                    cpu::MSR_FS_BASE => {
                        v.fs_base = value;
                        cpu::wrmsr(cpu::MSR_FS_BASE, value);
                    }
                    cpu::MSR_GS_BASE => {
                        if v.in_kernel {
                            v.gs_base_kernel = value;
                        } else {
                            v.gs_base_user = value;
                        }
                        cpu::wrmsr(cpu::MSR_GS_BASE, value);
                    }
                    // The inactive GS base: the user one while in kernel mode.
                    cpu::MSR_KERNEL_GS_BASE => v.gs_base_user = value,
                    _ => return false,
                }
            }
        }
        [0x0f, 0x32] => {
            // SAFETY: reading MSRs that exist on every x86_64 CPU.
            let value = unsafe {
                match msr {
                    cpu::MSR_FS_BASE => cpu::rdmsr(cpu::MSR_FS_BASE),
                    cpu::MSR_GS_BASE => cpu::rdmsr(cpu::MSR_GS_BASE),
                    cpu::MSR_KERNEL_GS_BASE => v.gs_base_user,
                    cpu::MSR_EFER => cpu::rdmsr(cpu::MSR_EFER),
                    _ => return false,
                }
            };
            f.rax = value & 0xffff_ffff;
            f.rdx = value >> 32;
        }
        _ => return emulate_cr_access(v, f) || emulate_port_io(v, ports, f),
    }
    f.rip += 2;
    true
}

/// Ports the hypervisor keeps for itself (PIC, PIT, speaker gate, CMOS/RTC, COM1, QEMU's
/// debug-exit, ACPI PM control, reset control): dom0 reads all-ones and its writes are
/// dropped, as Xen does for ports it denies the hardware domain.
fn port_reserved(port: u16) -> bool {
    matches!(port, 0x20..=0x21 | 0xa0..=0xa1 | 0x40..=0x43 | 0x61 | 0x70..=0x71 | 0x3f8..=0x3ff | 0xf4 | 0x604 | 0xcf9)
}

/// Whether an access of `size` bytes at `port` touches a reserved port. A doubleword at
/// 0xcf8 is PCI's configuration address register, not the reset control byte at 0xcf9
/// it overlaps (Xen tells the two apart the same way).
fn access_reserved(port: u16, size: u16) -> bool {
    if port == 0xcf8 && size == 4 {
        return false;
    }
    (0..size).any(|i| port_reserved(port.wrapping_add(i)))
}

/// The I/O ports a domain may use: the ranges it was given at boot (the hardware domain:
/// see `dom0::hardware_resources`) or by the toolstack (`DOMCTL_ioport_permission`), and
/// its virtual PCI configuration address register.
struct PortAccess {
    ranges: alloc::vec::Vec<(u32, u32)>,
    cf8: u32,
    /// Only the hardware domain reaches configuration space (Xen's `pci_cfg_ok`).
    hardware: bool,
}

impl PortAccess {
    fn allows(&self, port: u16, size: u16) -> bool {
        let (s, e) = (u32::from(port), u32::from(port) + u32::from(size));
        self.ranges.iter().any(|&(a, b)| a <= s && e <= b)
    }
}

/// `in`/`out` from a guest kernel whose virtual IOPL allows it (PHYSDEVOP_set_iopl);
/// without a sufficient IOPL the guest gets #GP as on hardware.
fn emulate_port_io(v: &mut Vcpu, ports: &mut PortAccess, f: &mut TrapFrame) -> bool {
    if v.iopl < 1 {
        return false;
    }
    let mut insn = [0u8; 3];
    if guestmem::copy_from_guest(f.rip, &mut insn[..1]).is_err() {
        return false;
    }
    let (op16, at) = if insn[0] == 0x66 {
        (true, 1)
    } else {
        (false, 0)
    };
    if guestmem::copy_from_guest(f.rip, &mut insn[..at + 2]).is_err()
        && guestmem::copy_from_guest(f.rip, &mut insn[..at + 1]).is_err()
    {
        return false;
    }
    let opcode = insn[at];
    let (port, len) = match opcode {
        0xe4..=0xe7 => (u16::from(insn[at + 1]), at + 2),
        0xec..=0xef => (f.rdx as u16, at + 1),
        _ => return false,
    };
    let size = match (opcode & 1, op16) {
        (0, _) => 1,
        (_, true) => 2,
        _ => 4,
    };
    let is_in = opcode & 2 == 0;
    // As Xen (guest_io_read/write): the virtual IOPL decides whether the instruction is
    // allowed at all; the domain's port permissions only decide whether it reaches the
    // hardware. Without them, reads see all-ones and writes are dropped (Linux domUs
    // probe PCI config space at 0xcf8 this way).
    // The configuration mechanism is emulated, never passed through (see `pci`).
    let config = (0xcf8..0xd00).contains(&port);
    let reserved =
        !ports.allows(port, size) || access_reserved(port, size) || (config && !ports.hardware);
    if is_in {
        let value: u32 = if reserved {
            u32::MAX
        } else if config {
            super::pci::guest_read(ports.cf8, port, size)
        } else {
            // SAFETY: the domain was granted this port (or is the hardware domain) and the
            // hypervisor does not keep it (both checked above).
            unsafe { super::port::inl_sized(port, size) }
        };
        let mask = if size == 4 {
            u64::from(u32::MAX)
        } else {
            (1u64 << (8 * size)) - 1
        };
        f.rax = if size == 4 {
            u64::from(value)
        } else {
            (f.rax & !mask) | (u64::from(value) & mask)
        };
    } else if !reserved && config {
        super::pci::guest_write(&mut ports.cf8, port, size, f.rax as u32);
    } else if !reserved {
        // SAFETY: as above.
        unsafe { super::port::outl_sized(port, size, f.rax as u32) };
    }
    f.rip += len as u64;
    true
}

/// `mov` from a control register, and `clts`, as Xen emulates them for a PV kernel:
/// CR0 shows the virtual TS, CR2 the last bounced fault address, CR3 the kernel page
/// table, CR4 the host's value. Writes other than `clts` are not emulated here.
fn emulate_cr_access(v: &mut Vcpu, f: &mut TrapFrame) -> bool {
    let mut insn = [0u8; 4];
    if guestmem::copy_from_guest(f.rip, &mut insn[..2]).is_err() {
        return false;
    }
    // cli/sti with a sufficient virtual IOPL: no-ops, as in Xen (the guest's interrupt
    // flag is its event mask, which it manages itself).
    if (insn[0] == 0xfa || insn[0] == 0xfb) && v.iopl >= 1 {
        f.rip += 1;
        return true;
    }
    if insn[..2] == [0x0f, 0x06] {
        v.fpu_ts = false;
        cpu::set_cr0_ts(false);
        f.rip += 2;
        return true;
    }
    // Optional REX (0x40-0x4f), then 0f 20 /r (mov r64, crN) or 0f 22 /r (mov crN, r64).
    let (rex, at) = if (0x40..0x50).contains(&insn[0]) {
        (insn[0], 1)
    } else {
        (0, 0)
    };
    if guestmem::copy_from_guest(f.rip, &mut insn[..at + 3]).is_err() {
        return false;
    }
    if insn[at] != 0x0f || (insn[at + 1] != 0x20 && insn[at + 1] != 0x22) {
        return false;
    }
    let write = insn[at + 1] == 0x22;
    let modrm = insn[at + 2];
    if modrm >> 6 != 3 {
        return false;
    }
    let cr = ((modrm >> 3) & 7) | if rex & 4 != 0 { 8 } else { 0 };
    let reg = (modrm & 7) | if rex & 1 != 0 { 8 } else { 0 };
    if write {
        let value = gprs(f)[usize::from(reg)];
        match cr {
            // Only TS may change (Xen's rule); anything else is refused with #GP.
            0 => {
                let cur = read_cr0_view(v);
                if (cur ^ value) & !8 != 0 {
                    return false;
                }
                v.fpu_ts = value & 8 != 0;
                cpu::set_cr0_ts(v.fpu_ts);
            }
            // The guest's CR4 is virtual: kept and read back, never loaded (the
            // hypervisor owns the real one; features behind it are hidden in CPUID).
            4 => v.cr4 = Some(value),
            _ => return false,
        }
        f.rip += (at + 3) as u64;
        return true;
    }
    let value = match cr {
        0 => read_cr0_view(v),
        2 => v.cr2(),
        3 => v.kernel_l4.raw() << 12,
        4 => v.cr4.unwrap_or_else(|| {
            let host: u64;
            // SAFETY: reading CR4 has no side effects.
            unsafe { core::arch::asm!("mov {}, cr4", out(reg) host, options(nomem, nostack)) };
            // Hide what a PV guest does not own: PGE (7), PCIDE (17), SMEP/SMAP (20/21).
            host & !((1 << 7) | (1 << 17) | (1 << 20) | (1 << 21))
        }),
        _ => return false,
    };
    set_gpr(f, reg, value);
    f.rip += (at + 3) as u64;
    true
}

/// CR0 as the guest sees it: the host's, with the guest's virtual TS.
fn read_cr0_view(v: &Vcpu) -> u64 {
    let host: u64;
    // SAFETY: reading CR0 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr0", out(reg) host, options(nomem, nostack)) };
    (host & !8) | if v.fpu_ts { 8 } else { 0 }
}

/// Writes general register `n` (SDM numbering) of a frame.
fn set_gpr(f: &mut TrapFrame, n: u8, value: u64) {
    match n {
        0 => f.rax = value,
        1 => f.rcx = value,
        2 => f.rdx = value,
        3 => f.rbx = value,
        4 => f.rsp = value,
        5 => f.rbp = value,
        6 => f.rsi = value,
        7 => f.rdi = value,
        8 => f.r8 = value,
        9 => f.r9 = value,
        10 => f.r10 = value,
        11 => f.r11 = value,
        12 => f.r12 = value,
        13 => f.r13 = value,
        14 => f.r14 = value,
        _ => f.r15 = value,
    }
}

/// The frame's general registers in SDM order.
fn gprs(f: &TrapFrame) -> [u64; 16] {
    [
        f.rax, f.rcx, f.rdx, f.rbx, f.rsp, f.rbp, f.rsi, f.rdi, f.r8, f.r9, f.r10, f.r11, f.r12,
        f.r13, f.r14, f.r15,
    ]
}

/// Writable page tables (Xen's ptwr): a guest-kernel write to a read-only mapping of one
/// of its own L1 tables is decoded, validated and performed, then the guest resumes
/// after the instruction. Returns true if the fault was consumed (emulated, or to be
/// retried); false leaves it to be bounced as #PF.
fn try_ptwr(hv: &mut Hypervisor, di: usize, vi: usize, f: &mut TrapFrame) -> bool {
    // Present + write, not user (as the guest sees it), not reserved, not fetch.
    let e = f.error_code;
    if e & 0b1_1011 != 0b11 {
        return false;
    }
    let d = &hv.domains[di];
    let v = &d.vcpus[vi];
    if !v.in_kernel || d.vm_assist & (1 << xen_abi::xen::VMASST_TYPE_WRITABLE_PAGETABLES) == 0 {
        return false;
    }
    let cr2 = cpu::read_cr2();
    let Ok((l1_of_va, idx)) = super::memhc::l1_slot(v.kernel_l4, cr2) else {
        return false;
    };
    let target = mm::read_entry(l1_of_va, idx);
    if target & mm::pte::P == 0 {
        return false;
    }
    let table = xen_abi::Mfn::new((target & mm::pte::ADDR_MASK) >> 12);
    let dom = d.id;
    let is_l1 = super::pv::with(|p, _| {
        p.page(table).is_some_and(|pi| {
            pi.owner == crate::pvmm::Owner::Dom(dom)
                && pi.ty == crate::pvmm::PageType::L1
                && pi.type_count > 0
                && pi.validated
        })
    });
    if !is_l1 {
        return false;
    }
    let mut insn = [0u8; crate::ptwr::MAX_INSN_LEN];
    let mut len = 0;
    while len < insn.len()
        && guestmem::copy_from_guest(f.rip + len as u64, &mut insn[len..len + 1]).is_ok()
    {
        len += 1;
    }
    let mut regs = crate::ptwr::Regs {
        gpr: gprs(f),
        rip: f.rip,
        rflags: f.rflags,
        fs_base: v.fs_base,
        gs_base: if v.in_kernel {
            v.gs_base_kernel
        } else {
            v.gs_base_user
        },
    };
    // SAFETY: reading the live FS/GS bases of the running vCPU.
    unsafe {
        regs.fs_base = cpu::rdmsr(cpu::MSR_FS_BASE);
        regs.gs_base = cpu::rdmsr(cpu::MSR_GS_BASE);
    }
    let mut access = PtwrAccess {
        dom,
        table,
        page_va: cr2 & !0xfff,
    };
    match crate::ptwr::emulate(&insn[..len], &mut regs, cr2, &mut access) {
        Ok(()) => {
            let g = regs.gpr;
            (f.rax, f.rcx, f.rdx, f.rbx, f.rsp, f.rbp, f.rsi, f.rdi) =
                (g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]);
            (f.r8, f.r9, f.r10, f.r11, f.r12, f.r13, f.r14, f.r15) =
                (g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
            f.rip = regs.rip;
            // Keep only the arithmetic flags the emulation may change.
            const ARITH: u64 = 0x8d5;
            f.rflags = (f.rflags & !ARITH) | (regs.rflags & ARITH);
            cpu::invlpg(cr2);
            true
        }
        Err(crate::ptwr::EmulateError::Retry) => true,
        Err(_) => false,
    }
}

/// The faulting page-table page as the emulator sees it.
struct PtwrAccess {
    dom: xen_abi::DomId,
    table: xen_abi::Mfn,
    page_va: u64,
}

impl crate::ptwr::PteAccess for PtwrAccess {
    fn read_entry(&mut self, entry_addr: u64) -> Result<u64, crate::ptwr::Fault> {
        if entry_addr & !0xfff != self.page_va {
            return Err(crate::ptwr::Fault(xen_abi::Errno::EFAULT));
        }
        Ok(mm::read_entry(
            self.table,
            ((entry_addr & 0xfff) / 8) as usize,
        ))
    }

    fn update_entry(
        &mut self,
        entry_addr: u64,
        old: u64,
        new: u64,
    ) -> Result<Result<(), u64>, crate::ptwr::Fault> {
        if entry_addr & !0xfff != self.page_va {
            return Err(crate::ptwr::Fault(xen_abi::Errno::EFAULT));
        }
        let index = ((entry_addr & 0xfff) / 8) as usize;
        let current = mm::read_entry(self.table, index);
        // The hardware may have set A/D bits since the read: compare without them.
        const AD: u64 = mm::pte::A | mm::pte::D;
        if current & !AD != old & !AD {
            return Ok(Err(current));
        }
        let (dom, maddr) = (self.dom, (self.table.raw() << 12) + index as u64 * 8);
        super::pv::with(|p, mem| p.mmu_update_pt(mem, dom, dom, maddr, new, false))
            .map(|_| Ok(()))
            .map_err(crate::ptwr::Fault)
    }
}

/// `ud2; .ascii "xen"; cpuid` → emulated cpuid with Xen's leaves. Returns true if handled.
fn emulate_forced_cpuid(f: &mut TrapFrame) -> bool {
    let mut insn = [0u8; 7];
    if guestmem::copy_from_guest(f.rip, &mut insn).is_err() {
        return false;
    }
    if insn[..5] != xen_abi::xen::XEN_EMULATE_PREFIX || insn[5..] != [0x0f, 0xa2] {
        return false;
    }
    let r = guest_cpuid(f.rax as u32, f.rcx as u32);
    f.rax = u64::from(r[0]);
    f.rbx = u64::from(r[1]);
    f.rcx = u64::from(r[2]);
    f.rdx = u64::from(r[3]);
    f.rip += 7;
    true
}

/// The CPUID a PV guest sees: the host's, with what a PV guest must not use hidden, and
/// Xen's leaves at 0x40000000.
pub fn guest_cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let base = xen_abi::xen::XEN_CPUID_FIRST_LEAF;
    if (base..base + 0x100).contains(&leaf) {
        let sig = xen_abi::xen::XEN_CPUID_SIGNATURE;
        let w = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
        return match leaf - base {
            0 => [base + 2, w(0), w(4), w(8)],
            1 => [
                (super::hypercall::XEN_MAJOR << 16) | super::hypercall::XEN_MINOR,
                0,
                0,
                0,
            ],
            // One hypercall page; no MSR to request it (PV guests get it from the builder).
            2 => [1, 0, 0, 0],
            _ => [0; 4],
        };
    }
    let mut r = cpu::cpuid(leaf, subleaf);
    match leaf {
        1 => {
            // Hide MONITOR(3), VMX(5), x2APIC(21), TSC-deadline(24), XSAVE(26), OSXSAVE(27),
            // AVX(28), hypervisor-unfriendly bits; set the hypervisor bit (31).
            r[2] &=
                !((1 << 3) | (1 << 5) | (1 << 21) | (1 << 24) | (1 << 26) | (1 << 27) | (1 << 28));
            r[2] |= 1 << 31;
            // Hide PSE(3), PGE(13), MTRR(12), MCE/MCA(7,14), APIC(9) as Xen does for PV.
            r[3] &= !((1 << 3) | (1 << 13) | (1 << 12) | (1 << 7) | (1 << 14) | (1 << 9));
        }
        7 if subleaf == 0 => {
            // Hide FSGSBASE(0), SMEP(7), INVPCID(10), SMAP(20), PKU(ecx 3), LA57(ecx 16),
            // AVX2(5), AVX512: the guest's CR4 is virtual, so it cannot enable them.
            r[1] &= !((1 << 0) | (1 << 7) | (1 << 10) | (1 << 20) | (1 << 5) | (0xffff << 16));
            r[2] &= !((1 << 3) | (1 << 16));
        }
        0x8000_0001 => {
            // Hide SVM(ecx 2) and 1 GiB pages (edx 26).
            r[2] &= !(1 << 2);
            r[3] &= !(1 << 26);
        }
        _ => {}
    }
    r
}

/// Crashes domain `di`: logs the reason and the guest's registers; for dom0 this ends
/// the machine as Xen does (reboot, or halt under `noreboot`).
pub fn crash_domain(hv: &mut Hypervisor, di: usize, why: &str, f: &TrapFrame) {
    let d = &mut hv.domains[di];
    crate::xerr!("Domain {} crashed: {}\n", d.id.raw(), why);
    dump_regs(f);
    d.shutdown = Some(Shutdown::Crashed);
    for v in d.vcpus.iter_mut() {
        v.state = RunState::Down;
    }
    domain_shut_down(hv, di);
}

/// Reacts to a domain that stopped: dom0 ends the machine; others notify dom0.
pub fn domain_shut_down(hv: &mut Hypervisor, di: usize) {
    let d = &hv.domains[di];
    if d.id.raw() == 0 {
        match d.shutdown {
            Some(Shutdown::Crashed) | Some(Shutdown::Requested(xen_abi::sched::SHUTDOWN_CRASH)) => {
                if hv.options.noreboot {
                    crate::xerr!("Hardware Dom0 crashed: 'noreboot' set - not rebooting.\n");
                    super::power::halt();
                } else {
                    crate::xerr!("Hardware Dom0 crashed: rebooting machine\n");
                    super::power::reboot();
                }
            }
            Some(Shutdown::Requested(xen_abi::sched::SHUTDOWN_REBOOT)) => {
                crate::xinfo!("Hardware Dom0 shutdown: rebooting machine\n");
                super::power::reboot();
            }
            _ => {
                crate::xinfo!("Hardware Dom0 halted: halting machine\n");
                super::power::poweroff();
            }
        }
    }
    if let Some(d0) = hv.domains.first_mut() {
        let _ = d0.send_virq(xen_abi::xen::VIRQ_DOM_EXC, 0);
    }
}

/// Entry of every `syscall` from a guest (entry.S): a hypercall in guest-kernel mode, a
/// system call of the guest's user space otherwise.
#[unsafe(no_mangle)]
extern "C" fn syscall_dispatch(f: &mut TrapFrame) {
    debug_assert_eq!(f.vector, VECTOR_SYSCALL);
    let in_kernel = {
        let hv = HV.lock();
        hv.current
            .is_some_and(|(di, vi)| hv.domains[di].vcpus[vi].in_kernel)
    };
    if in_kernel {
        super::hypercall::dispatch(f);
    } else {
        user_syscall(f);
    }
    exit_to_guest(f);
}

/// A guest user's `syscall`: bounce to the kernel's syscall callback (ABI.md 1.10/1.11),
/// or raise #UD at the instruction if none is registered.
fn user_syscall(f: &mut TrapFrame) {
    let mut hv = HV.lock();
    let Some((di, vi)) = hv.current else {
        return;
    };
    let v = &mut hv.domains[di].vcpus[vi];
    let cb = v.syscall_callback;
    // The frame's user RIP/RFLAGS came from RCX/R11; CS/SS are the flat selectors.
    f.cs = u64::from(xen_abi::xen::FLAT_USER_CS);
    f.ss = u64::from(xen_abi::xen::FLAT_USER_SS);
    if cb == 0 {
        f.rip -= 2;
        let ud = v.traps[6];
        if ud.address == 0 || bounce(v, f, ud.address, None, ud.flags & 4 != 0).is_err() {
            crash_domain(
                &mut hv,
                di,
                "user syscall with no syscall callback and no #UD handler",
                f,
            );
        }
        return;
    }
    let mask = v.syscall_masks_events;
    if bounce(v, f, cb, None, mask).is_err() {
        crash_domain(
            &mut hv,
            di,
            "syscall frame could not be written to the kernel stack",
            f,
        );
    }
}
