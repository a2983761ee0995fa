//! `domctl` (hypercall 36): dom0's control over other domains — create, destroy, pause,
//! unpause, query, memory and vCPU limits, initial vCPU context, hypercall page, I/O
//! permissions. Layouts are rxen's own (abi/src/domctl.rs), command numbers Xen's.

use super::domain::{Domain, RunState, Shutdown, Vcpu};
use super::frame::TrapFrame;
use super::guestmem;
use super::hypercall::{Ctx, HcResult};
use super::mm::{self, FRAMES};
use super::{pv, trap};
use crate::evtchn::EventChannels;
use alloc::vec::Vec;
use xen_abi::domctl as dc;
use xen_abi::xen;
use xen_abi::{DomId, Errno, Mfn};
use zerocopy::IntoBytes;

/// Most vCPUs a domain may have (the legacy shared_info slots).
const MAX_VCPUS: u32 = 32;

/// Handles one domctl from dom0.
pub(super) fn domctl(ctx: &mut Ctx, arg: u64) -> HcResult {
    if !ctx.privileged() {
        return Err(Errno::EPERM);
    }
    let mut d: dc::Domctl = guestmem::read(arg)?;
    if d.interface_version != dc::DOMCTL_INTERFACE_VERSION {
        return Err(Errno::EACCES);
    }
    let dom = DomId::new(d.domain);
    match d.cmd {
        dc::DOMCTL_CREATEDOMAIN => {
            let c: dc::DomctlCreateDomain = d.payload().ok_or(Errno::EINVAL)?;
            let id = create(ctx, &c)?;
            d.domain = id.raw();
        }
        dc::DOMCTL_GETDOMAININFO => {
            let di = ctx
                .hv
                .domains
                .iter()
                .enumerate()
                .filter(|(_, x)| x.id.raw() >= dom.raw())
                .min_by_key(|(_, x)| x.id.raw())
                .map(|(i, _)| i)
                .ok_or(Errno::ESRCH)?;
            let info = domain_info(&ctx.hv.domains[di]);
            d.domain = info.domain;
            d.u = [0; 16];
            d.set_payload(&info);
        }
        cmd => {
            let ti = target(ctx, dom)?;
            match cmd {
                dc::DOMCTL_DESTROYDOMAIN => destroy(ctx, ti)?,
                dc::DOMCTL_PAUSEDOMAIN => ctx.hv.domains[ti].paused = true,
                dc::DOMCTL_UNPAUSEDOMAIN => ctx.hv.domains[ti].paused = false,
                dc::DOMCTL_MAX_MEM => {
                    let m: dc::DomctlMaxMem = d.payload().ok_or(Errno::EINVAL)?;
                    let pages = m.max_memkb / 4;
                    pv::with(|p, _| p.set_max_pages(dom, pages))?;
                    ctx.hv.domains[ti].max_pages = pages;
                }
                dc::DOMCTL_MAX_VCPUS => {
                    let m: dc::DomctlMaxVcpus = d.payload().ok_or(Errno::EINVAL)?;
                    // vCPUs are fixed when the domain is created (as since Xen 4.12).
                    if m.max as usize != ctx.hv.domains[ti].vcpus.len() {
                        return Err(Errno::EINVAL);
                    }
                }
                dc::DOMCTL_SETVCPUCONTEXT => {
                    set_vcpu_context(ctx, ti, d.payload().ok_or(Errno::EINVAL)?)?
                }
                dc::DOMCTL_GETVCPUCONTEXT => {
                    get_vcpu_context(ctx, ti, d.payload().ok_or(Errno::EINVAL)?)?
                }
                dc::DOMCTL_HYPERCALL_INIT => {
                    let h: dc::DomctlHypercallInit = d.payload().ok_or(Errno::EINVAL)?;
                    let mfn = Mfn::new(h.gmfn);
                    let owned = pv::with(|p, _| {
                        p.page(mfn)
                            .is_some_and(|pi| pi.owner == crate::pvmm::Owner::Dom(dom))
                    });
                    if !owned {
                        return Err(Errno::EINVAL);
                    }
                    let page = domain_builder::hypercall_page();
                    // SAFETY: the frame belongs to the target domain (checked) and is
                    // direct-mapped; the domain is not running code from it concurrently
                    // (one CPU, and the toolstack does this before unpausing).
                    unsafe {
                        core::ptr::copy_nonoverlapping(
                            page.as_ptr(),
                            mm::maddr_to_virt(mfn.raw() << 12),
                            4096,
                        )
                    };
                }
                dc::DOMCTL_IOMEM_PERMISSION => {
                    let p: dc::DomctlIomemPermission = d.payload().ok_or(Errno::EINVAL)?;
                    if p.allow == 0 {
                        return Err(Errno::EOPNOTSUPP);
                    }
                    let last = p
                        .first_mfn
                        .checked_add(p.nr_mfns.checked_sub(1).ok_or(Errno::EINVAL)?)
                        .ok_or(Errno::EINVAL)?;
                    let (first, last) = (Mfn::new(p.first_mfn), Mfn::new(last));
                    let caller = ctx.domid();
                    // Xen: only what the caller may map itself can be handed on.
                    pv::with(|pm, _| {
                        if !pm.iomem_range_permitted(caller, first, last) {
                            return Err(Errno::EPERM);
                        }
                        pm.permit_iomem(dom, first, last)
                    })?;
                }
                dc::DOMCTL_IOPORT_PERMISSION => {
                    let p: dc::DomctlIoportPermission = d.payload().ok_or(Errno::EINVAL)?;
                    let end = p
                        .first_port
                        .checked_add(p.nr_ports)
                        .filter(|&e| e <= 0x1_0000 && e > p.first_port)
                        .ok_or(Errno::EINVAL)?;
                    // Xen: only ports the caller has itself can be handed on.
                    let mine: Vec<(u64, u64)> = ctx.hv.domains[ctx.di]
                        .ioports
                        .iter()
                        .map(|&(s, e)| (u64::from(s), u64::from(e) - 1))
                        .collect();
                    if !crate::pvmm::covers(&mine, u64::from(p.first_port), u64::from(end) - 1) {
                        return Err(Errno::EPERM);
                    }
                    let ports = &mut ctx.hv.domains[ti].ioports;
                    if p.allow != 0 {
                        ports.push((p.first_port, end));
                    } else {
                        ports.retain(|&(s, e)| e <= p.first_port || s >= end);
                    }
                }
                dc::DOMCTL_IRQ_PERMISSION => {
                    let p: dc::DomctlIrqPermission = d.payload().ok_or(Errno::EINVAL)?;
                    let irqs = &mut ctx.hv.domains[ti].irqs;
                    if p.allow != 0 {
                        if !irqs.contains(&p.pirq) {
                            irqs.push(p.pirq);
                        }
                    } else {
                        irqs.retain(|&i| i != p.pirq);
                    }
                }
                dc::DOMCTL_SHUTDOWN => {
                    let s: dc::DomctlShutdown = d.payload().ok_or(Errno::EINVAL)?;
                    let dm = &mut ctx.hv.domains[ti];
                    if dm.shutdown.is_none() {
                        dm.shutdown = Some(Shutdown::Requested(s.reason & 0xff));
                        for v in dm.vcpus.iter_mut() {
                            v.state = RunState::Down;
                        }
                        trap::domain_shut_down(ctx.hv, ti);
                    }
                }
                _ => return Err(Errno::ENOSYS),
            }
        }
    }
    guestmem::write(arg, &d)?;
    Ok(0)
}

/// The domain a command acts on: never dom0 itself, which no domctl may take apart.
fn target(ctx: &Ctx, dom: DomId) -> Result<usize, Errno> {
    if dom.raw() == 0 || dom.is_reserved() {
        return Err(Errno::EINVAL);
    }
    ctx.hv.find(dom).ok_or(Errno::ESRCH)
}

fn create(ctx: &mut Ctx, c: &dc::DomctlCreateDomain) -> Result<DomId, Errno> {
    if c.max_vcpus == 0 || c.max_vcpus > MAX_VCPUS || c.flags != 0 {
        return Err(Errno::EINVAL);
    }
    // Ids count up from the last one given, as Xen's do, so a new domain never reuses the
    // id of one destroyed a moment ago (stale xenstore paths, tools holding the old id).
    let span = DomId::FIRST_RESERVED.raw() - 1;
    let start = ctx.hv.next_domid.max(1);
    let id = (0..span)
        .map(|i| DomId::new((start - 1 + i) % span + 1))
        .find(|id| ctx.hv.find(*id).is_none())
        .ok_or(Errno::ENOSPC)?;
    ctx.hv.next_domid = id.raw() % span + 1;
    let max_pages = c.max_memkb / 4;
    pv::with(|p, _| p.create_domain(id, max_pages, c.max_vcpus as usize))?;
    let shared_info = match pv::alloc_xen_frame() {
        Ok(m) => m,
        Err(e) => {
            let _ = pv::with(|p, _| p.destroy_domain(id));
            return Err(e);
        }
    };
    if let Err(e) = pv::with(|p, _| p.share_xen_page(shared_info, id, true)) {
        FRAMES.lock().free(shared_info);
        let _ = pv::with(|p, _| p.destroy_domain(id));
        return Err(e);
    }
    let evtchn = EventChannels::new(id, c.max_vcpus)?;
    let vcpus: Vec<Vcpu> = (0..c.max_vcpus)
        .map(|i| Vcpu::new(i, shared_info, Mfn::new(0)))
        .collect();
    let d = Domain {
        id,
        vcpus,
        shared_info,
        evtchn,
        p2m: Vec::new(),
        max_pages,
        privileged: false,
        shutdown: None,
        shutdown_code: None,
        vm_assist: 0,
        paused: true,
        ioports: Vec::new(),
        pci_cf8: 0,
        irqs: Vec::new(),
        grant: grant::GrantTable::new(grant::DEFAULT_MAX_FRAMES),
        grant_entries: Default::default(),
        maptrack: grant::MapTrack::new(super::granthc::MAPTRACK_LIMIT),
        pirqs: crate::pirq::PirqTable::new(crate::pirq::DOMU_NR_PIRQS),
    };
    d.mask_all_upcalls();
    d.update_wallclock(super::time::wallclock_at_boot(), 0);
    ctx.hv.domains.push(d);
    crate::xinfo!(
        "Domain {} created ({} vCPUs, max {} KiB)\n",
        id.raw(),
        c.max_vcpus,
        c.max_memkb
    );
    Ok(id)
}

/// Tears a domain down: its vCPUs stop, its event channels close (peers see them
/// unbound), every frame it holds goes back to the free pool — except frames another
/// domain still maps, which are freed when that mapping goes — and dom0 hears of it.
fn destroy(ctx: &mut Ctx, ti: usize) -> Result<(), Errno> {
    let id = ctx.hv.domains[ti].id;
    {
        let d = &mut ctx.hv.domains[ti];
        for v in d.vcpus.iter_mut() {
            v.state = RunState::Down;
        }
        let bits = d.bits();
        let mut peers = Vec::new();
        d.evtchn.reset(&bits, |p| peers.push(p), |_| {});
        // Its PIRQs: sources masked, vectors freed (the ports are gone already).
        super::irq::release_domain(d);
        for p in peers {
            if let Some(pi) = ctx.hv.find(p.dom) {
                let _ = ctx.hv.domains[pi].evtchn.peer_closed(&p);
            }
        }
    }
    // The vcpu_info frames the hypervisor held a writable type reference on.
    for v in ctx.hv.domains[ti].vcpus.iter() {
        if v.vcpu_info_registered {
            let mfn = Mfn::new(v.vcpu_info >> 12);
            pv::with(|p, mem| p.put_page_and_type(mem, mfn));
        }
    }
    // Grants it mapped: release the granters' pins (the PTEs go with its page tables).
    let mappings = ctx.hv.domains[ti].maptrack.drain();
    for (_, m) in mappings {
        if let Some(gi) = ctx.hv.find(m.granter).filter(|&gi| gi != ti) {
            let d = &mut ctx.hv.domains[gi];
            pv::with(|p, mem| super::granthc::release_mapping(p, mem, d, &m));
        }
    }
    pv::flush_tlb_all();
    let r = pv::with(|p, mem| p.relinquish(mem, id))?;
    let still = r.still_referenced.len();
    {
        let mut frames = FRAMES.lock();
        for &m in r.freed.iter() {
            mm::set_m2p(m, u64::MAX);
            frames.free(m);
        }
    }
    for &m in r.unshared.iter() {
        let _ = pv::with(|p, _| p.set_free(m));
        FRAMES.lock().free(m);
    }
    if still == 0 {
        let _ = pv::with(|p, _| p.destroy_domain(id));
    }
    remove_domain(ctx, ti);
    crate::xinfo!(
        "Domain {} destroyed: {} frames freed, {} still mapped by other domains\n",
        id.raw(),
        r.freed.len() + r.unshared.len(),
        still
    );
    if let Some(d0) = ctx.hv.domains.first_mut() {
        let _ = d0.send_virq(xen::VIRQ_DOM_EXC, 0);
    }
    Ok(())
}

/// Drops a domain from the table, keeping the running vCPU's index right.
fn remove_domain(ctx: &mut Ctx, ti: usize) {
    ctx.hv.domains.remove(ti);
    if let Some((di, vi)) = ctx.hv.current {
        if di > ti {
            ctx.hv.current = Some((di - 1, vi));
        }
    }
    if ctx.di > ti {
        ctx.di -= 1;
    }
}

fn domain_info(d: &Domain) -> dc::DomctlGetDomainInfo {
    let mut info = dc::DomctlGetDomainInfo {
        domain: d.id.raw(),
        ..Default::default()
    };
    let mut flags = 0;
    if d.paused {
        flags |= dc::DOMINF_PAUSED;
    }
    if d.privileged {
        flags |= dc::DOMINF_PRIVILEGED;
    }
    match d.shutdown {
        Some(Shutdown::Requested(r)) => {
            flags |= dc::DOMINF_SHUTDOWN | (r << dc::DOMINF_SHUTDOWNSHIFT);
            if r == xen_abi::sched::SHUTDOWN_CRASH {
                flags |= dc::DOMINF_CRASHED;
            }
        }
        Some(Shutdown::Crashed) => {
            flags |= dc::DOMINF_SHUTDOWN
                | dc::DOMINF_CRASHED
                | (xen_abi::sched::SHUTDOWN_CRASH << dc::DOMINF_SHUTDOWNSHIFT);
        }
        // As Xen: a paused domain is neither running nor blocked.
        None if d.paused => {}
        None => {
            if d.vcpus.iter().any(|v| v.state == RunState::Runnable) {
                flags |= dc::DOMINF_RUNNING;
            } else {
                flags |= dc::DOMINF_BLOCKED;
            }
        }
    }
    info.flags = flags;
    let (tot, max) = pv::with(|p, _| p.domain(d.id).map(|m| (m.tot_pages, m.max_pages)))
        .unwrap_or((0, d.max_pages));
    info.tot_pages = tot;
    info.max_pages = max;
    info.shared_info_frame = d.shared_info.raw();
    let now = super::time::now();
    info.cpu_time = d
        .vcpus
        .iter()
        .map(|v| {
            let mut t = v.runstate_time[0];
            if v.runstate == xen_abi::vcpu::RUNSTATE_RUNNING {
                t += now.saturating_sub(v.runstate_entry);
            }
            t
        })
        .sum();
    info.nr_online_vcpus = d.vcpus.iter().filter(|v| v.state != RunState::Down).count() as u32;
    info.max_vcpu_id = d.vcpus.len().saturating_sub(1) as u32;
    info.shutdown_code = d.shutdown_code.unwrap_or(u32::MAX);
    info
}

fn set_vcpu_context(ctx: &mut Ctx, ti: usize, c: dc::DomctlVcpuContext) -> Result<(), Errno> {
    let mut g = xen::VcpuGuestContext::new_zeroed();
    guestmem::copy_from_guest(c.ctxt, g.as_mut_bytes())?;
    let d = &ctx.hv.domains[ti];
    let id = d.id;
    let vi = c.vcpu as usize;
    let v = d.vcpus.get(vi).ok_or(Errno::EINVAL)?;
    if !d.paused && v.state != RunState::Down {
        return Err(Errno::EBUSY);
    }
    let r = &g.user_regs;
    for addr in [
        r.rip,
        g.event_callback_eip,
        g.failsafe_callback_eip,
        g.syscall_callback_eip,
        g.kernel_sp,
    ] {
        if !crate::guest_addr::is_canonical(addr) {
            return Err(Errno::EINVAL);
        }
    }
    // The kernel page table: a validated L4 of the domain (the toolstack pinned it).
    let l4 = Mfn::new(xen::xen_cr3_to_pfn(g.ctrlreg[3]));
    let _reload = pv::with(|p, mem| p.new_baseptr(mem, id, vi, l4))?;
    let user_l4 = match xen::xen_cr3_to_pfn(g.ctrlreg[1]) {
        0 => None,
        m => {
            pv::with(|p, mem| p.new_user_baseptr(mem, id, vi, Some(Mfn::new(m))))?;
            Some(Mfn::new(m))
        }
    };
    let nr_gdt = (g.gdt_ents as usize).div_ceil(512).min(14);
    let gdt: Vec<Mfn> = g.gdt_frames[..nr_gdt]
        .iter()
        .map(|&m| Mfn::new(m))
        .collect();
    if g.gdt_ents > 0 {
        pv::with(|p, mem| p.set_gdt(mem, id, vi, &gdt, g.gdt_ents as u32))?;
    }
    let d = &mut ctx.hv.domains[ti];
    d.vm_assist = g.vm_assist;
    let v = &mut d.vcpus[vi];
    v.regs = TrapFrame {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        rbp: r.rbp,
        rbx: r.rbx,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        rax: r.rax,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        vector: 0,
        error_code: 0,
        rip: r.rip,
        cs: u64::from(r.cs) | 3,
        // Architectural flags only, IF on, IOPL 0.
        rflags: (r.rflags & 0x0000_0000_003f_0fd5 & !(3 << 12)) | (1 << 9) | 2,
        rsp: r.rsp,
        ss: u64::from(r.ss) | 3,
    };
    v.kernel_l4 = l4;
    v.user_l4 = user_l4;
    v.in_kernel = g.flags & xen::VGCF_IN_KERNEL != 0;
    v.kernel_sp = g.kernel_sp;
    v.event_callback = g.event_callback_eip;
    v.failsafe_callback = g.failsafe_callback_eip;
    v.syscall_callback = g.syscall_callback_eip;
    v.syscall_masks_events = g.flags & xen::VGCF_SYSCALL_DISABLES_EVENTS != 0;
    for t in g.trap_ctxt.iter() {
        if t.address != 0 && crate::guest_addr::is_canonical(t.address) {
            v.traps[usize::from(t.vector)] = super::domain::TrapEntry {
                address: t.address,
                flags: t.flags,
            };
        }
    }
    v.gdt_frames = gdt.iter().copied().collect();
    v.gdt_ents = g.gdt_ents as u32;
    v.fs_base = g.fs_base;
    v.gs_base_kernel = g.gs_base_kernel;
    v.gs_base_user = g.gs_base_user;
    if g.flags & xen::VGCF_ONLINE != 0 {
        v.state = RunState::Runnable;
    }
    v.update_time();
    Ok(())
}

fn get_vcpu_context(ctx: &mut Ctx, ti: usize, c: dc::DomctlVcpuContext) -> Result<(), Errno> {
    let d = &ctx.hv.domains[ti];
    let v = d.vcpus.get(c.vcpu as usize).ok_or(Errno::EINVAL)?;
    let mut g = xen::VcpuGuestContext::new_zeroed();
    let f = &v.regs;
    let r = &mut g.user_regs;
    (r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10) =
        (f.r15, f.r14, f.r13, f.r12, f.rbp, f.rbx, f.r11, f.r10);
    (r.r9, r.r8, r.rax, r.rcx, r.rdx, r.rsi, r.rdi) =
        (f.r9, f.r8, f.rax, f.rcx, f.rdx, f.rsi, f.rdi);
    r.rip = f.rip;
    r.cs = f.cs as u16;
    r.rflags = f.rflags;
    r.rsp = f.rsp;
    r.ss = f.ss as u16;
    g.flags = if v.in_kernel { xen::VGCF_IN_KERNEL } else { 0 }
        | if v.state != RunState::Down {
            xen::VGCF_ONLINE
        } else {
            0
        };
    g.ctrlreg[3] = xen::xen_pfn_to_cr3(v.kernel_l4.raw());
    g.ctrlreg[1] = v.user_l4.map_or(0, |m| xen::xen_pfn_to_cr3(m.raw()));
    g.kernel_ss = u64::from(xen::FLAT_KERNEL_SS);
    g.kernel_sp = v.kernel_sp;
    g.event_callback_eip = v.event_callback;
    g.failsafe_callback_eip = v.failsafe_callback;
    g.syscall_callback_eip = v.syscall_callback;
    g.vm_assist = d.vm_assist;
    g.fs_base = v.fs_base;
    g.gs_base_kernel = v.gs_base_kernel;
    g.gs_base_user = v.gs_base_user;
    g.gdt_ents = u64::from(v.gdt_ents);
    for (i, m) in v.gdt_frames.iter().enumerate() {
        g.gdt_frames[i] = m.raw();
    }
    guestmem::copy_to_guest(c.ctxt, g.as_bytes())?;
    Ok(())
}
