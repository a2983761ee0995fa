//! The toolstack against a mock hypervisor and xenstore: create sequence, xenstore nodes,
//! vCPU context, unwinding on every failure point, xl verbs and output, lifecycle
//! actions, console backend.

#[path = "../../../builder/tests/common/mod.rs"]
mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use domain_builder::BuildMemory;
use xen_abi::domctl::*;
use xen_abi::xen::{VcpuGuestContext, FLAT_KERNEL_CS, VGCF_IN_KERNEL, VGCF_ONLINE};
use xen_abi::{Mfn, Pfn};

use super::platform::*;
use super::*;
use crate::consback::{RingMem, IN_OFF, IN_PROD, OUT_OFF, OUT_PROD};
use crate::{HostError, PhysInfo};

type Frames = Rc<RefCell<HashMap<u64, Box<[u8; 4096]>>>>;

#[derive(Default)]
struct MockDom {
    flags: u32,
    pages: Vec<u64>,
    max_kb: u64,
    vcpus: u32,
    pinned: Option<u64>,
    ctx: Option<Box<VcpuGuestContext>>,
    hypercall_page: Option<u64>,
    ports: u32,
}

#[derive(Default)]
struct MockHv {
    doms: BTreeMap<u16, MockDom>,
    frames: Frames,
    next_mfn: u64,
    next_domid: u16,
    log: Vec<String>,
    fail: Option<&'static str>,
    free_pages: u64,
    mapped: usize,
    notified: Vec<u32>,
    bound: Vec<u32>,
    now: u64,
}

struct MockMem {
    p2m: Vec<Mfn>,
    frames: Frames,
}

impl BuildMemory for MockMem {
    fn mfn(&self, pfn: Pfn) -> Mfn {
        self.p2m[pfn.raw() as usize]
    }
    fn write(&mut self, pfn: Pfn, offset: usize, bytes: &[u8]) {
        let mfn = self.p2m[pfn.raw() as usize].raw();
        let mut f = self.frames.borrow_mut();
        let page = f.entry(mfn).or_insert_with(|| Box::new([0; 4096]));
        page[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
    fn zero(&mut self, pfn: Pfn) {
        let mfn = self.p2m[pfn.raw() as usize].raw();
        self.frames.borrow_mut().insert(mfn, Box::new([0; 4096]));
    }
}

struct MockRing {
    mfn: u64,
    frames: Frames,
}

impl MockRing {
    fn with<T>(&self, f: impl FnOnce(&mut [u8; 4096]) -> T) -> T {
        let mut fr = self.frames.borrow_mut();
        f(fr.entry(self.mfn).or_insert_with(|| Box::new([0; 4096])))
    }
}

impl RingMem for MockRing {
    fn load32(&self, off: usize) -> u32 {
        self.with(|p| u32::from_le_bytes(p[off..off + 4].try_into().unwrap()))
    }
    fn store32(&mut self, off: usize, v: u32) {
        self.with(|p| p[off..off + 4].copy_from_slice(&v.to_le_bytes()))
    }
    fn load8(&self, off: usize) -> u8 {
        self.with(|p| p[off])
    }
    fn store8(&mut self, off: usize, v: u8) {
        self.with(|p| p[off] = v)
    }
}

const EPERM: HostError = HostError(-1);

impl MockHv {
    fn new() -> Self {
        let mut h = MockHv {
            next_mfn: 0x1000,
            next_domid: 1,
            free_pages: 8192,
            ..Default::default()
        };
        h.doms.insert(
            0,
            MockDom {
                flags: DOMINF_RUNNING | DOMINF_PRIVILEGED,
                pages: vec![0; 16384],
                vcpus: 1,
                ..Default::default()
            },
        );
        h
    }
    fn step(&mut self, what: &'static str) -> Result<(), HostError> {
        self.log.push(what.into());
        if self.fail == Some(what) {
            Err(EPERM)
        } else {
            Ok(())
        }
    }
    fn dom(&mut self, d: u16) -> Result<&mut MockDom, HostError> {
        self.doms.get_mut(&d).ok_or(HostError(-3))
    }
}

impl Hypervisor for MockHv {
    type Mem = MockMem;
    type Ring = MockRing;

    fn create_domain(&mut self, max_vcpus: u32, max_memkb: u64) -> Result<u16, HostError> {
        self.step("createdomain")?;
        let id = self.next_domid;
        self.next_domid += 1;
        self.doms.insert(
            id,
            MockDom {
                flags: DOMINF_PAUSED,
                max_kb: max_memkb,
                vcpus: max_vcpus,
                ..Default::default()
            },
        );
        Ok(id)
    }
    fn destroy_domain(&mut self, domid: u16) -> Result<(), HostError> {
        self.step("destroydomain")?;
        let d = self.doms.remove(&domid).ok_or(HostError(-3))?;
        self.free_pages += d.pages.len() as u64;
        Ok(())
    }
    fn pause_domain(&mut self, domid: u16) -> Result<(), HostError> {
        self.step("pause")?;
        self.dom(domid)?.flags |= DOMINF_PAUSED;
        Ok(())
    }
    fn unpause_domain(&mut self, domid: u16) -> Result<(), HostError> {
        self.step("unpause")?;
        let d = self.dom(domid)?;
        d.flags &= !DOMINF_PAUSED;
        d.flags |= DOMINF_BLOCKED;
        Ok(())
    }
    fn domain_info(&mut self, first: u16) -> Result<Option<DomInfo>, HostError> {
        Ok(self.doms.range(first..).next().map(|(&id, d)| DomInfo {
            domid: id,
            flags: d.flags,
            tot_pages: d.pages.len() as u64,
            max_pages: d.max_kb / 4,
            shared_info_frame: 0xfeed,
            cpu_time_ns: 1_234_567_890 * u64::from(id + 1),
            nr_online_vcpus: d.vcpus,
            max_vcpu_id: d.vcpus.saturating_sub(1),
        }))
    }
    fn set_max_mem(&mut self, domid: u16, max_memkb: u64) -> Result<(), HostError> {
        self.step("max_mem")?;
        self.dom(domid)?.max_kb = max_memkb;
        Ok(())
    }
    fn set_max_vcpus(&mut self, domid: u16, max: u32) -> Result<(), HostError> {
        self.step("max_vcpus")?;
        self.dom(domid)?.vcpus = max;
        Ok(())
    }
    fn populate_physmap(&mut self, domid: u16, frames: &mut [u64]) -> Result<usize, HostError> {
        self.step("populate_physmap")?;
        let n = (frames.len() as u64).min(self.free_pages) as usize;
        for f in frames.iter_mut().take(n) {
            // A non-identity PFN → MFN mapping.
            *f = self.next_mfn + 7;
            self.next_mfn += 3;
        }
        self.free_pages -= n as u64;
        let mfns = frames[..n].to_vec();
        self.dom(domid)?.pages.extend(mfns);
        Ok(n)
    }
    fn map_foreign(&mut self, domid: u16, p2m: Vec<Mfn>) -> Result<MockMem, HostError> {
        self.step("map_foreign")?;
        let d = self.dom(domid)?;
        assert!(p2m.iter().all(|m| d.pages.contains(&m.raw())));
        self.mapped += 1;
        Ok(MockMem {
            p2m,
            frames: self.frames.clone(),
        })
    }
    fn unmap_foreign(&mut self, _mem: MockMem) -> Result<(), HostError> {
        self.log.push("unmap_foreign".into());
        self.mapped -= 1;
        Ok(())
    }
    fn pin_l4(&mut self, domid: u16, mfn: Mfn) -> Result<(), HostError> {
        self.step("pin_l4")?;
        self.dom(domid)?.pinned = Some(mfn.raw());
        Ok(())
    }
    fn alloc_unbound(&mut self, domid: u16, remote_dom: u16) -> Result<u32, HostError> {
        self.step("alloc_unbound")?;
        assert_eq!(remote_dom, 0);
        let d = self.dom(domid)?;
        d.ports += 1;
        Ok(d.ports)
    }
    fn set_vcpu_context(
        &mut self,
        domid: u16,
        vcpu: u32,
        ctx: &VcpuGuestContext,
    ) -> Result<(), HostError> {
        self.step("setvcpucontext")?;
        assert_eq!(vcpu, 0);
        self.dom(domid)?.ctx = Some(Box::new(*ctx));
        Ok(())
    }
    fn hypercall_init(&mut self, domid: u16, gmfn: Mfn) -> Result<(), HostError> {
        self.step("hypercall_init")?;
        self.dom(domid)?.hypercall_page = Some(gmfn.raw());
        Ok(())
    }
    fn shutdown_domain(&mut self, domid: u16, reason: u32) -> Result<(), HostError> {
        let d = self.dom(domid)?;
        d.flags |= DOMINF_SHUTDOWN | (reason << DOMINF_SHUTDOWNSHIFT);
        Ok(())
    }
    fn offered_features(&mut self) -> u32 {
        u32::MAX
    }
    fn map_ring(&mut self, domid: u16, mfn: Mfn) -> Result<MockRing, HostError> {
        self.step("map_ring")?;
        assert!(self.dom(domid)?.pages.contains(&mfn.raw()));
        self.mapped += 1;
        Ok(MockRing {
            mfn: mfn.raw(),
            frames: self.frames.clone(),
        })
    }
    fn unmap_ring(&mut self, _ring: MockRing) {
        self.log.push("unmap_ring".into());
        self.mapped -= 1;
    }
    fn bind_interdomain(&mut self, _domid: u16, remote_port: u32) -> Result<u32, HostError> {
        self.step("bind_interdomain")?;
        let local = 100 + remote_port;
        self.bound.push(local);
        Ok(local)
    }
    fn notify(&mut self, local_port: u32) {
        self.notified.push(local_port);
    }
    fn unbind(&mut self, local_port: u32) {
        self.bound.retain(|&p| p != local_port);
    }
    fn now_ns(&mut self) -> u64 {
        self.now
    }
    fn block_devices(&mut self) -> Vec<String> {
        vec!["vda".into(), "vdb".into()]
    }
}

#[derive(Default)]
struct MockStore {
    nodes: BTreeMap<String, String>,
    perms: BTreeMap<String, Vec<Perm>>,
    introduced: BTreeMap<u16, (u64, u32)>,
    fail: Option<&'static str>,
    log: Vec<String>,
}

impl MockStore {
    fn step(&mut self, what: &'static str) -> Result<(), HostError> {
        if self.fail == Some(what) {
            Err(HostError(-13))
        } else {
            Ok(())
        }
    }
    fn get(&self, p: &str) -> Option<&str> {
        self.nodes.get(p).map(|s| s.as_str())
    }
}

impl Store for MockStore {
    fn write(&mut self, path: &str, value: &str) -> Result<(), HostError> {
        self.step("write")?;
        self.nodes.insert(path.into(), value.into());
        Ok(())
    }
    fn read(&mut self, path: &str) -> Result<Option<String>, HostError> {
        Ok(self.nodes.get(path).cloned())
    }
    fn mkdir(&mut self, path: &str) -> Result<(), HostError> {
        self.step("write")?;
        self.nodes.entry(path.into()).or_default();
        Ok(())
    }
    fn rm(&mut self, path: &str) -> Result<(), HostError> {
        let prefix = format!("{path}/");
        self.nodes
            .retain(|k, _| k != path && !k.starts_with(&prefix));
        self.perms
            .retain(|k, _| k != path && !k.starts_with(&prefix));
        Ok(())
    }
    fn set_perms(&mut self, path: &str, perms: &[Perm]) -> Result<(), HostError> {
        self.step("set_perms")?;
        assert!(self.nodes.contains_key(path), "set_perms on missing {path}");
        self.perms.insert(path.into(), perms.to_vec());
        Ok(())
    }
    fn introduce(&mut self, domid: u16, store_mfn: u64, store_port: u32) -> Result<(), HostError> {
        self.step("introduce")?;
        self.log.push(format!("introduce {domid}"));
        self.introduced.insert(domid, (store_mfn, store_port));
        Ok(())
    }
    fn release(&mut self, domid: u16) -> Result<(), HostError> {
        self.log.push(format!("release {domid}"));
        self.introduced.remove(&domid);
        Ok(())
    }
}

#[derive(Default)]
struct Out(String);

impl Write for Out {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.push_str(s);
        Ok(())
    }
}

impl Host for Out {
    fn write_bytes(&mut self, b: &[u8]) {
        self.0.push_str(&String::from_utf8_lossy(b));
    }
    fn xen_version(&mut self) -> Result<(u16, u16), HostError> {
        Ok((4, 19))
    }
    fn xen_extraversion(&mut self) -> Result<[u8; 16], HostError> {
        Ok([0; 16])
    }
    fn xen_capabilities(&mut self) -> Result<[u8; 1024], HostError> {
        Ok([0; 1024])
    }
    fn physinfo(&mut self) -> Result<PhysInfo, HostError> {
        Ok(PhysInfo::default())
    }
    fn dom0_pages(&self) -> u64 {
        16384
    }
    fn uptime_ns(&mut self) -> u64 {
        0
    }
    fn read_console(&mut self, _index: u32, _buf: &mut [u8]) -> Result<(usize, u32), HostError> {
        Ok((0, 0))
    }
}

fn cpio_push(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let fields = [
        1u32,
        0o100644,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

const DEMO: &str = "name = \"demo\"\nkernel = \"/boot/domu\"\nmemory = 4\nvcpus = 1\non_crash = \"destroy\"\nextra = \"hello\"\n";

fn ramdisk() -> &'static [u8] {
    let mut a = Vec::new();
    cpio_push(
        &mut a,
        "etc/xen/disk.cfg",
        b"name = \"d\"\nkernel = \"/boot/domu\"\nmemory = 4\ndisk = [ 'phy:/dev/vda,xvda,w' ]\n",
    );
    cpio_push(&mut a, "etc/xen/demo.cfg", DEMO.as_bytes());
    cpio_push(
        &mut a,
        "etc/xen/keep.cfg",
        b"name = \"keep\"\nkernel = \"/boot/domu\"\nmemory = 4\non_poweroff = \"preserve\"\non_crash = \"restart\"\n",
    );
    cpio_push(
        &mut a,
        "etc/xen/bad.cfg",
        b"name = \"x\"\nkernel = \"/boot/domu\"\nmemory = many\n",
    );
    cpio_push(
        &mut a,
        "etc/xen/nokernel.cfg",
        b"name = \"nk\"\nkernel = \"/boot/missing\"\n",
    );
    cpio_push(
        &mut a,
        "etc/xen/big.cfg",
        b"name = \"big\"\nkernel = \"/boot/domu\"\nmemory = 64\n",
    );
    cpio_push(&mut a, "boot/domu", &common::xtf_like().emit());
    cpio_push(&mut a, "TRAILER!!!", b"");
    Box::leak(a.into_boxed_slice())
}

type Ts = Toolstack<MockHv, MockStore>;

fn ts() -> Ts {
    Toolstack::new(MockHv::new(), MockStore::default(), ramdisk())
}

fn run(t: &mut Ts, line: &str) -> String {
    let mut o = Out::default();
    let args: Vec<&str> = line.split_whitespace().collect();
    t.command(&args, &mut o);
    o.0
}

#[test]
fn create_sequence_and_state() {
    let mut t = ts();
    let out = run(&mut t, "create /etc/xen/demo.cfg");
    assert_eq!(out, "Parsing config from /etc/xen/demo.cfg\n");
    let ops: Vec<&str> = t.hv.log.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        ops,
        [
            "createdomain",
            "max_mem",
            "max_vcpus",
            "populate_physmap",
            "populate_physmap",
            "alloc_unbound",
            "alloc_unbound",
            "map_foreign",
            "unmap_foreign",
            "pin_l4",
            "hypercall_init",
            "setvcpucontext",
            "map_ring",
            "bind_interdomain",
            "unpause",
        ]
    );
    let d = &t.hv.doms[&1];
    assert_eq!(d.pages.len(), 1024);
    assert_eq!(d.max_kb, 4096);
    let ctx = d.ctx.as_ref().unwrap();
    assert_eq!(ctx.flags, VGCF_IN_KERNEL | VGCF_ONLINE);
    assert_eq!(ctx.user_regs.cs, FLAT_KERNEL_CS);
    assert_eq!(ctx.user_regs.ss, 0xe02b);
    assert_eq!(ctx.user_regs.rip, 0x10_0000);
    assert_eq!(ctx.kernel_sp, ctx.user_regs.rsp);
    assert_eq!(ctx.kernel_ss, 0xe02b);
    assert_eq!(ctx.ctrlreg[3] >> 12, d.pinned.unwrap());
    // The hypercall page is the image's frame 2 (0x102000 - 0x100000 past VIRT_BASE 0).
    assert_eq!(d.hypercall_page, Some(d.pages[0x102]));
    // start_info names the channels and frames xenstore has.
    let si_va = ctx.user_regs.rsi;
    let si_mfn = d.pages[(si_va >> 12) as usize];
    let frames = t.hv.frames.borrow();
    let si = &frames[&si_mfn];
    let u64_at = |o: usize| u64::from_le_bytes(si[o..o + 8].try_into().unwrap());
    assert_eq!(&si[..14], b"xen-3.0-x86_64");
    assert_eq!(u64_at(32), 1024);
    assert_eq!(u64_at(40), 0xfeed << 12);
    let xs = &t.xs;
    assert_eq!(
        xs.get("/local/domain/1/store/ring-ref").unwrap(),
        u64_at(56).to_string()
    );
    assert_eq!(
        xs.get("/local/domain/1/store/port").unwrap(),
        (u64_at(64) as u32).to_string()
    );
    assert_eq!(
        xs.get("/local/domain/1/console/ring-ref").unwrap(),
        u64_at(72).to_string()
    );
    assert_eq!(
        xs.get("/local/domain/1/console/port").unwrap(),
        (u64_at(80) as u32).to_string()
    );
    assert_eq!(&si[128..134], b"hello\0");
    assert_eq!(xs.introduced[&1], (u64_at(56), u64_at(64) as u32));
    assert_eq!(t.hv.mapped, 1, "only the console page stays mapped");
    assert_eq!(t.hv.bound, [102]);
}

#[test]
fn xenstore_nodes_and_permissions() {
    let mut t = ts();
    run(&mut t, "create /etc/xen/demo.cfg");
    let xs = &t.xs;
    for (k, v) in [
        ("/local/domain/1/name", "demo"),
        ("/local/domain/1/domid", "1"),
        ("/local/domain/1/memory/target", "4096"),
        ("/local/domain/1/memory/static-max", "4096"),
        ("/local/domain/1/console/type", "xenconsoled"),
        ("/local/domain/1/console/backend-id", "0"),
        ("/local/domain/1/control/shutdown", ""),
        ("/local/domain/1/cpu/0/availability", "online"),
        ("/local/domain/0/backend/console/1/0/frontend-id", "1"),
    ] {
        assert_eq!(xs.get(k), Some(v), "{k}");
    }
    let vm = xs.get("/local/domain/1/vm").unwrap().to_string();
    assert!(vm.starts_with("/vm/") && vm.len() == 40, "{vm}");
    assert_eq!(xs.get(&format!("{vm}/name")), Some("demo"));
    let ro = vec![
        Perm {
            domid: 0,
            access: Access::None,
        },
        Perm {
            domid: 1,
            access: Access::Read,
        },
    ];
    let owned = vec![Perm {
        domid: 1,
        access: Access::None,
    }];
    assert_eq!(xs.perms["/local/domain/1"], ro);
    assert_eq!(xs.perms["/local/domain/1/control"], owned);
    assert_eq!(xs.perms["/local/domain/1/control/shutdown"], owned);
    assert_eq!(xs.perms["/local/domain/1/data"], owned);
    assert_eq!(xs.perms[&vm], ro);
}

#[test]
fn every_failure_unwinds() {
    for step in [
        "createdomain",
        "max_mem",
        "max_vcpus",
        "populate_physmap",
        "alloc_unbound",
        "map_foreign",
        "pin_l4",
        "hypercall_init",
        "setvcpucontext",
        "map_ring",
        "bind_interdomain",
        "unpause",
    ] {
        let mut t = ts();
        t.hv.fail = Some(step);
        let out = run(&mut t, "create /etc/xen/demo.cfg");
        assert!(out.contains("failed"), "{step}: {out}");
        assert_eq!(t.hv.doms.len(), 1, "{step}: domain left behind");
        assert_eq!(t.hv.free_pages, 8192, "{step}: memory leaked");
        assert_eq!(t.hv.mapped, 0, "{step}: mapping left");
        assert!(t.hv.bound.is_empty(), "{step}: channel left");
        assert!(
            t.xs.nodes.is_empty(),
            "{step}: xenstore nodes left: {:?}",
            t.xs.nodes
        );
        assert!(t.xs.introduced.is_empty(), "{step}");
        // The name is free again.
        t.hv.fail = None;
        assert_eq!(
            run(&mut t, "create /etc/xen/demo.cfg"),
            "Parsing config from /etc/xen/demo.cfg\n"
        );
    }
    for step in ["write", "set_perms", "introduce"] {
        let mut t = ts();
        t.xs.fail = Some(step);
        let out = run(&mut t, "create /etc/xen/demo.cfg");
        assert!(out.contains("xenstore"), "{step}: {out}");
        assert_eq!(t.hv.doms.len(), 1, "{step}");
        assert!(t.xs.nodes.is_empty(), "{step}: {:?}", t.xs.nodes);
        assert!(t.xs.introduced.is_empty());
    }
    // Not enough memory: the partial population is given back.
    let mut t = ts();
    t.hv.free_pages = 1000;
    let out = run(&mut t, "create /etc/xen/demo.cfg");
    assert!(out.contains("out of memory"), "{out}");
    assert_eq!(t.hv.free_pages, 1000);
}

#[test]
fn config_and_file_errors() {
    let mut t = ts();
    let out = run(&mut t, "create /etc/xen/bad.cfg");
    assert!(
        out.contains("/etc/xen/bad.cfg:3: config parsing error"),
        "{out}"
    );
    let out = run(&mut t, "create /etc/xen/none.cfg");
    assert!(out.contains("No such file"), "{out}");
    let out = run(&mut t, "create /etc/xen/nokernel.cfg");
    assert!(out.contains("/boot/missing"), "{out}");
    assert!(t.hv.log.is_empty());
    run(&mut t, "create /etc/xen/demo.cfg");
    let out = run(&mut t, "create /etc/xen/demo.cfg");
    assert!(out.contains("already exists"), "{out}");
    assert!(run(&mut t, "create").starts_with("Usage"));
}

#[test]
fn list_and_names() {
    let mut t = ts();
    run(&mut t, "create /etc/xen/demo.cfg");
    let out = run(&mut t, "list");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "Name                                        ID   Mem VCPUs\tState\tTime(s)"
    );
    assert_eq!(
        lines[1],
        "Domain-0                                     0    64     1     r-----       1.2"
    );
    assert_eq!(
        lines[2],
        "demo                                         1     4     1     -b----       2.5"
    );
    assert_eq!(run(&mut t, "domid demo"), "1\n");
    assert_eq!(run(&mut t, "domid Domain-0"), "0\n");
    assert!(run(&mut t, "domid nope").contains("maybe this domain does not exist"));
    assert_eq!(run(&mut t, "domname 1"), "demo\n");
    assert_eq!(run(&mut t, "domname 0"), "Domain-0\n");
    assert!(run(&mut t, "domname 9").contains("does not exist"));
    run(&mut t, "pause demo");
    assert!(run(&mut t, "list").contains("-bp---"));
    run(&mut t, "unpause 1");
    assert!(!run(&mut t, "list").contains("-bp---"));
    assert!(run(&mut t, "pause nope").contains("does not exist"));
    assert!(run(&mut t, "destroy 0").contains("cannot destroy Domain-0"));
}

#[test]
fn destroy_releases_everything() {
    let mut t = ts();
    for _ in 0..5 {
        run(&mut t, "create /etc/xen/demo.cfg");
        assert_eq!(t.hv.free_pages, 8192 - 1024);
        assert_eq!(run(&mut t, "destroy demo"), "");
        assert_eq!(t.hv.doms.len(), 1);
        assert_eq!(t.hv.free_pages, 8192);
        assert_eq!(t.hv.mapped, 0);
        assert!(t.hv.bound.is_empty());
        assert!(t.xs.nodes.is_empty(), "{:?}", t.xs.nodes);
        assert!(t.xs.introduced.is_empty());
    }
}

#[test]
fn shutdown_reboot_memset_write_xenstore() {
    let mut t = ts();
    run(&mut t, "create /etc/xen/demo.cfg");
    assert_eq!(run(&mut t, "shutdown demo"), "Shutting down domain 1\n");
    assert_eq!(
        t.xs.get("/local/domain/1/control/shutdown"),
        Some("poweroff")
    );
    assert_eq!(run(&mut t, "reboot 1"), "Rebooting domain 1\n");
    assert_eq!(t.xs.get("/local/domain/1/control/shutdown"), Some("reboot"));
    assert_eq!(run(&mut t, "mem-set demo 2"), "");
    assert_eq!(t.xs.get("/local/domain/1/memory/target"), Some("2048"));
    assert_eq!(run(&mut t, "mem-set demo 3072k"), "");
    assert_eq!(t.xs.get("/local/domain/1/memory/target"), Some("3072"));
    assert!(run(&mut t, "mem-set demo 8m").contains("above"));
    assert!(run(&mut t, "mem-set demo lots").contains("Invalid memory size"));
    assert_eq!(parse_mem_kb("1g"), Some(1 << 20));
    assert_eq!(parse_mem_kb("2048b"), Some(2));
    assert_eq!(parse_mem_kb("16"), Some(16 << 10));
    assert_eq!(parse_mem_kb("x"), None);
}

#[test]
fn lifecycle_actions() {
    let mut t = ts();
    run(&mut t, "create /etc/xen/demo.cfg"); // domid 1: on_crash destroy
    run(&mut t, "create /etc/xen/keep.cfg"); // domid 2: poweroff preserve, crash restart
    let mut o = Out::default();
    // Nothing happened yet.
    t.handle_dom_exc(&mut o);
    assert_eq!(t.hv.doms.len(), 3);
    t.hv.shutdown_domain(1, xen_abi::sched::SHUTDOWN_CRASH)
        .unwrap();
    t.handle_dom_exc(&mut o);
    assert!(
        o.0.contains("domain 1 (demo) has shut down, reason crash; action destroy"),
        "{}",
        o.0
    );
    assert!(!t.hv.doms.contains_key(&1));
    assert!(t.hv.doms.contains_key(&2), "the other domain keeps running");
    assert!(t.xs.get("/local/domain/1/name").is_none());
    assert!(t.xs.log.contains(&"release 1".to_string()));
    // Crash with restart: a new domain with the same name.
    t.hv.shutdown_domain(2, xen_abi::sched::SHUTDOWN_CRASH)
        .unwrap();
    t.handle_dom_exc(&mut o);
    assert!(!t.hv.doms.contains_key(&2));
    assert!(t.hv.doms.contains_key(&3));
    assert_eq!(run(&mut t, "domid keep"), "3\n");
    assert_eq!(t.xs.get("/local/domain/3/name"), Some("keep"));
    // Poweroff with preserve: kept, shown as shut down, destroyed by xl destroy.
    t.hv.shutdown_domain(3, xen_abi::sched::SHUTDOWN_POWEROFF)
        .unwrap();
    t.handle_dom_exc(&mut o);
    t.handle_dom_exc(&mut o);
    assert!(t.hv.doms.contains_key(&3));
    assert!(run(&mut t, "list")
        .contains("keep                                         3     4     1     -b-s--"));
    run(&mut t, "destroy keep");
    assert_eq!(t.hv.doms.len(), 1);
    assert_eq!(t.hv.free_pages, 8192);
    // A domain destroyed behind our back is forgotten.
    run(&mut t, "create /etc/xen/demo.cfg");
    let id = t.lookup("demo").unwrap();
    t.hv.destroy_domain(id).unwrap();
    t.handle_dom_exc(&mut o);
    assert!(t.lookup("demo").is_none());
    assert!(t.xs.nodes.is_empty());
}

fn console_ring(t: &Ts, id: u16) -> MockRing {
    let mfn: u64 =
        t.xs.get(&format!("/local/domain/{id}/console/ring-ref"))
            .unwrap()
            .parse()
            .unwrap();
    MockRing {
        mfn,
        frames: t.hv.frames.clone(),
    }
}

fn guest_print(r: &mut MockRing, s: &[u8]) {
    let mut prod = r.load32(OUT_PROD);
    for &b in s {
        r.store8(OUT_OFF + (prod & 2047) as usize, b);
        prod = prod.wrapping_add(1);
    }
    r.store32(OUT_PROD, prod);
}

#[test]
fn console_buffering_attach_and_detach() {
    let mut t = ts();
    run(&mut t, "create /etc/xen/demo.cfg");
    let mut r = console_ring(&t, 1);
    guest_print(&mut r, b"booting\r\n");
    let mut o = Out::default();
    t.poll_consoles(&mut o);
    assert_eq!(o.0, "", "nobody attached: buffered only");
    assert_eq!(t.console_log(1).unwrap(), b"booting\r\n");
    assert!(t.hv.notified.contains(&102));
    // Attach: the buffer is replayed.
    assert_eq!(run(&mut t, "console demo"), "booting\r\n");
    assert_eq!(t.attached(), Some(1));
    guest_print(&mut r, b"more");
    t.poll_consoles(&mut o);
    assert_eq!(o.0, "more");
    // Typing goes to the guest's input ring.
    assert!(!t.console_input(b"ls\r", &mut o));
    assert_eq!(r.load32(IN_PROD), 3);
    assert_eq!(r.load8(IN_OFF), b'l');
    // Ctrl-] detaches; what came before it is still delivered.
    assert!(t.console_input(b"x\x1dignored", &mut o));
    assert_eq!(r.load32(IN_PROD), 4);
    assert_eq!(t.attached(), None);
    guest_print(&mut r, b"later");
    o.0.clear();
    t.poll_consoles(&mut o);
    assert_eq!(o.0, "");
    // create -c attaches at once.
    run(&mut t, "destroy demo");
    let out = run(&mut t, "create /etc/xen/demo.cfg -c");
    assert_eq!(out, "Parsing config from /etc/xen/demo.cfg\n");
    assert_eq!(t.attached(), t.lookup("demo"));
    // Destroying the attached domain detaches.
    run(&mut t, "destroy demo");
    assert_eq!(t.attached(), None);
}

#[test]
fn usage_and_info_passthrough() {
    let mut t = ts();
    assert!(run(&mut t, "").contains("Usage: xl"));
    assert!(run(&mut t, "frobnicate").contains("not implemented"));
    assert!(run(&mut t, "info").contains("xen_major              : 4"));
    assert!(run(&mut t, "destroy").contains("Usage: xl destroy"));
}

#[test]
fn memory_too_large_for_host() {
    let mut t = ts();
    let out = run(&mut t, "create /etc/xen/big.cfg");
    assert!(out.contains("out of memory"), "{out}");
    assert_eq!(t.hv.doms.len(), 1);
    assert_eq!(t.hv.free_pages, 8192);
}

#[test]
fn create_with_key_value_overrides() {
    let mut t = ts();
    let out = run(
        &mut t,
        "create /etc/xen/demo.cfg name=\"other\" extra=\"peer=1 blk=verify x=2\"",
    );
    assert_eq!(out, "Parsing config from /etc/xen/demo.cfg\n");
    let list = run(&mut t, "list");
    assert!(list.contains("other "), "{list}");
    assert_eq!(
        t.xs.get("/vm/00000000-0000-0000-0000-000000000001/image/cmdline")
            .or_else(|| t
                .xs
                .nodes
                .iter()
                .find(|(k, _)| k.ends_with("/image/cmdline"))
                .map(|(_, v)| v.as_str())),
        Some("peer=1 blk=verify x=2")
    );
    assert!(!list.contains("demo "), "{list}");
    // The file's own name is free again: the override named the domain.
    let out = run(&mut t, "create /etc/xen/demo.cfg");
    assert_eq!(out, "Parsing config from /etc/xen/demo.cfg\n");
    let out = run(&mut t, "create /etc/xen/demo.cfg name=\"third\" memory=");
    assert!(out.contains("memory=: config parsing error"), "{out}");
    assert!(run(&mut t, "create /etc/xen/demo.cfg -x").starts_with("Usage"));
}

#[test]
fn disks_of_a_config_are_attached_and_removed_with_the_domain() {
    let mut t = ts();
    run(&mut t, "create /etc/xen/disk.cfg");
    let fe = "/local/domain/1/device/vbd/51712";
    let be = "/local/domain/0/backend/vbd/1/51712";
    assert_eq!(t.xs.get(&format!("{be}/params")), Some("vda"));
    assert_eq!(t.xs.get(&format!("{be}/mode")), Some("w"));
    assert_eq!(t.xs.get(&format!("{be}/state")), Some("1"));
    assert_eq!(t.xs.get(&format!("{fe}/backend")), Some(be));
    assert_eq!(t.xs.get(&format!("{fe}/state")), Some("1"));
    // The guest owns its frontend directory, dom0 the backend one (readable by the guest).
    assert_eq!(t.xs.perms[fe][0].domid, 1);
    assert_eq!(t.xs.perms[be][0].domid, 0);
    assert_eq!(
        t.xs.perms[be][1],
        Perm {
            domid: 1,
            access: Access::Read
        }
    );
    assert!(t.has_disk(1, 51712));
    // The same disk cannot go to a second domain.
    let out = run(&mut t, "create /etc/xen/disk.cfg name=e");
    assert!(out.contains("already in use by domain 1"), "{out}");
    assert!(
        !t.hv.doms.contains_key(&2),
        "the half-built domain is destroyed"
    );
    run(&mut t, "destroy d");
    assert!(!t.has_disk(1, 51712));
    assert!(!t
        .xs
        .nodes
        .keys()
        .any(|k| k.starts_with("/local/domain/0/backend/vbd/1")));
    // Free again.
    let out = run(&mut t, "create /etc/xen/disk.cfg name=f");
    assert!(!out.contains("xl:"), "{out}");
}

#[test]
fn create_refuses_unknown_or_unsupported_disks() {
    let mut t = ts();
    let out = run(&mut t, "create /etc/xen/demo.cfg disk=['phy:vdz,xvda,w']");
    assert!(out.contains("dom0 has no such block device"), "{out}");
    let out = run(
        &mut t,
        "create /etc/xen/demo.cfg disk=['file:/x.img,xvda,w']",
    );
    assert!(out.contains("phy: only"), "{out}");
    assert_eq!(t.hv.doms.len(), 1, "only dom0 is left");
    assert!(!t.xs.nodes.keys().any(|k| k.contains("/vbd")));
}

#[test]
fn block_attach_list_detach() {
    let mut t = ts();
    run(&mut t, "create /etc/xen/demo.cfg");
    assert_eq!(run(&mut t, "block-attach demo phy:vdb,xvdb,r"), "");
    let be = "/local/domain/0/backend/vbd/1/51728";
    let fe = "/local/domain/1/device/vbd/51728";
    assert_eq!(t.xs.get(&format!("{be}/mode")), Some("r"));
    // A connected device shows the frontend's channel and ring.
    t.xs.nodes.insert(format!("{be}/state"), "4".into());
    t.xs.nodes.insert(format!("{fe}/event-channel"), "9".into());
    t.xs.nodes.insert(format!("{fe}/ring-ref"), "8".into());
    let out = run(&mut t, "block-list demo");
    assert_eq!(
        out,
        format!(
            "{}\n51728 0   51728  4     9      8        {be}\n",
            disk::BLOCK_LIST_HEADER
        )
    );
    assert!(run(&mut t, "block-attach demo phy:vdb,xvdb,r").contains("already has a device"));
    assert!(run(&mut t, "block-attach demo phy:vda,xvdb,w").contains("already has a device"));
    assert!(run(&mut t, "block-attach demo bogus").contains("no vdev"));
    assert!(run(&mut t, "block-attach nosuch phy:vda,xvdc").contains("does not exist"));
    assert!(run(&mut t, "block-detach demo xvdq").contains("does not exist"));
    // Detach asks the backend to close and waits for it.
    assert_eq!(run(&mut t, "block-detach demo xvdb"), "");
    assert_eq!(t.xs.get(&format!("{be}/online")), Some("0"));
    assert_eq!(t.xs.get(&format!("{be}/state")), Some("5"));
    t.poll_devices();
    assert!(t.has_disk(1, 51728), "still closing");
    t.xs.nodes.insert(format!("{be}/state"), "6".into());
    t.poll_devices();
    assert!(!t.has_disk(1, 51728));
    assert!(t.xs.get(&format!("{be}/state")).is_none());
    assert!(t.xs.get(&format!("{fe}/state")).is_none());
    assert_eq!(
        run(&mut t, "block-list demo"),
        format!("{}\n", disk::BLOCK_LIST_HEADER)
    );
}

#[test]
fn block_detach_gives_up_on_a_silent_backend() {
    let mut t = ts();
    run(&mut t, "create /etc/xen/demo.cfg");
    run(&mut t, "block-attach demo phy:vda,xvda,w");
    run(&mut t, "block-detach demo 51712");
    t.hv.now = block::DETACH_TIMEOUT_NS - 1;
    t.poll_devices();
    assert!(t.has_disk(1, 51712));
    t.hv.now = block::DETACH_TIMEOUT_NS;
    t.poll_devices();
    assert!(!t.has_disk(1, 51712));
}
