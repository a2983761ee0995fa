//! Property tests: random operation sequences from two hostile domains on a 64-frame
//! mock machine, with an invariant checker after every step that recomputes every
//! reference count from scratch.

use super::pte::{self, *};
use super::refs::is_guest_l4_slot;
use super::tests::{MockMem, A_DOM, B_DOM, XEN_SLOT};
use super::*;
use alloc::format;
use alloc::string::String;
use proptest::prelude::*;

const NR: usize = 64;
const DOMS: [DomId; 2] = [A_DOM, B_DOM];

fn m(n: u64) -> Mfn {
    Mfn::new(n)
}

/// Frames: 0,1 hypervisor; 2 shared writable with A (its shared_info); 3 shared
/// read-only with DOMID_XEN; 4..28 A; 28..44 B; 44..58 free; 58..62 I/O (A may map
/// 58..=59); 62, 63 hypervisor. A is "privileged": it may name B as foreign owner.
fn machine() -> (PvMm, MockMem) {
    let mut mm = PvMm::new(NR);
    mm.create_domain(A_DOM, 30, 2).unwrap();
    mm.create_domain(B_DOM, 20, 1).unwrap();
    for i in 4..58 {
        mm.set_free(m(i)).unwrap();
    }
    for i in 58..62 {
        mm.set_io(m(i)).unwrap();
    }
    for i in 4..28 {
        mm.assign(m(i), A_DOM).unwrap();
    }
    for i in 28..44 {
        mm.assign(m(i), B_DOM).unwrap();
    }
    mm.share_xen_page(m(2), A_DOM, true).unwrap();
    mm.share_xen_page(m(3), DomId::XEN, false).unwrap();
    mm.permit_iomem(A_DOM, m(58), m(59)).unwrap();
    (mm, MockMem::new(NR))
}

/// Recomputes all counts from the validated tables, pins, vCPU references, allocation
/// and share references, and checks the PV MMU's safety properties.
fn check(mm: &PvMm, mem: &MockMem, prev: &[PageInfo]) -> Result<(), String> {
    if mm.bugs != 0 {
        return Err(format!("{} internal inconsistencies", mm.bugs));
    }
    let mut count = [0i64; NR];
    let mut tcount = [0i64; NR];
    let mut linear = [0i64; NR];
    let mut uses = [0i64; NR];
    let ty = |f: u64| mm.frames.get(f as usize).map(|p| (p.ty, p.validated));
    for (f, p) in mm.frames.iter().enumerate() {
        if p.allocated {
            count[f] += 1;
        }
        if p.pinned {
            if !p.ty.is_page_table() {
                return Err(format!("frame {f} pinned as {:?}", p.ty));
            }
            count[f] += 1;
            tcount[f] += 1;
        }
        if p.special {
            tcount[f] += 1;
        }
    }
    for (dom, d) in mm.domains.iter() {
        for v in d.vcpus.iter() {
            for b in [v.kernel_base, v.user_base].into_iter().flatten() {
                if ty(b.raw()) != Some((PageType::L4, true)) {
                    return Err(format!("{dom:?} base pointer {b:?} is not a validated L4"));
                }
                count[b.raw() as usize] += 1;
                tcount[b.raw() as usize] += 1;
            }
            for &g in v.gdt.iter().chain(v.ldt.iter().flatten()) {
                if ty(g.raw()) != Some((PageType::SegDesc, true)) {
                    return Err(format!(
                        "{dom:?} GDT/LDT frame {g:?} is not a descriptor page"
                    ));
                }
                count[g.raw() as usize] += 1;
                tcount[g.raw() as usize] += 1;
            }
        }
    }
    for (t, p) in mm.frames.iter().enumerate() {
        let Some(level) = p.ty.level() else { continue };
        if !p.validated {
            if p.type_count != 0 {
                return Err(format!("table {t} has type refs but is not validated"));
            }
            continue;
        }
        let Owner::Dom(d) = p.owner else {
            return Err(format!("table {t} owned by {:?}", p.owner));
        };
        let io_caps = mm.domains.get(&d).is_some_and(|x| x.io_caps);
        for i in 0..ENTRIES {
            let e = mem.pages[t][i];
            if level == 4 && !is_guest_l4_slot(i) {
                if e != XEN_SLOT | ((i as u64) << 12) {
                    return Err(format!("L4 {t} hypervisor slot {i} = {e:#x}"));
                }
                continue;
            }
            if !pte::present(e) {
                continue;
            }
            let g = pte::frame(e);
            let gp = mm.frames.get(g as usize);
            if level == 1 {
                let grant = pte::is_grant_entry_bits(e);
                let disallow = l1_disallow(io_caps) & if grant { !GNTTAB } else { !0 };
                if e & disallow != 0 || pte::adjust_l1(e) != e {
                    return Err(format!("L1 {t}[{i}] = {e:#x} has bad flags"));
                }
                if grant {
                    // A grant mapping: another (or the same) domain's RAM frame, never
                    // I/O, holding a general and, if RW, a writable type reference.
                    let gp = gp.ok_or(format!("grant L1 {t}[{i}] to missing frame {g}"))?;
                    if !matches!(gp.owner, Owner::Dom(_)) || e & (A | D | NX) != A | D | NX {
                        return Err(format!("grant L1 {t}[{i}] = {e:#x} to {:?}", gp.owner));
                    }
                    count[g as usize] += 1;
                    if e & RW != 0 {
                        if gp.ty != PageType::Writable {
                            return Err(format!(
                                "grant L1 {t}[{i}] maps {g} ({:?}) writable",
                                gp.ty
                            ));
                        }
                        tcount[g as usize] += 1;
                    }
                    continue;
                }
                let io = gp.is_none_or(|x| x.owner == Owner::Io);
                if io {
                    if !mm.iomem_permitted(d, m(g)) {
                        return Err(format!("L1 {t}[{i}] maps I/O frame {g} without permission"));
                    }
                    continue;
                }
                let gp = gp.ok_or("unreachable")?;
                let foreign_ok = d == A_DOM
                    && (gp.owner == Owner::Dom(B_DOM) || gp.owner == Owner::Dom(DomId::XEN));
                if gp.owner != Owner::Dom(d) && !foreign_ok {
                    return Err(format!(
                        "L1 {t}[{i}] of {d:?} maps frame {g} of {:?}",
                        gp.owner
                    ));
                }
                count[g as usize] += 1;
                if e & RW != 0 {
                    if gp.ty != PageType::Writable {
                        return Err(format!("L1 {t}[{i}] maps frame {g} ({:?}) writable", gp.ty));
                    }
                    tcount[g as usize] += 1;
                }
            } else {
                if e & LN_DISALLOW != 0 || e & USER == 0 || (level == 4 && e & A == 0) {
                    return Err(format!("L{level} {t}[{i}] = {e:#x} has bad flags"));
                }
                if g as usize == t {
                    if e & RW != 0 {
                        return Err(format!("L{level} {t}[{i}] writable self map"));
                    }
                    continue;
                }
                let gp = gp.ok_or(format!("L{level} {t}[{i}] to missing frame {g}"))?;
                if gp.owner != Owner::Dom(d) {
                    return Err(format!("L{level} {t}[{i}] to frame {g} of {:?}", gp.owner));
                }
                count[g as usize] += 1;
                tcount[g as usize] += 1;
                if gp.ty.level() == Some(level - 1) && gp.validated {
                } else if gp.ty == p.ty && gp.validated && e & RW == 0 {
                    linear[t] += 1;
                    linear[g as usize] -= 1;
                    uses[g as usize] += 1;
                } else {
                    return Err(format!(
                        "L{level} {t}[{i}] to frame {g} of type {:?}",
                        gp.ty
                    ));
                }
            }
        }
    }
    let mut tot = BTreeMap::new();
    for (f, p) in mm.frames.iter().enumerate() {
        if i64::from(p.count) != count[f] || i64::from(p.type_count) != tcount[f] {
            return Err(format!(
                "frame {f}: count {} (expected {}), type count {} (expected {}), {p:?}",
                p.count, count[f], p.type_count, tcount[f]
            ));
        }
        if uses[f] > 0 && linear[f] + uses[f] > 0 {
            return Err(format!(
                "frame {f}: linear target with linear entries (a chain)"
            ));
        }
        if i64::from(p.linear) != linear[f] {
            return Err(format!(
                "frame {f}: linear {} expected {}",
                p.linear, linear[f]
            ));
        }
        if linear[f] > 0 && (p.ty == PageType::None) {
            return Err(format!("frame {f}: linear entries in a non-table"));
        }
        if p.type_count > 0 && !p.validated {
            return Err(format!("frame {f}: type refs without validation"));
        }
        match p.owner {
            Owner::Dom(d) => {
                if p.count == 0 {
                    return Err(format!("frame {f} owned by {d:?} with count 0"));
                }
                if !p.special {
                    *tot.entry(d).or_insert(0u64) += 1;
                }
            }
            _ => {
                if p.count != 0 || p.type_count != 0 || p.pinned {
                    return Err(format!("unowned frame {f} referenced: {p:?}"));
                }
            }
        }
        if let Some(q) = prev.get(f) {
            if q.ty != p.ty && q.type_count != 0 && q.owner == p.owner && p.owner != Owner::Free {
                return Err(format!(
                    "frame {f} changed type {:?} -> {:?} at type count {}",
                    q.ty, p.ty, q.type_count
                ));
            }
        }
    }
    for (dom, d) in mm.domains.iter() {
        let t = tot.get(dom).copied().unwrap_or(0);
        if d.tot_pages != t {
            return Err(format!("{dom:?} tot_pages {} but owns {t}", d.tot_pages));
        }
        if d.tot_pages > d.max_pages {
            return Err(format!("{dom:?} over its limit"));
        }
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Op {
    Write {
        dom: usize,
        frame: u64,
        idx: usize,
        val: u64,
    },
    MmuUpdate {
        dom: usize,
        frame: u64,
        idx: usize,
        val: u64,
        ad: bool,
        foreign: bool,
    },
    UpdateVa {
        dom: usize,
        frame: u64,
        idx: usize,
        val: u64,
    },
    Pin {
        dom: usize,
        frame: u64,
        level: u8,
    },
    Unpin {
        dom: usize,
        frame: u64,
    },
    NewBase {
        dom: usize,
        vcpu: usize,
        frame: u64,
    },
    NewUserBase {
        dom: usize,
        vcpu: usize,
        frame: Option<u64>,
    },
    SetGdt {
        dom: usize,
        vcpu: usize,
        frames: Vec<u64>,
        entries: u32,
    },
    MapLdt {
        dom: usize,
        vcpu: usize,
        slot: usize,
        frame: u64,
    },
    UpdateDesc {
        dom: usize,
        frame: u64,
        idx: usize,
        desc: u64,
    },
    Release {
        dom: usize,
        frame: u64,
    },
    Assign {
        dom: usize,
        frame: u64,
    },
    Relinquish {
        dom: usize,
    },
    /// `map_grant_ref` with a host mapping: `dom` maps `target` of domain `granter`.
    GrantMap {
        dom: usize,
        l1: u64,
        idx: usize,
        granter: usize,
        target: u64,
        ro: bool,
    },
    /// `unmap_grant_ref` of the `nth` grant entry in `dom`'s validated L1s (`wrong`:
    /// naming the wrong frame or access).
    GrantUnmap {
        dom: usize,
        nth: usize,
        wrong: Option<bool>,
    },
}

/// Frame numbers from `POOL` up name the acting domain's small pool of frames (so that
/// random operations build real page-table trees); others are machine frames.
const POOL: u64 = 1000;
const POOL_SIZE: u64 = 8;

fn frame() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => POOL..POOL + POOL_SIZE,
        6 => 0u64..64,
        1 => 64u64..70,
        1 => Just(pte::ADDR_MASK >> 12)
    ]
}

/// Resolves a pool frame for domain index `d`.
fn res(d: usize, f: u64) -> u64 {
    if (POOL..POOL + POOL_SIZE).contains(&f) {
        f - POOL + if d == 0 { 4 } else { 28 }
    } else {
        f
    }
}

/// Resolves the frame of an entry.
fn res_entry(d: usize, e: u64) -> u64 {
    (e & !pte::ADDR_MASK) | (res(d, pte::frame(e)) << 12)
}

fn index() -> impl Strategy<Value = usize> {
    prop_oneof![6 => 0usize..4, 1 => Just(255), 1 => 256usize..=271, 1 => Just(272), 1 => Just(511)]
}

fn flags() -> impl Strategy<Value = u64> {
    let bit = |b: u64, w: u32| prop_oneof![w => Just(b), (10 - w) => Just(0)];
    (
        bit(P, 8),
        bit(RW, 5),
        bit(USER, 3),
        bit(A | D, 2),
        bit(PSE, 1),
        bit(PCD | PWT, 1),
        bit(G, 1),
        bit(GUEST_KERNEL, 1),
        bit(GNTTAB, 1),
        bit(NX, 2),
    )
        .prop_map(|(a, b, c, d, e, f, g, h, i, j)| a | b | c | d | e | f | g | h | i | j)
}

fn good_flags() -> impl Strategy<Value = u64> {
    (
        any::<bool>(),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(rw, u, ad, nx)| {
            P | if rw { RW } else { 0 }
                | if u { USER } else { 0 }
                | if ad { A | D } else { 0 }
                | if nx { NX } else { 0 }
        })
}

fn entry() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => (POOL..POOL + POOL_SIZE, good_flags()).prop_map(|(f, fl)| (f << 12) | fl),
        1 => Just(0u64),
        5 => (frame(), flags()).prop_map(|(f, fl)| (f << 12) | fl),
        1 => any::<u64>()
    ]
}

fn descriptor() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(0x00af_9a00_0000_ffff),
        Just(0x0000_ec00_0010_1234),
        Just(0x0000_8900_0000_0067),
        any::<u64>()
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let dom = 0usize..2;
    prop_oneof![
        10 => (dom.clone(), frame(), index(), entry()).prop_map(|(dom, frame, idx, val)| Op::Write { dom, frame, idx, val }),
        8 => (dom.clone(), frame(), index(), entry(), any::<bool>(), prop::bool::weighted(0.1))
            .prop_map(|(dom, frame, idx, val, ad, foreign)| Op::MmuUpdate { dom, frame, idx, val, ad, foreign }),
        3 => (dom.clone(), frame(), index(), entry()).prop_map(|(dom, frame, idx, val)| Op::UpdateVa { dom, frame, idx, val }),
        8 => (dom.clone(), frame(), 0u8..6).prop_map(|(dom, frame, level)| Op::Pin { dom, frame, level }),
        3 => (dom.clone(), frame()).prop_map(|(dom, frame)| Op::Unpin { dom, frame }),
        2 => (dom.clone(), 0usize..3, frame()).prop_map(|(dom, vcpu, frame)| Op::NewBase { dom, vcpu, frame }),
        1 => (dom.clone(), 0usize..3, prop::option::of(frame()))
            .prop_map(|(dom, vcpu, frame)| Op::NewUserBase { dom, vcpu, frame }),
        1 => (dom.clone(), 0usize..3, prop::collection::vec(frame(), 0..3), 0u32..1200)
            .prop_map(|(dom, vcpu, frames, entries)| Op::SetGdt { dom, vcpu, frames, entries }),
        1 => (dom.clone(), 0usize..3, 0usize..17, frame())
            .prop_map(|(dom, vcpu, slot, frame)| Op::MapLdt { dom, vcpu, slot, frame }),
        1 => (dom.clone(), frame(), index(), descriptor())
            .prop_map(|(dom, frame, idx, desc)| Op::UpdateDesc { dom, frame, idx, desc }),
        2 => (dom.clone(), frame()).prop_map(|(dom, frame)| Op::Release { dom, frame }),
        2 => (dom.clone(), frame()).prop_map(|(dom, frame)| Op::Assign { dom, frame }),
        1 => dom.clone().prop_map(|dom| Op::Relinquish { dom }),
        4 => (dom.clone(), frame(), index(), 0usize..2, frame(), any::<bool>())
            .prop_map(|(dom, l1, idx, granter, target, ro)| Op::GrantMap { dom, l1, idx, granter, target, ro }),
        3 => (dom, 0usize..16, prop::option::weighted(0.2, any::<bool>()))
            .prop_map(|(dom, nth, wrong)| Op::GrantUnmap { dom, nth, wrong }),
    ]
}

/// The operation with pool frames resolved for domain index `d`.
fn resolve(d: usize, op: &Op) -> Op {
    let f = |x: u64| res(d, x);
    let e = |x: u64| res_entry(d, x);
    match op.clone() {
        Op::Write {
            dom,
            frame,
            idx,
            val,
        } => Op::Write {
            dom,
            frame: f(frame),
            idx,
            val: e(val),
        },
        Op::MmuUpdate {
            dom,
            frame,
            idx,
            val,
            ad,
            foreign,
        } => Op::MmuUpdate {
            dom,
            frame: f(frame),
            idx,
            val: e(val),
            ad,
            foreign,
        },
        Op::UpdateVa {
            dom,
            frame,
            idx,
            val,
        } => Op::UpdateVa {
            dom,
            frame: f(frame),
            idx,
            val: e(val),
        },
        Op::Pin { dom, frame, level } => Op::Pin {
            dom,
            frame: f(frame),
            level,
        },
        Op::Unpin { dom, frame } => Op::Unpin {
            dom,
            frame: f(frame),
        },
        Op::NewBase { dom, vcpu, frame } => Op::NewBase {
            dom,
            vcpu,
            frame: f(frame),
        },
        Op::NewUserBase { dom, vcpu, frame } => Op::NewUserBase {
            dom,
            vcpu,
            frame: frame.map(f),
        },
        Op::SetGdt {
            dom,
            vcpu,
            frames,
            entries,
        } => Op::SetGdt {
            dom,
            vcpu,
            frames: frames.into_iter().map(f).collect(),
            entries,
        },
        Op::MapLdt {
            dom,
            vcpu,
            slot,
            frame,
        } => Op::MapLdt {
            dom,
            vcpu,
            slot,
            frame: f(frame),
        },
        Op::UpdateDesc {
            dom,
            frame,
            idx,
            desc,
        } => Op::UpdateDesc {
            dom,
            frame: f(frame),
            idx,
            desc,
        },
        Op::Release { dom, frame } => Op::Release {
            dom,
            frame: f(frame),
        },
        Op::Assign { dom, frame } => Op::Assign {
            dom,
            frame: f(frame),
        },
        Op::Relinquish { dom } => Op::Relinquish { dom },
        Op::GrantMap {
            dom,
            l1,
            idx,
            granter,
            target,
            ro,
        } => Op::GrantMap {
            dom,
            l1: f(l1),
            idx,
            granter,
            target: res(granter, target),
            ro,
        },
        Op::GrantUnmap { dom, nth, wrong } => Op::GrantUnmap { dom, nth, wrong },
    }
}

fn grant_flags(ro: bool) -> u32 {
    use xen_abi::grant_table::{GNTMAP_HOST_MAP, GNTMAP_READONLY};
    GNTMAP_HOST_MAP | if ro { GNTMAP_READONLY } else { 0 }
}

struct World {
    mm: PvMm,
    mem: MockMem,
    /// Domain torn down and not yet recreated (its leftovers are still referenced).
    dying: [bool; 2],
}

impl World {
    fn apply(&mut self, op: &Op) {
        let (mm, mem) = (&mut self.mm, &mut self.mem);
        let dom_of = |i: usize| DOMS[i];
        let d = match op {
            Op::Write { dom, .. }
            | Op::MmuUpdate { dom, .. }
            | Op::UpdateVa { dom, .. }
            | Op::Pin { dom, .. }
            | Op::Unpin { dom, .. }
            | Op::NewBase { dom, .. }
            | Op::NewUserBase { dom, .. }
            | Op::SetGdt { dom, .. }
            | Op::MapLdt { dom, .. }
            | Op::UpdateDesc { dom, .. }
            | Op::Release { dom, .. }
            | Op::Assign { dom, .. }
            | Op::Relinquish { dom }
            | Op::GrantMap { dom, .. }
            | Op::GrantUnmap { dom, .. } => *dom,
        };
        if self.dying[d] {
            // A dead domain runs nothing; try to finish its destruction instead.
            if mm.destroy_domain(dom_of(d)).is_ok() {
                mm.create_domain(dom_of(d), 20, if d == 0 { 2 } else { 1 })
                    .unwrap();
                self.dying[d] = false;
            }
            return;
        }
        let dom = dom_of(d);
        let op = &resolve(d, op);
        match *op {
            Op::Write {
                frame, idx, val, ..
            } => {
                // The guest writes through a writable mapping it could have.
                let ok = mm.page(m(frame)).is_some_and(|p| {
                    p.owner == Owner::Dom(dom) && (p.type_count == 0 || p.ty == PageType::Writable)
                });
                if ok {
                    mem.pages[frame as usize][idx] = val;
                }
            }
            Op::MmuUpdate {
                frame,
                idx,
                val,
                ad,
                foreign,
                ..
            } => {
                let pg = if foreign && dom == A_DOM { B_DOM } else { dom };
                let _ = mm.mmu_update_pt(mem, dom, pg, (frame << 12) | (idx as u64 * 8), val, ad);
            }
            Op::UpdateVa {
                frame, idx, val, ..
            } => {
                let _ = mm.update_va_mapping(mem, dom, dom, m(frame), idx, val);
            }
            Op::Pin { frame, level, .. } => {
                let _ = mm.pin(mem, dom, m(frame), level);
            }
            Op::Unpin { frame, .. } => {
                let _ = mm.unpin(mem, dom, m(frame));
            }
            Op::NewBase { vcpu, frame, .. } => {
                let _ = mm.new_baseptr(mem, dom, vcpu, m(frame));
            }
            Op::NewUserBase { vcpu, frame, .. } => {
                let _ = mm.new_user_baseptr(mem, dom, vcpu, frame.map(m));
            }
            Op::SetGdt {
                vcpu,
                ref frames,
                entries,
                ..
            } => {
                let frames: Vec<Mfn> = frames.iter().map(|&f| m(f)).collect();
                let _ = mm.set_gdt(mem, dom, vcpu, &frames, entries);
            }
            Op::MapLdt {
                vcpu, slot, frame, ..
            } => {
                let _ = mm.map_ldt_page(mem, dom, vcpu, slot, m(frame));
            }
            Op::UpdateDesc {
                frame, idx, desc, ..
            } => {
                let _ = mm.update_descriptor(mem, dom, (frame << 12) | (idx as u64 * 8), desc);
            }
            Op::Release { frame, .. } => {
                let _ = mm.release(dom, m(frame));
            }
            Op::Assign { frame, .. } => {
                let _ = mm.assign(m(frame), dom);
            }
            Op::Relinquish { .. } => {
                let r = mm.relinquish(mem, dom).unwrap();
                assert!(r
                    .still_referenced
                    .iter()
                    .all(|&f| mm.page(f).is_some_and(|p| p.count > 0 && !p.allocated)));
                assert!(r
                    .freed
                    .iter()
                    .all(|&f| mm.page(f).is_some_and(|p| p.owner == Owner::Free)));
                self.dying[d] = true;
            }
            Op::GrantMap {
                l1,
                idx,
                granter,
                target,
                ro,
                ..
            } => {
                let _ = mm.create_grant_mapping(
                    mem,
                    dom,
                    m(l1),
                    idx,
                    m(target),
                    dom_of(granter),
                    grant_flags(ro),
                );
            }
            Op::GrantUnmap { nth, wrong, .. } => {
                let mut found = Vec::new();
                for (t, p) in mm.frames.iter().enumerate() {
                    if p.owner == Owner::Dom(dom) && p.ty == PageType::L1 && p.validated {
                        for (i, &e) in mem.pages[t].iter().enumerate() {
                            if pte::is_grant_entry_bits(e) {
                                found.push((t as u64, i, e));
                            }
                        }
                    }
                }
                if let Some(&(t, i, e)) = found.get(nth % found.len().max(1)) {
                    let mut target = pte::frame(e);
                    let mut ro = e & RW == 0;
                    match wrong {
                        Some(true) => target ^= 1,
                        Some(false) => ro = !ro,
                        None => {}
                    }
                    let r = mm.destroy_grant_mapping(mem, dom, m(t), i, m(target), grant_flags(ro));
                    assert_eq!(r.is_ok(), wrong.is_none(), "unmap {t}[{i}] = {e:#x}: {r:?}");
                    if let Ok(u) = r {
                        mm.put_grant_refs(mem, u);
                    }
                }
            }
        }
        let _ = mm.take_freed();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn hostile_domains_keep_the_invariants(ops in prop::collection::vec(op(), 1..120)) {
        let (mm, mem) = machine();
        let mut w = World { mm, mem, dying: [false; 2] };
        let mut prev = w.mm.frames.clone();
        check(&w.mm, &w.mem, &prev).map_err(TestCaseError::fail)?;
        for (n, op) in ops.iter().enumerate() {
            w.apply(op);
            check(&w.mm, &w.mem, &prev)
                .map_err(|e| TestCaseError::fail(format!("after step {n} {op:?}: {e}")))?;
            prev = w.mm.frames.clone();
        }
        // Tear both domains down: every frame they held comes back.
        for (i, dom) in DOMS.into_iter().enumerate() {
            if !w.dying[i] {
                w.mm.relinquish(&mut w.mem, dom).unwrap();
            }
        }
        check(&w.mm, &w.mem, &prev).map_err(TestCaseError::fail)?;
        for (f, p) in w.mm.frames.iter().enumerate() {
            let expected_busy = matches!(f, 0 | 1 | 2 | 62 | 63 | 58..=61 | 3);
            if !expected_busy && p.owner != Owner::Free {
                return Err(TestCaseError::fail(format!("frame {f} not returned: {p:?}")));
            }
        }
        for dom in DOMS {
            prop_assert_eq!(w.mm.domain(dom).unwrap().tot_pages, 0);
            w.mm.destroy_domain(dom).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        }
        prop_assert_eq!(w.mm.page(m(2)).unwrap().owner, Owner::Hypervisor);
        prop_assert_eq!(w.mm.inconsistencies(), 0);
    }
}
