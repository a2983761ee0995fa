//! Property tests: random map/unmap/copy sequences from two mappers against a hostile
#![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
//! granter that rewrites its entries at any time, including between the hypervisor's
//! read and its compare-exchange. Checked after every step: pins match the maptrack,
//! frame references match the device mappings, and no writable pin was ever established
//! on an entry that was read-only (or not granted to the mapper) when the pin was taken.

use crate::copy::copy_one;
use crate::entry::{EntryAccess, Header};
use crate::mock::{MockEntries, MockRefs};
use crate::*;
use alloc_crate::boxed::Box;
use alloc_crate::format;
use alloc_crate::string::String;
use alloc_crate::vec::Vec;
use proptest::prelude::*;
use std::sync::{Arc, Mutex};
use xen_abi::grant_table::*;

extern crate std;

const A: DomId = DomId::new(1);
const MAPPERS: [DomId; 2] = [DomId::new(2), DomId::new(3)];
const NR: u32 = 6;

#[derive(Clone, Debug)]
enum Op {
    /// The granter writes an entry (never the hypervisor's status bits).
    GuestWrite {
        gref: u32,
        flags: u16,
        dom: usize,
        frame: u32,
    },
    /// The granter clears an entry blindly (a buggy revoke).
    GuestZap { gref: u32 },
    Map {
        mapper: usize,
        gref: u32,
        flags: u32,
    },
    Unmap {
        mapper: usize,
        nth: usize,
        host: bool,
        device: bool,
    },
    Copy {
        mapper: usize,
        gref: u32,
        to_grant: bool,
    },
    /// From now on the granter flips bits before each of the next `n` CASes.
    Meddle { n: u8, xor: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    let flags = prop_oneof![
        Just(GTF_PERMIT_ACCESS),
        Just(GTF_PERMIT_ACCESS | GTF_READONLY),
        Just(GTF_ACCEPT_TRANSFER),
        Just(GTF_INVALID),
        Just(GTF_PERMIT_ACCESS | GTF_SUB_PAGE),
        any::<u16>().prop_map(|f| f & !(GTF_READING | GTF_WRITING)),
    ];
    let map_flags = prop_oneof![
        Just(GNTMAP_HOST_MAP),
        Just(GNTMAP_HOST_MAP | GNTMAP_READONLY),
        Just(GNTMAP_DEVICE_MAP),
        Just(GNTMAP_DEVICE_MAP | GNTMAP_READONLY),
        Just(GNTMAP_DEVICE_MAP | GNTMAP_HOST_MAP),
        0u32..32,
    ];
    prop_oneof![
        4 => (0..NR, flags, 0usize..3, 100u32..104)
            .prop_map(|(gref, flags, dom, frame)| Op::GuestWrite { gref, flags, dom, frame }),
        1 => (0..NR).prop_map(|gref| Op::GuestZap { gref }),
        8 => (0usize..2, 0..NR + 1, map_flags).prop_map(|(mapper, gref, flags)| Op::Map { mapper, gref, flags }),
        4 => (0usize..2, 0usize..8, any::<bool>(), any::<bool>())
            .prop_map(|(mapper, nth, host, device)| Op::Unmap { mapper, nth, host, device }),
        2 => (0usize..2, 0..NR + 1, any::<bool>()).prop_map(|(mapper, gref, to_grant)| Op::Copy { mapper, gref, to_grant }),
        2 => (1u8..8, prop_oneof![
            Just(u32::from(GTF_READONLY)),
            Just(u32::from(GTF_TYPE_MASK)),
            Just(0x0001_0000u32),
            Just(u32::from(GTF_READONLY) | 0x0006_0000),
            any::<u32>().prop_map(|x| x & !u32::from(GTF_READING | GTF_WRITING)),
        ]).prop_map(|(n, xor)| Op::Meddle { n, xor }),
    ]
}

/// Every successful CAS: (gref, old, new).
type Log = Arc<Mutex<Vec<(u32, Header, Header)>>>;

/// Wraps the mock entries to log successful compare-exchanges.
struct Logged {
    inner: MockEntries,
    log: Log,
}

impl EntryAccess for Logged {
    fn read_header(&mut self, gref: GrantRef) -> Header {
        self.inner.read_header(gref)
    }
    fn read_frame(&mut self, gref: GrantRef) -> u32 {
        self.inner.read_frame(gref)
    }
    fn cmpxchg_header(&mut self, gref: GrantRef, old: Header, new: Header) -> Result<(), Header> {
        let r = self.inner.cmpxchg_header(gref, old, new);
        if r.is_ok() {
            self.log.lock().unwrap().push((gref.raw(), old, new));
        }
        r
    }
    fn clear_flags(&mut self, gref: GrantRef, bits: u16) {
        self.inner.clear_flags(gref, bits)
    }
}

struct World {
    gt: GrantTable,
    e: Logged,
    refs: MockRefs,
    mts: [MapTrack; 2],
    meddle: Arc<Mutex<(u8, u32)>>,
}

fn world() -> World {
    let mut gt = GrantTable::new(1);
    let mut n = 0x1000;
    gt.setup_table(1, || {
        n += 1;
        Some(Mfn::new(n))
    })
    .unwrap();
    let mut refs = MockRefs::default();
    for f in 100..103 {
        refs.own(f, A);
    }
    refs.frames.get_mut(&102).unwrap().page_table = true;
    refs.own(103, MAPPERS[0]);
    refs.own(200, MAPPERS[0]);
    refs.own(201, MAPPERS[1]);
    let meddle = Arc::new(Mutex::new((0u8, 0u32)));
    let m2 = meddle.clone();
    let mut inner = MockEntries::new(gt.nr_entries() as usize);
    inner.meddler = Some(Box::new(move |_, h: Header| {
        let mut m = m2.lock().unwrap();
        if m.0 > 0 {
            m.0 -= 1;
            Header(h.0 ^ m.1)
        } else {
            h
        }
    }));
    World {
        gt,
        e: Logged {
            inner,
            log: Arc::new(Mutex::new(Vec::new())),
        },
        refs,
        mts: [MapTrack::new(6), MapTrack::new(6)],
        meddle,
    }
}

fn check(w: &World) -> Result<(), String> {
    // Every successful CAS that took a pin was legal on the value it replaced.
    for &(g, old, new) in w.e.log.lock().unwrap().iter() {
        let added = new.flags() & !old.flags();
        if new.0 & !(u32::from(GTF_READING | GTF_WRITING))
            != old.0 & !(u32::from(GTF_READING | GTF_WRITING))
        {
            return Err(format!(
                "entry {g}: CAS changed guest bits {old:?} -> {new:?}"
            ));
        }
        if new.flags() & GTF_WRITING != 0 && old.readonly() {
            return Err(format!(
                "entry {g}: write-pinned a read-only grant ({old:?})"
            ));
        }
        if added & GTF_READING != 0 && old.flags() & GTF_READING == 0 {
            let ok = MAPPERS.iter().any(|&m| old.permits(m, false));
            if !ok {
                return Err(format!(
                    "entry {g}: pinned an entry that grants nothing ({old:?})"
                ));
            }
        }
    }
    // Pins match the maptracks (copies hold none between steps).
    let mut expect = [Pins::default(); NR as usize];
    let mut dev = std::collections::BTreeMap::<u64, (u32, u32)>::new();
    for (i, mt) in w.mts.iter().enumerate() {
        for (_, m) in mt.iter() {
            let g = m.gref.raw() as usize;
            let p = expect.get_mut(g).ok_or("gref out of range")?;
            let c = |d: bool| if d { 1u8 } else { 0 };
            if m.readonly {
                p.host_ro += c(m.uses.host);
                p.dev_ro += c(m.uses.device);
            } else {
                p.host_rw += c(m.uses.host);
                p.dev_rw += c(m.uses.device);
            }
            let s = w.gt.still_mapped();
            let a = s
                .iter()
                .find(|s| s.gref == m.gref)
                .ok_or("mapping without pin")?;
            if a.domid != MAPPERS[i] || a.frame != m.frame {
                return Err(format!("active entry {a:?} does not match mapping {m:?}"));
            }
            if m.uses.device {
                let d = dev.entry(m.frame.raw()).or_default();
                d.0 += 1;
                if !m.readonly {
                    d.1 += 1;
                }
            }
        }
    }
    for g in 0..NR {
        let got = w.gt.pins(GrantRef::new(g));
        if got != expect[g as usize] {
            return Err(format!(
                "entry {g}: pins {got:?}, maptracks say {:?}",
                expect[g as usize]
            ));
        }
    }
    for (f, fr) in w.refs.frames.iter() {
        let want = dev.get(f).copied().unwrap_or_default();
        if (fr.count, fr.writable) != want {
            return Err(format!(
                "frame {f}: refs {fr:?}, device mappings say {want:?}"
            ));
        }
    }
    if w.refs.bugs != 0 || w.gt.inconsistencies() != 0 {
        return Err("inconsistency".into());
    }
    Ok(())
}

impl World {
    fn apply(&mut self, op: &Op) {
        let doms = [A, MAPPERS[0], MAPPERS[1]];
        match *op {
            Op::GuestWrite {
                gref,
                flags,
                dom,
                frame,
            } => {
                let e = &mut self.e.inner.entries[gref as usize];
                e.flags = (e.flags & (GTF_READING | GTF_WRITING)) | flags;
                e.domid = doms[dom].raw();
                e.frame = frame;
            }
            Op::GuestZap { gref } => self.e.inner.entries[gref as usize] = Default::default(),
            Op::Map {
                mapper,
                gref,
                flags,
            } => {
                let _ = self.gt.map(
                    &mut self.e,
                    &mut self.refs,
                    A,
                    GrantRef::new(gref),
                    MAPPERS[mapper],
                    &mut self.mts[mapper],
                    flags,
                );
            }
            Op::Unmap {
                mapper,
                nth,
                host,
                device,
            } => {
                let hs: Vec<_> = self.mts[mapper].iter().map(|(h, _)| h).collect();
                if let Some(&h) = hs.get(nth % hs.len().max(1)) {
                    let _ = self.gt.unmap(
                        &mut self.e,
                        &mut self.refs,
                        &mut self.mts[mapper],
                        h,
                        MapUse { host, device },
                    );
                }
            }
            Op::Copy {
                mapper,
                gref,
                to_grant,
            } => {
                let mine = if mapper == 0 { 200 } else { 201 };
                let (s, d, fl) = if to_grant {
                    ((mine, DomId::SELF), (u64::from(gref), A), GNTCOPY_DEST_GREF)
                } else {
                    (
                        (u64::from(gref), A),
                        (mine, DomId::SELF),
                        GNTCOPY_SOURCE_GREF,
                    )
                };
                let op = GnttabCopy {
                    source: GnttabCopyPtr {
                        u: s.0,
                        domid: s.1.raw(),
                        offset: 0,
                        pad: 0,
                    },
                    dest: GnttabCopyPtr {
                        u: d.0,
                        domid: d.1.raw(),
                        offset: 0,
                        pad: 0,
                    },
                    len: 16,
                    flags: fl,
                    status: 0,
                    pad: 0,
                };
                let gt = core::mem::replace(&mut self.gt, GrantTable::new(0));
                let inner = core::mem::take(&mut self.e.inner);
                let mut tables = Tables {
                    gt,
                    e: Logged {
                        inner,
                        log: self.e.log.clone(),
                    },
                    copier: MAPPERS[mapper],
                    other_gt: GrantTable::new(0),
                    other_e: Logged {
                        inner: MockEntries::new(0),
                        log: Log::default(),
                    },
                };
                let _ = copy_one(
                    &mut tables,
                    &mut self.refs,
                    MAPPERS[mapper],
                    &op,
                    |_, _, _, _, _| {},
                );
                self.gt = tables.gt;
                self.e.inner = tables.e.inner;
            }
            Op::Meddle { n, xor } => *self.meddle.lock().unwrap() = (n, xor),
        }
    }
}

struct Tables {
    gt: GrantTable,
    e: Logged,
    copier: DomId,
    other_gt: GrantTable,
    other_e: Logged,
}

impl crate::copy::GrantTables for Tables {
    type Entries = Logged;
    fn table(&mut self, dom: DomId) -> Option<(&mut GrantTable, &mut Logged)> {
        if dom == A {
            Some((&mut self.gt, &mut self.e))
        } else if dom == self.copier {
            Some((&mut self.other_gt, &mut self.other_e))
        } else {
            None
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn hostile_granter_never_gets_a_readonly_grant_write_pinned(ops in prop::collection::vec(op(), 1..80)) {
        let mut w = world();
        for (n, op) in ops.iter().enumerate() {
            w.apply(op);
            check(&w).map_err(|e| TestCaseError::fail(format!("after step {n} {op:?}: {e}")))?;
        }
        // Unmap everything: nothing stays pinned or referenced, no status bit stays.
        *w.meddle.lock().unwrap() = (0, 0);
        for i in 0..2 {
            for (_, m) in w.mts[i].drain() {
                w.gt.release_mapping(&mut w.e, &mut w.refs, &m);
            }
        }
        check(&w).map_err(TestCaseError::fail)?;
        prop_assert!(w.gt.is_idle());
        prop_assert!(w.refs.idle());
        for g in 0..NR {
            prop_assert_eq!(w.e.inner.get(g).flags & (GTF_READING | GTF_WRITING), 0);
        }
    }
}
