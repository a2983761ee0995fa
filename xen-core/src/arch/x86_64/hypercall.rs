//! Hypercall dispatch for PV guests (Xen's `pv_hypercall`): decode the registers
//! (rax = number; rdi, rsi, rdx, r10, r8 = arguments), copy guest structures in once,
//! validate, act, copy results out, and answer with 0/positive or -errno in rax.
//! Unknown hypercalls and sub-ops answer -ENOSYS, unreadable guest pointers -EFAULT.

use super::domain::{Domain, Hypervisor, RunState, Shutdown, HV};
use super::frame::TrapFrame;
use super::guestmem::{self, copy_from_guest, copy_to_guest};
use super::mm::{self, FRAMES};
use super::{cpu, memhc, time, trap};
use crate::evtchn::{self, CloseEffect, SendTarget};
use crate::guest_addr::is_canonical;
use xen_abi::event_channel as ec;
use xen_abi::hypercall as nr;
use xen_abi::{xen, DomId, Errno, EvtchnPort, Mfn, VcpuId};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// The Xen version rxen reports (its ABI level).
pub const XEN_MAJOR: u32 = 4;
/// Minor version.
pub const XEN_MINOR: u32 = 19;
const XEN_EXTRA: &[u8] = b"-rxen";

pub(super) type HcResult = Result<i64, Errno>;

/// What a hypercall asks of the exit path besides a return value.
pub(super) enum Outcome {
    /// Put this value (or -errno) in rax.
    Return(HcResult),
    /// The frame was rewritten (iret): leave rax alone.
    FrameSet,
    /// Re-execute the hypercall later with updated arguments (a continuation).
    Continue,
}

pub(super) struct Ctx<'a> {
    pub(super) hv: &'a mut Hypervisor,
    pub(super) di: usize,
    pub(super) vi: usize,
    /// Running an entry of a multicall: long operations must not preempt themselves.
    pub(super) in_multicall: bool,
}

impl Ctx<'_> {
    pub(super) fn dom(&mut self) -> &mut Domain {
        &mut self.hv.domains[self.di]
    }
    pub(super) fn vcpu(&mut self) -> &mut super::domain::Vcpu {
        let (di, vi) = (self.di, self.vi);
        &mut self.hv.domains[di].vcpus[vi]
    }
    pub(super) fn domid(&self) -> DomId {
        self.hv.domains[self.di].id
    }
    pub(super) fn privileged(&self) -> bool {
        self.hv.domains[self.di].privileged
    }
}

/// Handles the hypercall in the frame of the running vCPU.
pub fn dispatch(f: &mut TrapFrame) {
    let mut hv = HV.lock();
    let Some((di, vi)) = hv.current else {
        return;
    };
    let mut ctx = Ctx {
        hv: &mut hv,
        di,
        vi,
        in_multicall: false,
    };
    let number = f.rax;
    let args = [f.rdi, f.rsi, f.rdx, f.r10, f.r8];
    match call(&mut ctx, f, number, args) {
        Outcome::Return(r) => {
            if r == Err(Errno::ENOSYS) {
                note_unimplemented(ctx.domid(), number, args[0]);
            }
            f.rax = ret(r)
        }
        Outcome::FrameSet => {}
        Outcome::Continue => {
            // Re-execute `syscall` (2 bytes) with rax still the hypercall number.
            f.rip = f.rip.wrapping_sub(2);
            f.rax = number;
        }
    }
}

/// Logs (once per hypercall and first argument) a hypercall answered with -ENOSYS, so
/// that bringing up a new guest shows what it asks for.
fn note_unimplemented(dom: DomId, number: u64, arg0: u64) {
    static SEEN: spin::Mutex<alloc::vec::Vec<(u64, u64)>> =
        spin::Mutex::new(alloc::vec::Vec::new());
    let mut seen = SEEN.lock();
    if seen.len() < 256 && !seen.contains(&(number, arg0)) {
        seen.push((number, arg0));
        crate::xdebug!(
            "d{} hypercall {} (first argument {:#x}) answered -ENOSYS\n",
            dom.raw(),
            number,
            arg0
        );
    }
}

pub(super) fn ret(r: HcResult) -> u64 {
    match r {
        Ok(v) => v as u64,
        Err(e) => e.to_ret() as u64,
    }
}

fn call(ctx: &mut Ctx, f: &mut TrapFrame, number: u64, a: [u64; 5]) -> Outcome {
    use Outcome::Return;
    match number {
        nr::IRET => iret(ctx, f),
        nr::MULTICALL => multicall(ctx, f, a[0], a[1]),
        nr::MMU_UPDATE => memhc::mmu_update(ctx, f, a[0], a[1], a[2], a[3] as u32),
        nr::MMUEXT_OP => memhc::mmuext_op(ctx, f, a[0], a[1], a[2], a[3] as u32),
        nr::MEMORY_OP => memhc::memory_op(ctx, f, a[0], a[1]),
        nr::GRANT_TABLE_OP => {
            super::granthc::grant_table_op_batched(ctx, f, a[0] as u32, a[1], a[2] as u32)
        }
        nr::SCHED_OP => sched_op(ctx, f, a[0] as u32, a[1]),
        _ => Return(simple(ctx, f, number, a)),
    }
}

/// Hypercalls that only produce a value (usable from multicall).
fn simple(ctx: &mut Ctx, f: &mut TrapFrame, number: u64, a: [u64; 5]) -> HcResult {
    match number {
        nr::SET_TRAP_TABLE => set_trap_table(ctx, a[0]),
        nr::STACK_SWITCH => {
            ctx.vcpu().kernel_sp = a[1];
            Ok(0)
        }
        nr::SET_CALLBACKS => {
            let v = ctx.vcpu();
            v.event_callback = a[0];
            v.failsafe_callback = a[1];
            v.syscall_callback = a[2];
            v.syscall_masks_events = false;
            Ok(0)
        }
        nr::FPU_TASKSWITCH => {
            let set = a[0] as u32 != 0;
            ctx.vcpu().fpu_ts = set;
            cpu::set_cr0_ts(set);
            Ok(0)
        }
        nr::UPDATE_VA_MAPPING => memhc::update_va_mapping(ctx, a[0], a[1], a[2]),
        nr::SET_GDT => memhc::set_gdt(ctx, a[0], a[1]),
        nr::UPDATE_DESCRIPTOR => memhc::update_descriptor(ctx, a[0], a[1]),
        nr::SET_TIMER_OP => {
            ctx.vcpu().singleshot = if a[0] == 0 { None } else { Some(a[0]) };
            Ok(0)
        }
        nr::XEN_VERSION => xen_version(ctx, a[0] as u32, a[1]),
        nr::CONSOLE_IO => console_io(ctx, a[0] as u32, a[1], a[2]),
        nr::VM_ASSIST => vm_assist(ctx, a[0] as u32, a[1]),
        nr::VCPU_OP => vcpu_op(ctx, a[0] as u32, a[1], a[2]),
        nr::SET_SEGMENT_BASE => set_segment_base(ctx, a[0] as u32, a[1]),
        nr::CALLBACK_OP => callback_op(ctx, a[0] as u32, a[1]),
        nr::EVENT_CHANNEL_OP => event_channel_op(ctx, a[0] as u32, a[1]),
        nr::SYSCTL => sysctl(ctx, a[0]),
        nr::DOMCTL => super::domctl::domctl(ctx, a[0]),
        nr::PHYSDEV_OP => physdev_op(ctx, a[0] as u32, a[1]),
        nr::SET_DEBUGREG => set_debugreg(ctx, a[0], a[1]),
        nr::GET_DEBUGREG => get_debugreg(ctx, a[0]),
        _ => {
            let _ = f;
            Err(Errno::ENOSYS)
        }
    }
}

// ---------------------------------------------------------------------------------
// Traps and callbacks.

fn set_trap_table(ctx: &mut Ctx, table: u64) -> HcResult {
    if table == 0 {
        for t in ctx.vcpu().traps.iter_mut() {
            *t = Default::default();
        }
        return Ok(0);
    }
    // At most one entry per vector plus the terminator is meaningful; more is a loop we bound.
    for i in 0..1024u64 {
        let e: xen::TrapInfo = guestmem::read(table + i * 16)?;
        if e.address == 0 {
            return Ok(0);
        }
        if !is_canonical(e.address) {
            return Err(Errno::EINVAL);
        }
        let v = ctx.vcpu();
        v.traps[usize::from(e.vector)] = super::domain::TrapEntry {
            address: e.address,
            flags: e.flags,
        };
    }
    Err(Errno::EINVAL)
}

fn callback_op(ctx: &mut Ctx, cmd: u32, arg: u64) -> HcResult {
    use xen_abi::callback as cb;
    match cmd {
        cb::CALLBACKOP_REGISTER => {
            let r: cb::CallbackRegister = guestmem::read(arg)?;
            if !is_canonical(r.address) {
                return Err(Errno::EINVAL);
            }
            let mask = r.flags & cb::CALLBACKF_MASK_EVENTS != 0;
            let v = ctx.vcpu();
            match r.kind {
                cb::CALLBACKTYPE_EVENT => v.event_callback = r.address,
                cb::CALLBACKTYPE_FAILSAFE => v.failsafe_callback = r.address,
                cb::CALLBACKTYPE_SYSCALL => {
                    v.syscall_callback = r.address;
                    v.syscall_masks_events = mask;
                }
                // 32-bit compat entries and NMI are accepted; rxen runs no 32-bit user code.
                cb::CALLBACKTYPE_SYSCALL32 | cb::CALLBACKTYPE_SYSENTER | cb::CALLBACKTYPE_NMI => {}
                _ => return Err(Errno::ENOSYS),
            }
            Ok(0)
        }
        cb::CALLBACKOP_UNREGISTER => {
            let r: cb::CallbackUnregister = guestmem::read(arg)?;
            match r.kind {
                cb::CALLBACKTYPE_NMI => Ok(0),
                // Xen refuses to unregister the entries a PV guest cannot live without.
                _ => Err(Errno::EINVAL),
            }
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// The `iret` hypercall (ABI.md 1.9).
fn iret(ctx: &mut Ctx, f: &mut TrapFrame) -> Outcome {
    let frame: xen::IretContext = match guestmem::read(f.rsp) {
        Ok(fr) => fr,
        Err(_) => {
            trap::crash_domain(ctx.hv, ctx.di, "iret frame unreadable", f);
            return Outcome::FrameSet;
        }
    };
    let to_user = frame.cs & 3 == 3;
    let v = ctx.vcpu();
    if to_user {
        if v.user_l4.is_none() {
            trap::crash_domain(
                ctx.hv,
                ctx.di,
                "switching to user mode with no user page tables",
                f,
            );
            return Outcome::FrameSet;
        }
        trap::switch_mode(v, false);
    }
    if frame.flags & xen::VGCF_IN_SYSCALL == 0 {
        f.r11 = frame.r11;
        f.rcx = frame.rcx;
    }
    f.rip = frame.rip;
    f.rsp = frame.rsp;
    f.cs = frame.cs | 3;
    f.ss = frame.ss | 3;
    // Architectural flags only; IOPL and VM cleared; IF forced on in hardware.
    const KEEP: u64 = 0x0000_0000_003f_0fd5 & !(3 << 12) & !(1 << 17);
    f.rflags = (frame.rflags & KEEP) | (1 << 9) | 2;
    f.rax = frame.rax;
    v.set_upcall_mask(frame.rflags & (1 << 9) == 0);
    Outcome::FrameSet
}

// ---------------------------------------------------------------------------------
// Scheduling.

fn sched_op(ctx: &mut Ctx, f: &mut TrapFrame, cmd: u32, arg: u64) -> Outcome {
    use xen_abi::sched as s;
    let r = match cmd {
        s::SCHEDOP_YIELD => {
            ctx.hv.yield_requested = true;
            Ok(0)
        }
        s::SCHEDOP_BLOCK => {
            // Blocking enables event delivery; an upcall already pending wakes at once.
            let v = ctx.vcpu();
            v.set_upcall_mask(false);
            if !v.upcall_pending() {
                v.state = RunState::Blocked;
            }
            Ok(0)
        }
        s::SCHEDOP_SHUTDOWN => match guestmem::read::<s::SchedShutdown>(arg) {
            Ok(sd) => {
                shutdown(ctx, sd.reason & 0xff);
                f.rax = 0;
                return Outcome::FrameSet;
            }
            Err(e) => Err(e),
        },
        s::SCHEDOP_SHUTDOWN_CODE => match guestmem::read::<s::SchedShutdown>(arg) {
            Ok(sd) => {
                ctx.dom().shutdown_code = Some(sd.reason);
                Ok(0)
            }
            Err(e) => Err(e),
        },
        s::SCHEDOP_POLL => poll(ctx, arg),
        s::SCHEDOP_REMOTE_SHUTDOWN => {
            if !ctx.privileged() {
                Err(Errno::EPERM)
            } else {
                match guestmem::read::<s::SchedRemoteShutdown>(arg) {
                    Ok(r) => match ctx.hv.find(DomId::new(r.domain_id)) {
                        Some(ti) => {
                            let target = ctx.hv.domains[ti].id;
                            if target == ctx.domid() {
                                shutdown(ctx, r.reason & 0xff);
                            } else {
                                ctx.hv.domains[ti].shutdown =
                                    Some(Shutdown::Requested(r.reason & 0xff));
                                trap::domain_shut_down(ctx.hv, ti);
                            }
                            Ok(0)
                        }
                        None => Err(Errno::ESRCH),
                    },
                    Err(e) => Err(e),
                }
            }
        }
        _ => Err(Errno::ENOSYS),
    };
    Outcome::Return(r)
}

fn shutdown(ctx: &mut Ctx, reason: u32) {
    let d = ctx.dom();
    if d.shutdown.is_some() {
        return;
    }
    crate::xinfo!("Domain {} shutdown: reason {}\n", d.id.raw(), reason);
    d.shutdown = Some(Shutdown::Requested(reason));
    for v in d.vcpus.iter_mut() {
        v.state = RunState::Down;
    }
    let di = ctx.di;
    trap::domain_shut_down(ctx.hv, di);
}

fn poll(ctx: &mut Ctx, arg: u64) -> HcResult {
    let p: xen_abi::sched::SchedPoll = guestmem::read(arg)?;
    if p.nr_ports > 128 {
        return Err(Errno::EINVAL);
    }
    let mut ports = arrayvec::ArrayVec::<u32, 128>::new();
    for i in 0..u64::from(p.nr_ports) {
        let port: u32 = guestmem::read(p.ports.wrapping_add(i * 4))?;
        ports.push(port);
    }
    let d = ctx.dom();
    let bits = d.bits();
    for &port in &ports {
        if d.evtchn.poll(EvtchnPort::new(port), &bits)? {
            return Ok(0);
        }
    }
    let now = time::now();
    if p.timeout != 0 && p.timeout <= now {
        return Ok(0);
    }
    let v = ctx.vcpu();
    v.poll_ports = ports;
    v.poll_deadline = if p.timeout == 0 {
        None
    } else {
        Some(p.timeout)
    };
    v.state = RunState::Polling;
    Ok(0)
}

fn multicall(ctx: &mut Ctx, f: &mut TrapFrame, list: u64, count: u64) -> Outcome {
    let start = time::now();
    let count = count as u32;
    for i in 0..count {
        let va = list.wrapping_add(u64::from(i) * 64);
        let mut e: xen_abi::hypercall::MulticallEntry = match guestmem::read(va) {
            Ok(e) => e,
            Err(e) => return Outcome::Return(Err(e)),
        };
        let a = [e.args[0], e.args[1], e.args[2], e.args[3], e.args[4]];
        let r = match e.op {
            // Neither nests: iret rewrites the frame and multicall would recurse.
            nr::IRET | nr::MULTICALL => Err(Errno::EINVAL),
            nr::SCHED_OP | nr::MMU_UPDATE | nr::MMUEXT_OP | nr::MEMORY_OP | nr::GRANT_TABLE_OP => {
                // Run to completion inside a multicall (no continuation of one entry).
                let mut scratch = *f;
                ctx.in_multicall = true;
                let outcome = call(ctx, &mut scratch, e.op, a);
                ctx.in_multicall = false;
                match outcome {
                    Outcome::Return(r) => r,
                    Outcome::FrameSet => Ok(scratch.rax as i64),
                    Outcome::Continue => Err(Errno::EAGAIN),
                }
            }
            op => simple(ctx, f, op, a),
        };
        e.result = ret(r);
        if guestmem::write(va + 8, &e.result).is_err() {
            return Outcome::Return(Err(Errno::EFAULT));
        }
        if ctx.dom().shutdown.is_some() {
            return Outcome::FrameSet;
        }
        // A long batch yields to the tick: continue where it stopped.
        if i + 1 < count && time::now().saturating_sub(start) > 1_000_000 {
            f.rdi = list.wrapping_add(u64::from(i + 1) * 64);
            f.rsi = u64::from(count - i - 1);
            return Outcome::Continue;
        }
    }
    Outcome::Return(Ok(0))
}

// ---------------------------------------------------------------------------------
// Version, console, assists.

fn copy_str_out(dst: u64, s: &[u8], size: usize) -> HcResult {
    let mut buf = alloc::vec![0u8; size];
    let n = s.len().min(size - 1);
    buf[..n].copy_from_slice(&s[..n]);
    copy_to_guest(dst, &buf)?;
    Ok(0)
}

fn xen_version(ctx: &mut Ctx, cmd: u32, arg: u64) -> HcResult {
    use xen_abi::version as ver;
    match cmd {
        ver::XENVER_VERSION => Ok(i64::from((XEN_MAJOR << 16) | XEN_MINOR)),
        ver::XENVER_EXTRAVERSION => copy_str_out(arg, XEN_EXTRA, 16),
        ver::XENVER_COMPILE_INFO => {
            let mut ci = ver::XenCompileInfo::new_zeroed();
            fill(&mut ci.compiler, b"rustc 1.95.0");
            fill(&mut ci.compile_by, b"rxen");
            fill(&mut ci.compile_domain, b"rxen.invalid");
            fill(&mut ci.compile_date, b"2026");
            copy_to_guest(arg, ci.as_bytes())?;
            Ok(0)
        }
        ver::XENVER_CAPABILITIES => copy_str_out(arg, b"xen-3.0-x86_64", 1024),
        ver::XENVER_CHANGESET => copy_str_out(arg, b"rxen", 64),
        ver::XENVER_PLATFORM_PARAMETERS => {
            guestmem::write(arg, &xen::HYPERVISOR_VIRT_START)?;
            Ok(0)
        }
        ver::XENVER_GET_FEATURES => {
            let mut fi: ver::XenFeatureInfo = guestmem::read(arg)?;
            if fi.submap_idx >= xen_abi::features::XENFEAT_NR_SUBMAPS {
                return Err(Errno::EINVAL);
            }
            fi.submap = supported_features(ctx.privileged());
            guestmem::write(arg, &fi)?;
            Ok(0)
        }
        // Xen insists on a NULL argument here.
        ver::XENVER_PAGESIZE if arg != 0 => Err(Errno::EINVAL),
        ver::XENVER_PAGESIZE => Ok(4096),
        ver::XENVER_GUEST_HANDLE => {
            copy_to_guest(arg, &[0u8; 16])?;
            Ok(0)
        }
        ver::XENVER_COMMANDLINE => {
            if !ctx.privileged() {
                return Err(Errno::EPERM);
            }
            copy_str_out(arg, super::boot_cmdline().as_bytes(), 1024)
        }
        _ => Err(Errno::ENOSYS),
    }
}

fn fill(dst: &mut [u8], s: &[u8]) {
    let n = s.len().min(dst.len().saturating_sub(1));
    dst[..n].copy_from_slice(&s[..n]);
}

/// XENFEAT bits rxen offers a PV guest (submap 0).
pub fn supported_features(dom0: bool) -> u32 {
    use xen_abi::features as ft;
    let mut m = (1 << ft::XENFEAT_WRITABLE_DESCRIPTOR_TABLES)
        | (1 << ft::XENFEAT_PAE_PGDIR_ABOVE_4GB)
        | (1 << ft::XENFEAT_MMU_PT_UPDATE_PRESERVE_AD)
        | (1 << ft::XENFEAT_GNTTAB_MAP_AVAIL_BITS);
    if dom0 {
        m |= 1 << ft::XENFEAT_DOM0;
    }
    m
}

fn console_io(ctx: &mut Ctx, cmd: u32, count: u64, buf: u64) -> HcResult {
    match cmd {
        xen::CONSOLEIO_WRITE => {
            let mut chunk = [0u8; 256];
            let mut done = 0u64;
            // Bounded: at most 64 KiB per call, as a guest could pass any count.
            let count = count.min(65536);
            while done < count {
                let n = (count - done).min(256) as usize;
                copy_from_guest(buf + done, &mut chunk[..n])?;
                super::console::guest_write(&chunk[..n]);
                done += n as u64;
            }
            Ok(0)
        }
        xen::CONSOLEIO_READ => {
            if !ctx.privileged() {
                return Err(Errno::EPERM);
            }
            let mut chunk = [0u8; 256];
            let n = super::console::read_input(&mut chunk[..count.min(256) as usize]);
            copy_to_guest(buf, &chunk[..n])?;
            Ok(n as i64)
        }
        _ => Err(Errno::ENOSYS),
    }
}

fn vm_assist(ctx: &mut Ctx, cmd: u32, kind: u64) -> HcResult {
    // What Xen accepts for a 64-bit PV guest.
    let valid: u64 = (1 << xen::VMASST_TYPE_4GB_SEGMENTS)
        | (1 << xen::VMASST_TYPE_4GB_SEGMENTS_NOTIFY)
        | (1 << xen::VMASST_TYPE_WRITABLE_PAGETABLES)
        | (1 << xen::VMASST_TYPE_PAE_EXTENDED_CR3)
        | (1 << xen::VMASST_TYPE_ARCHITECTURAL_IOPL)
        | (1 << xen::VMASST_TYPE_RUNSTATE_UPDATE_FLAG)
        | (1 << xen::VMASST_TYPE_M2P_STRICT);
    if kind >= 64 || valid & (1 << kind) == 0 {
        return Err(Errno::EINVAL);
    }
    match cmd {
        xen::VMASST_CMD_ENABLE => ctx.dom().vm_assist |= 1 << kind,
        xen::VMASST_CMD_DISABLE => ctx.dom().vm_assist &= !(1 << kind),
        _ => return Err(Errno::ENOSYS),
    }
    Ok(0)
}

fn set_segment_base(ctx: &mut Ctx, which: u32, base: u64) -> HcResult {
    let canonical = is_canonical(base);
    let v = ctx.vcpu();
    match which {
        xen::SEGBASE_FS | xen::SEGBASE_GS_USER | xen::SEGBASE_GS_KERNEL if !canonical => {
            Err(Errno::EINVAL)
        }
        xen::SEGBASE_FS => {
            v.fs_base = base;
            // SAFETY: FS_BASE exists; the value is canonical.
            unsafe { cpu::wrmsr(cpu::MSR_FS_BASE, base) };
            Ok(0)
        }
        xen::SEGBASE_GS_USER => {
            v.gs_base_user = base;
            Ok(0)
        }
        xen::SEGBASE_GS_KERNEL => {
            v.gs_base_kernel = base;
            // SAFETY: GS_BASE exists; the value is canonical; hypercalls run in kernel mode.
            unsafe { cpu::wrmsr(cpu::MSR_GS_BASE, base) };
            Ok(0)
        }
        xen::SEGBASE_GS_USER_SEL => {
            // Flat descriptors only: the user GS base becomes 0 for any selector we hold.
            v.gs_base_user = 0;
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

// ---------------------------------------------------------------------------------
// Physical devices and debug registers.

fn physdev_op(ctx: &mut Ctx, cmd: u32, arg: u64) -> HcResult {
    use xen_abi::physdev as pd;
    match cmd {
        pd::PHYSDEVOP_SET_IOPL => {
            let s: pd::PhysdevSetIopl = guestmem::read(arg)?;
            if s.iopl > 3 {
                return Err(Errno::EINVAL);
            }
            ctx.vcpu().iopl = s.iopl;
            Ok(0)
        }
        pd::PHYSDEVOP_MAP_PIRQ => {
            let mut m: pd::PhysdevMapPirq = guestmem::read(arg)?;
            let ti = pirq_target(ctx, m.domid)?;
            let r = super::irq::map_pirq(&mut ctx.hv.domains[ti], &m);
            if let Ok(pirq) = r {
                m.pirq = pirq as i32;
            }
            // Xen copies the structure back whatever the outcome.
            guestmem::write(arg, &m)?;
            r.map(|_| 0)
        }
        pd::PHYSDEVOP_UNMAP_PIRQ => {
            let u: pd::PhysdevUnmapPirq = guestmem::read(arg)?;
            let ti = pirq_target(ctx, u.domid)?;
            super::irq::unmap(&mut ctx.hv.domains[ti], u.pirq).map(|()| 0)
        }
        pd::PHYSDEVOP_IRQ_STATUS_QUERY => {
            let mut q: pd::PhysdevIrqStatusQuery = guestmem::read(arg)?;
            if ctx.dom().pirqs.in_range(i64::from(q.irq as i32)).is_none() {
                return Err(Errno::EINVAL);
            }
            // Xen always asks a PV guest for the EOI hypercall unless it registered a
            // PIRQ EOI bitmap (pirq_eoi_gmfn, not offered); for MSI that EOI is a no-op.
            q.flags = pd::XENIRQSTAT_NEEDS_EOI;
            guestmem::write(arg, &q)?;
            Ok(0)
        }
        pd::PHYSDEVOP_EOI => {
            let e: pd::PhysdevEoi = guestmem::read(arg)?;
            let d = ctx.dom();
            // Xen: `irq >= nr_pirqs` or no pirq_info → -EINVAL. MSI is edge-triggered and
            // acknowledged at the local APIC when it arrives: nothing else to do.
            match d.pirqs.in_range(i64::from(e.irq)) {
                Some(p) if d.pirqs.get(p).is_some() || d.evtchn.pirq_port(p).is_some() => Ok(0),
                _ => Err(Errno::EINVAL),
            }
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// The domain a `map_pirq`/`unmap_pirq` acts on (Xen's `rcu_lock_domain_by_any_id` then
/// the `XSM_DM_PRIV` check): `-ESRCH` for no such domain, `-EPERM` unless the caller is
/// the hardware domain acting on itself (rxen passes no device through to other domains).
fn pirq_target(ctx: &Ctx, domid: u16) -> Result<usize, Errno> {
    let dom = DomId::new(domid);
    let ti = if dom == DomId::SELF {
        ctx.di
    } else {
        ctx.hv.find(dom).ok_or(Errno::ESRCH)?
    };
    if !ctx.privileged() || ti != ctx.di {
        return Err(Errno::EPERM);
    }
    Ok(ti)
}

/// The debug register a guest names (4 and 5 alias 6 and 7, as without CR4.DE).
fn debugreg_index(reg: u64) -> Result<usize, Errno> {
    match reg {
        0..=3 | 6 | 7 => Ok(reg as usize),
        4 | 5 => Ok(reg as usize + 2),
        _ => Err(Errno::EINVAL),
    }
}

fn set_debugreg(ctx: &mut Ctx, reg: u64, value: u64) -> HcResult {
    let i = debugreg_index(reg)?;
    let value = match i {
        0..=3 => {
            if !crate::guest_addr::is_guest_range(value, 1) {
                return Err(Errno::EPERM);
            }
            value
        }
        6 => {
            if value >> 32 != 0 {
                return Err(Errno::EINVAL);
            }
            value | 0xffff_0ff0
        }
        _ => {
            if value >> 32 != 0 {
                return Err(Errno::EINVAL);
            }
            if value & (1 << 13) != 0 {
                return Err(Errno::EPERM);
            }
            value | 0x400
        }
    };
    ctx.vcpu().debugreg[i] = value;
    Ok(0)
}

fn get_debugreg(ctx: &mut Ctx, reg: u64) -> HcResult {
    let i = debugreg_index(reg)?;
    Ok(ctx.vcpu().debugreg[i] as i64)
}

// ---------------------------------------------------------------------------------
// vCPU operations.

fn vcpu_op(ctx: &mut Ctx, cmd: u32, vcpuid: u64, arg: u64) -> HcResult {
    use xen_abi::vcpu as vo;
    let vid = vcpuid as usize;
    if vcpuid > u64::from(u32::MAX) || vid >= ctx.dom().vcpus.len() {
        return Err(Errno::ENOENT);
    }
    let same = vid == ctx.vi;
    let d = ctx.dom();
    let v = &mut d.vcpus[vid];
    match cmd {
        vo::VCPUOP_IS_UP => Ok(i64::from(v.state != RunState::Down)),
        vo::VCPUOP_GET_RUNSTATE_INFO => {
            let now = time::now();
            let mut info = vo::VcpuRunstateInfo::new_zeroed();
            info.state = v.runstate;
            info.state_entry_time = v.runstate_entry;
            info.time = v.runstate_time;
            if let Some(t) = info.time.get_mut(v.runstate as usize) {
                *t += now.saturating_sub(v.runstate_entry);
            }
            guestmem::write(arg, &info)?;
            Ok(0)
        }
        vo::VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA => {
            let _: vo::VcpuRegisterRunstateMemoryArea = guestmem::read(arg)?;
            Ok(0)
        }
        vo::VCPUOP_SET_PERIODIC_TIMER => {
            let p: vo::VcpuSetPeriodicTimer = guestmem::read(arg)?;
            if p.period_ns < 1_000_000 || p.period_ns > (1 << 62) {
                return Err(Errno::EINVAL);
            }
            v.periodic = Some((p.period_ns, time::now() + p.period_ns));
            Ok(0)
        }
        vo::VCPUOP_STOP_PERIODIC_TIMER => {
            v.periodic = None;
            Ok(0)
        }
        vo::VCPUOP_SET_SINGLESHOT_TIMER => {
            if !same {
                return Err(Errno::EINVAL);
            }
            let s: vo::VcpuSetSingleshotTimer = guestmem::read(arg)?;
            if s.flags & vo::VCPU_SSHOTTMR_FUTURE != 0 && s.timeout_abs_ns < time::now() {
                return Err(Errno::ETIME);
            }
            v.singleshot = Some(s.timeout_abs_ns);
            Ok(0)
        }
        vo::VCPUOP_STOP_SINGLESHOT_TIMER => {
            if !same {
                return Err(Errno::EINVAL);
            }
            v.singleshot = None;
            Ok(0)
        }
        vo::VCPUOP_REGISTER_VCPU_INFO => {
            let r: vo::VcpuRegisterVcpuInfo = guestmem::read(arg)?;
            if v.vcpu_info_registered {
                return Err(Errno::EBUSY);
            }
            if u64::from(r.offset) > 4096 - 64 || !r.offset.is_multiple_of(8) {
                return Err(Errno::EINVAL);
            }
            let mfn = Mfn::new(r.mfn);
            // The hypervisor writes into this frame from now on: it must stay an ordinary
            // page of the domain (a writable type reference keeps it from ever becoming a
            // page table or descriptor page), as Xen's map_guest_area does.
            let id = d.id;
            super::pv::with(|p, mem| {
                p.get_page_and_type(mem, mfn, id, crate::pvmm::PageType::Writable)
            })
            .map_err(|_| Errno::EINVAL)?;
            let new = (r.mfn << 12) + u64::from(r.offset);
            // Move the contents, then force a rescan of every selector word (as Xen).
            // SAFETY: both are 64-byte vcpu_info areas in direct-mapped frames (the old
            // one in shared_info, the new one in a frame the domain owns, checked above).
            unsafe {
                core::ptr::copy(mm::maddr_to_virt(v.vcpu_info), mm::maddr_to_virt(new), 64);
                core::ptr::write_volatile(mm::maddr_to_virt(new + 8) as *mut u64, u64::MAX);
            }
            v.vcpu_info = new;
            v.vcpu_info_registered = true;
            v.mark_upcall_pending();
            v.update_time();
            Ok(0)
        }
        // Taking a vCPU down stops it (Linux's halt path downs itself); bringing one up
        // needs a context (VCPUOP_initialise, which arrives with SMP guests).
        vo::VCPUOP_DOWN => {
            v.state = RunState::Down;
            Ok(0)
        }
        vo::VCPUOP_UP | vo::VCPUOP_INITIALISE => Err(Errno::ENOSYS),
        _ => Err(Errno::ENOSYS),
    }
}

// ---------------------------------------------------------------------------------
// Event channels.

fn event_channel_op(ctx: &mut Ctx, cmd: u32, arg: u64) -> HcResult {
    let me = ctx.domid();
    match cmd {
        ec::EVTCHNOP_ALLOC_UNBOUND => {
            let mut a: ec::EvtchnAllocUnbound = guestmem::read(arg)?;
            let dom = DomId::new(a.dom);
            // The toolstack (privileged) allocates the store and console ports in a new
            // domain, for itself as the remote end.
            let ti = if dom == DomId::SELF || dom == me {
                ctx.di
            } else if ctx.privileged() {
                ctx.hv.find(dom).ok_or(Errno::ESRCH)?
            } else {
                return Err(Errno::EPERM);
            };
            let port = ctx.hv.domains[ti]
                .evtchn
                .alloc_unbound(DomId::new(a.remote_dom), me)?;
            a.port = port.raw();
            guestmem::write(arg, &a)?;
            Ok(0)
        }
        ec::EVTCHNOP_BIND_INTERDOMAIN => {
            let mut b: ec::EvtchnBindInterdomain = guestmem::read(arg)?;
            let remote = DomId::new(b.remote_dom);
            let rport = EvtchnPort::new(b.remote_port);
            let port = if remote == DomId::SELF || remote == me {
                let d = ctx.dom();
                let bits = d.bits();
                let (port, delivery) = d.evtchn.bind_interdomain_self(&bits, rport)?;
                let np = delivery.outcome.newly_pending();
                d.after_raise(delivery.port.raw(), delivery.vcpu.raw(), np);
                port
            } else {
                let ri = ctx.hv.find(remote).ok_or(Errno::ESRCH)?;
                let li = ctx.di;
                let (l, r) = two_mut(&mut ctx.hv.domains, li, ri);
                let bits = l.bits();
                let (port, delivery) =
                    evtchn::bind_interdomain(&mut l.evtchn, &bits, &mut r.evtchn, rport)?;
                let np = delivery.outcome.newly_pending();
                l.after_raise(delivery.port.raw(), delivery.vcpu.raw(), np);
                port
            };
            b.local_port = port.raw();
            guestmem::write(arg, &b)?;
            Ok(0)
        }
        ec::EVTCHNOP_BIND_VIRQ => {
            let mut b: ec::EvtchnBindVirq = guestmem::read(arg)?;
            let port = ctx.dom().evtchn.bind_virq(b.virq, VcpuId::new(b.vcpu))?;
            b.port = port.raw();
            guestmem::write(arg, &b)?;
            Ok(0)
        }
        ec::EVTCHNOP_BIND_IPI => {
            let mut b: ec::EvtchnBindIpi = guestmem::read(arg)?;
            let port = ctx.dom().evtchn.bind_ipi(VcpuId::new(b.vcpu))?;
            b.port = port.raw();
            guestmem::write(arg, &b)?;
            Ok(0)
        }
        ec::EVTCHNOP_CLOSE => {
            let c: ec::EvtchnClose = guestmem::read(arg)?;
            let d = ctx.dom();
            let bits = d.bits();
            let effect = d.evtchn.close(EvtchnPort::new(c.port), &bits)?;
            match effect {
                CloseEffect::PeerBecomesUnbound(p) => {
                    if let Some(pi) = ctx.hv.find(p.dom) {
                        let _ = ctx.hv.domains[pi].evtchn.peer_closed(&p);
                    }
                }
                CloseEffect::PirqUnbound { pirq } => super::irq::unbound(ctx.dom(), pirq),
                CloseEffect::None => {}
            }
            Ok(0)
        }
        ec::EVTCHNOP_BIND_PIRQ => {
            let mut b: ec::EvtchnBindPirq = guestmem::read(arg)?;
            let d = ctx.dom();
            // Xen's evtchn_bind_pirq: the PIRQ (an `int`) in range (-EINVAL), mapped to
            // this domain (pirq_access_permitted: -EPERM), not yet bound (-EEXIST).
            let pirq = d
                .pirqs
                .in_range(i64::from(b.pirq as i32))
                .ok_or(Errno::EINVAL)?;
            if d.pirqs.get(pirq).is_none() {
                return Err(Errno::EPERM);
            }
            let nr = d.pirqs.nr_pirqs();
            let port = d.evtchn.bind_pirq(pirq, nr)?;
            super::irq::bound(d, pirq);
            b.port = port.raw();
            guestmem::write(arg, &b)?;
            Ok(0)
        }
        ec::EVTCHNOP_SEND => {
            let s: ec::EvtchnSend = guestmem::read(arg)?;
            let target = ctx.dom().evtchn.send(EvtchnPort::new(s.port))?;
            let (ti, port) = match target {
                SendTarget::Ignore => return Ok(0),
                SendTarget::Local { port, .. } => (ctx.di, port),
                SendTarget::Remote { dom, port } => match ctx.hv.find(dom) {
                    Some(ti) => (ti, port),
                    None => return Ok(0),
                },
            };
            let d = &mut ctx.hv.domains[ti];
            let delivery = d.evtchn.notify(port, &d.bits());
            d.after_raise(
                delivery.port.raw(),
                delivery.vcpu.raw(),
                delivery.outcome.newly_pending(),
            );
            Ok(0)
        }
        ec::EVTCHNOP_STATUS => {
            let mut s: ec::EvtchnStatus = guestmem::read(arg)?;
            let dom = DomId::new(s.dom);
            let ti = if dom == DomId::SELF || dom == me {
                ctx.di
            } else if !ctx.privileged() {
                return Err(Errno::EPERM);
            } else {
                ctx.hv.find(dom).ok_or(Errno::ESRCH)?
            };
            let st = ctx.hv.domains[ti].evtchn.status(EvtchnPort::new(s.port))?;
            s.status = st.status_code();
            s.vcpu = st.vcpu.raw();
            st.fill_union(&mut s.u);
            guestmem::write(arg, &s)?;
            Ok(0)
        }
        ec::EVTCHNOP_BIND_VCPU => {
            let b: ec::EvtchnBindVcpu = guestmem::read(arg)?;
            ctx.dom()
                .evtchn
                .bind_vcpu(EvtchnPort::new(b.port), VcpuId::new(b.vcpu))?;
            Ok(0)
        }
        ec::EVTCHNOP_UNMASK => {
            let u: ec::EvtchnUnmask = guestmem::read(arg)?;
            let d = ctx.dom();
            let bits = d.bits();
            if let Some(v) = d.evtchn.unmask(EvtchnPort::new(u.port), &bits)? {
                d.after_raise(u.port, v.raw(), false);
            }
            Ok(0)
        }
        ec::EVTCHNOP_RESET => {
            let r: ec::EvtchnReset = guestmem::read(arg)?;
            let dom = DomId::new(r.dom);
            if dom != DomId::SELF && dom != me {
                return Err(if ctx.privileged() {
                    Errno::ESRCH
                } else {
                    Errno::EPERM
                });
            }
            let mut peers = alloc::vec::Vec::new();
            let mut pirqs = alloc::vec::Vec::new();
            let d = ctx.dom();
            let bits = d.bits();
            d.evtchn.reset(&bits, |p| peers.push(p), |p| pirqs.push(p));
            for p in pirqs {
                super::irq::unbound(d, p);
            }
            for p in peers {
                if let Some(pi) = ctx.hv.find(p.dom) {
                    let _ = ctx.hv.domains[pi].evtchn.peer_closed(&p);
                }
            }
            Ok(0)
        }
        // FIFO event channels are not offered: Linux falls back to 2-level.
        ec::EVTCHNOP_INIT_CONTROL | ec::EVTCHNOP_EXPAND_ARRAY | ec::EVTCHNOP_SET_PRIORITY => {
            Err(Errno::ENOSYS)
        }
        _ => Err(Errno::ENOSYS),
    }
}

fn two_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    if a < b {
        let (x, y) = v.split_at_mut(b);
        (&mut x[a], &mut y[0])
    } else {
        let (x, y) = v.split_at_mut(a);
        (&mut y[0], &mut x[b])
    }
}

// ---------------------------------------------------------------------------------
// sysctl (dom0 only; rxen's own layout, Xen's command numbers).

fn sysctl(ctx: &mut Ctx, arg: u64) -> HcResult {
    use xen_abi::sysctl as sc;
    if !ctx.privileged() {
        return Err(Errno::EPERM);
    }
    let mut s: sc::Sysctl = guestmem::read(arg)?;
    if s.interface_version != sc::SYSCTL_INTERFACE_VERSION {
        return Err(Errno::EACCES);
    }
    match s.cmd {
        sc::SYSCTL_READCONSOLE => {
            let mut rc = sc::SysctlReadconsole::read_from_prefix(s.u.as_bytes())
                .map_err(|_| Errno::EINVAL)?
                .0;
            let c = super::console::CONSOLE.lock();
            let from = if rc.incremental != 0 {
                u64::from(rc.index)
            } else {
                c.ring.start()
            };
            let mut chunk = [0u8; 512];
            let want = (rc.count as usize).min(chunk.len());
            let (n, next) = c.ring.read(from, &mut chunk[..want]);
            drop(c);
            copy_to_guest(rc.buffer, &chunk[..n])?;
            rc.count = n as u32;
            rc.index = next as u32;
            if rc.clear != 0 {
                super::console::CONSOLE.lock().ring.clear();
            }
            s.u.as_mut_bytes()[..core::mem::size_of::<sc::SysctlReadconsole>()]
                .copy_from_slice(rc.as_bytes());
        }
        sc::SYSCTL_PHYSINFO => {
            let frames = FRAMES.lock();
            let mut p = sc::SysctlPhysinfo::new_zeroed();
            p.threads_per_core = 1;
            p.cores_per_socket = 1;
            p.nr_cpus = 1;
            p.nr_nodes = 1;
            p.cpu_khz = (time::tsc_hz() / 1000) as u32;
            p.total_pages = frames.total;
            p.free_pages = frames.free_count();
            p.max_mfn = frames.max_mfn().saturating_sub(1);
            drop(frames);
            s.u.as_mut_bytes()[..core::mem::size_of::<sc::SysctlPhysinfo>()]
                .copy_from_slice(p.as_bytes());
        }
        _ => return Err(Errno::ENOSYS),
    }
    guestmem::write(arg, &s)?;
    Ok(0)
}
