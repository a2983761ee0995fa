//! A fake modern virtio-blk device for host tests: common configuration registers, a
//! doorbell, device configuration, a RAM disk, and "DMA" to pages of [`VecRingMemory`]
//! addressed by fake machine addresses (consecutive allocations are contiguous).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use ring::{RingMemory, VecRingMemory};

use super::blk::{blkf, Page};
use super::queue::{DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};
use super::{common, feature, Mmio, Transport};

/// Fake machine memory.
#[derive(Default)]
pub struct Dma {
    pages: RefCell<BTreeMap<u64, VecRingMemory>>,
    next: Cell<u64>,
}

impl Dma {
    /// A new zeroed page.
    pub fn alloc(&self) -> Page<VecRingMemory> {
        let maddr = 0x10_0000 + self.next.get() * 4096;
        self.next.set(self.next.get() + 1);
        let mem = VecRingMemory::new(4096);
        self.pages.borrow_mut().insert(maddr, mem.clone());
        Page { mem, maddr }
    }

    fn page(&self, addr: u64) -> VecRingMemory {
        self.pages.borrow()[&(addr & !0xfff)].clone()
    }

    /// Reads `buf.len()` bytes at `addr` (may cross pages).
    pub fn read(&self, mut addr: u64, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let off = (addr & 0xfff) as usize;
            let n = (4096 - off).min(buf.len() - done);
            self.page(addr).read_bytes(off, &mut buf[done..done + n]);
            done += n;
            addr += n as u64;
        }
    }

    /// Writes `data` at `addr` (may cross pages).
    pub fn write(&self, mut addr: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let off = (addr & 0xfff) as usize;
            let n = (4096 - off).min(data.len() - done);
            self.page(addr).write_bytes(off, &data[done..done + n]);
            done += n;
            addr += n as u64;
        }
    }

    fn u16(&self, addr: u64) -> u16 {
        let mut b = [0; 2];
        self.read(addr, &mut b);
        u16::from_le_bytes(b)
    }
}

/// The device's state.
pub struct Dev {
    /// Offered features.
    pub features: u64,
    feature_sel: u32,
    /// Features the driver accepted.
    pub driver_features: u64,
    driver_sel: u32,
    /// Device status.
    pub status: u8,
    /// Max queue size.
    pub max_size: u16,
    size: u16,
    ring: [u64; 3],
    /// Queue enabled.
    pub enabled: bool,
    /// Queue 0's MSI-X vector.
    pub vector: u16,
    /// Device configuration bytes.
    pub config: Vec<u8>,
    /// The disk.
    pub disk: Vec<u8>,
    /// Doorbells received.
    pub notifies: u32,
    /// Descriptor-chain lengths seen (table entries for indirect requests).
    pub chains: Vec<usize>,
    /// Set VIRTQ_USED_F_NO_NOTIFY.
    pub no_notify: bool,
    last_avail: u16,
    used_idx: u16,
}

/// The fake device and its memory.
pub struct FakeBlk {
    /// Device state.
    pub dev: Rc<RefCell<Dev>>,
    /// Its memory.
    pub dma: Rc<Dma>,
}

#[derive(Clone, Copy)]
enum Kind {
    Common,
    Notify,
    Device,
}

/// One register window of the fake.
pub struct Regs {
    dev: Rc<RefCell<Dev>>,
    kind: Kind,
}

impl FakeBlk {
    /// A disk of `sectors` sectors offering `features` (plus VERSION_1 and INDIRECT_DESC
    /// unless `indirect` is false).
    pub fn new(sectors: u64, extra: u64, indirect: bool, seg_max: u32) -> FakeBlk {
        let mut config = vec![0u8; 60];
        config[0..8].copy_from_slice(&sectors.to_le_bytes());
        config[12..16].copy_from_slice(&seg_max.to_le_bytes());
        config[20..24].copy_from_slice(&512u32.to_le_bytes());
        config[36..40].copy_from_slice(&(1u32 << 16).to_le_bytes());
        config[44..48].copy_from_slice(&8u32.to_le_bytes());
        let mut features = feature::VERSION_1 | blkf::SEG_MAX | blkf::BLK_SIZE | extra;
        if indirect {
            features |= feature::INDIRECT_DESC;
        }
        FakeBlk {
            dev: Rc::new(RefCell::new(Dev {
                features,
                feature_sel: 0,
                driver_features: 0,
                driver_sel: 0,
                status: 0,
                max_size: 256,
                size: 0,
                ring: [0; 3],
                enabled: false,
                vector: 0xffff,
                config,
                disk: vec![0; (sectors * 512) as usize],
                notifies: 0,
                chains: Vec::new(),
                no_notify: false,
                last_avail: 0,
                used_idx: 0,
            })),
            dma: Rc::new(Dma::default()),
        }
    }

    /// The transport over this device's registers.
    pub fn transport(&self) -> Transport<Regs> {
        let r = |kind| Regs {
            dev: self.dev.clone(),
            kind,
        };
        Transport {
            common: r(Kind::Common),
            notify: r(Kind::Notify),
            notify_multiplier: 4,
            device: r(Kind::Device),
        }
    }

    /// Serves every available request; returns how many.
    pub fn process(&self) -> usize {
        let mut d = self.dev.borrow_mut();
        let dma = &self.dma;
        let [desc, avail, used] = d.ring;
        let size = u64::from(d.size);
        let idx = dma.u16(avail + 2);
        let mut n = 0;
        while d.last_avail != idx {
            let head = dma.u16(avail + 4 + 2 * (u64::from(d.last_avail) % size));
            d.last_avail = d.last_avail.wrapping_add(1);
            // Walk the chain (through an indirect table if the head is one).
            let mut bufs = Vec::new();
            let read_desc = |table: u64, i: u64| {
                let mut b = [0u8; 16];
                dma.read(table + 16 * i, &mut b);
                (
                    u64::from_le_bytes(b[0..8].try_into().unwrap()),
                    u32::from_le_bytes(b[8..12].try_into().unwrap()),
                    u16::from_le_bytes(b[12..14].try_into().unwrap()),
                    u16::from_le_bytes(b[14..16].try_into().unwrap()),
                )
            };
            let (mut table, mut i) = (desc, u64::from(head));
            let first = read_desc(desc, i);
            if first.2 & DESC_F_INDIRECT != 0 {
                table = first.0;
                i = 0;
            }
            loop {
                let (a, l, f, next) = read_desc(table, i);
                bufs.push((a, l, f));
                if f & DESC_F_NEXT == 0 {
                    break;
                }
                i = u64::from(next);
            }
            d.chains.push(bufs.len());
            let mut hdr = [0u8; 16];
            dma.read(bufs[0].0, &mut hdr);
            let ty = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
            let sector = u64::from_le_bytes(hdr[8..16].try_into().unwrap());
            let status_at = bufs.last().unwrap().0;
            let data = &bufs[1..bufs.len() - 1];
            let mut pos = (sector * 512) as usize;
            let mut written = 1u32;
            let mut status = 0u8;
            match ty {
                0 => {
                    for &(a, l, f) in data {
                        assert!(f & DESC_F_WRITE != 0);
                        dma.write(a, &d.disk[pos..pos + l as usize]);
                        pos += l as usize;
                        written += l;
                    }
                }
                1 => {
                    for &(a, l, f) in data {
                        assert!(f & DESC_F_WRITE == 0);
                        let mut b = vec![0; l as usize];
                        dma.read(a, &mut b);
                        d.disk[pos..pos + l as usize].copy_from_slice(&b);
                        pos += l as usize;
                    }
                }
                4 => {}
                11 => {
                    let mut r = [0u8; 16];
                    dma.read(data[0].0, &mut r);
                    let s = u64::from_le_bytes(r[0..8].try_into().unwrap()) as usize * 512;
                    let k = u32::from_le_bytes(r[8..12].try_into().unwrap()) as usize * 512;
                    d.disk[s..s + k].fill(0);
                }
                _ => status = 2,
            }
            dma.write(status_at, &[status]);
            let slot = u64::from(d.used_idx) % size;
            let mut e = [0u8; 8];
            e[0..4].copy_from_slice(&u32::from(head).to_le_bytes());
            e[4..8].copy_from_slice(&written.to_le_bytes());
            dma.write(used + 4 + 8 * slot, &e);
            d.used_idx = d.used_idx.wrapping_add(1);
            let flags = u16::from(d.no_notify);
            let mut h = [0u8; 4];
            h[0..2].copy_from_slice(&flags.to_le_bytes());
            h[2..4].copy_from_slice(&d.used_idx.to_le_bytes());
            dma.write(used, &h);
            n += 1;
        }
        n
    }
}

impl Regs {
    fn read(&self, off: usize, width: usize) -> u32 {
        let d = self.dev.borrow();
        match self.kind {
            Kind::Notify => 0,
            Kind::Device => {
                let mut b = [0u8; 4];
                b[..width].copy_from_slice(&d.config[off..off + width]);
                u32::from_le_bytes(b)
            }
            Kind::Common => match off {
                common::DEVICE_FEATURE => (d.features >> (32 * d.feature_sel)) as u32,
                common::NUM_QUEUES => 1,
                common::DEVICE_STATUS => u32::from(d.status),
                common::CONFIG_GENERATION => 0,
                common::QUEUE_SIZE => u32::from(if d.size == 0 { d.max_size } else { d.size }),
                common::QUEUE_MSIX_VECTOR => u32::from(d.vector),
                common::QUEUE_NOTIFY_OFF => 0,
                common::MSIX_CONFIG => 0xffff,
                _ => 0,
            },
        }
    }

    fn write(&self, off: usize, v: u32) {
        let mut d = self.dev.borrow_mut();
        match self.kind {
            Kind::Notify => d.notifies += 1,
            Kind::Device => {}
            Kind::Common => match off {
                common::DEVICE_FEATURE_SELECT => d.feature_sel = v,
                common::DRIVER_FEATURE_SELECT => d.driver_sel = v,
                common::DRIVER_FEATURE => {
                    let shift = 32 * d.driver_sel;
                    d.driver_features =
                        (d.driver_features & !(0xffff_ffffu64 << shift)) | (u64::from(v) << shift);
                }
                common::DEVICE_STATUS => {
                    let v = v as u8;
                    if v == 0 {
                        d.status = 0;
                        d.size = 0;
                        d.enabled = false;
                    } else if v & 8 != 0 && d.driver_features & !d.features != 0 {
                        d.status = v & !8;
                    } else {
                        d.status = v;
                    }
                }
                common::QUEUE_SIZE => d.size = v as u16,
                common::QUEUE_MSIX_VECTOR => d.vector = v as u16,
                common::QUEUE_ENABLE => d.enabled = v == 1,
                o @ 0x20..=0x37 => {
                    let i = (o - 0x20) / 8;
                    let shift = if o % 8 == 4 { 32 } else { 0 };
                    d.ring[i] = (d.ring[i] & !(0xffff_ffffu64 << shift)) | (u64::from(v) << shift);
                }
                _ => {}
            },
        }
    }
}

impl Mmio for Regs {
    fn len(&self) -> usize {
        match self.kind {
            Kind::Common => common::LEN,
            Kind::Notify => 4,
            Kind::Device => self.dev.borrow().config.len(),
        }
    }
    fn read8(&self, offset: usize) -> u8 {
        self.read(offset, 1) as u8
    }
    fn read16(&self, offset: usize) -> u16 {
        self.read(offset, 2) as u16
    }
    fn read32(&self, offset: usize) -> u32 {
        self.read(offset, 4)
    }
    fn write8(&self, offset: usize, value: u8) {
        self.write(offset, u32::from(value))
    }
    fn write16(&self, offset: usize, value: u16) {
        self.write(offset, u32::from(value))
    }
    fn write32(&self, offset: usize, value: u32) {
        self.write(offset, value)
    }
}
