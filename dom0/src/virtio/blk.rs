//! virtio-blk (virtio v1.2 §5.2) as a [`blkback::BlockDevice`]: one request queue, many
//! requests in flight, one doorbell per batch.
//!
//! Each request owns a *slot*: a dom0 page holding its header (`struct virtio_blk_req`'s
//! type/sector), a discard range when needed, its status byte and — when the device offers
//! `VIRTIO_F_INDIRECT_DESC` — an indirect descriptor table, so every request takes exactly
//! one ring descriptor whatever its segment count (Linux's virtio_blk does the same). Data
//! segments are the caller's machine addresses, handed to the device as they are (merged
//! when physically contiguous); nothing is copied.

use alloc::vec::Vec;

use blkback::{BlockDevice, BlockOp, DeviceRequest, DeviceStatus, DiskInfo, SubmitError};
use ring::RingMemory;

use super::queue::{Desc, QueueError, SplitQueue, DESC_F_INDIRECT, DESC_F_WRITE, DESC_SIZE};
use super::{feature, Error, Mmio, QueueSetup, Transport, NO_VECTOR};

/// Feature bits of the block device (§5.2.3).
pub mod blkf {
    /// `size_max` is valid.
    pub const SIZE_MAX: u64 = 1 << 1;
    /// `seg_max` is valid.
    pub const SEG_MAX: u64 = 1 << 2;
    /// Read-only device.
    pub const RO: u64 = 1 << 5;
    /// `blk_size` is valid.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// Cache flush command.
    pub const FLUSH: u64 = 1 << 9;
    /// Topology fields are valid.
    pub const TOPOLOGY: u64 = 1 << 10;
    /// Discard command.
    pub const DISCARD: u64 = 1 << 13;
}

/// Request types.
pub mod req {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush.
    pub const FLUSH: u32 = 4;
    /// Discard.
    pub const DISCARD: u32 = 11;
}

/// Status byte values.
pub mod st {
    /// Success.
    pub const OK: u8 = 0;
    /// I/O error.
    pub const IOERR: u8 = 1;
    /// Unsupported request.
    pub const UNSUPP: u8 = 2;
}

/// Device configuration offsets (`struct virtio_blk_config`).
mod cfg {
    pub const CAPACITY: usize = 0;
    pub const SIZE_MAX: usize = 8;
    pub const SEG_MAX: usize = 12;
    pub const BLK_SIZE: usize = 20;
    pub const PHYSICAL_BLOCK_EXP: usize = 24;
    pub const MAX_DISCARD_SECTORS: usize = 36;
    pub const DISCARD_SECTOR_ALIGNMENT: usize = 44;
    /// Enough to hold every field above.
    pub const LEN_DISCARD: usize = 48;
}

/// Slot page layout: header, discard range, status byte, indirect table.
const SLOT_HEADER: usize = 0;
const SLOT_DISCARD: usize = 16;
const SLOT_STATUS: usize = 32;
const SLOT_TABLE: usize = 64;
/// Descriptors an indirect table in the rest of the page holds.
const TABLE_ENTRIES: usize = (4096 - SLOT_TABLE) / DESC_SIZE;
/// Data segments one indirect request may carry (the table also holds header and status).
const INDIRECT_DATA_SEGS: u32 = TABLE_ENTRIES as u32 - 2;
/// Most requests in flight (and slot pages allocated) per device.
pub const MAX_DEPTH: u16 = 128;

/// A page of dom0 memory shared with the device: accessor and machine address.
pub struct Page<R> {
    /// Access to its bytes.
    pub mem: R,
    /// Its machine (bus) address.
    pub maddr: u64,
}

/// Features the driver asks for.
const WANTED: u64 = feature::VERSION_1
    | feature::INDIRECT_DESC
    | blkf::SIZE_MAX
    | blkf::SEG_MAX
    | blkf::RO
    | blkf::BLK_SIZE
    | blkf::FLUSH
    | blkf::TOPOLOGY
    | blkf::DISCARD;

/// The device configuration as read at setup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkConfig {
    /// Capacity in 512-byte sectors.
    pub capacity: u64,
    /// Largest segment in bytes (0: no limit).
    pub size_max: u32,
    /// Most data segments per request (0: not given).
    pub seg_max: u32,
    /// Logical block size.
    pub blk_size: u32,
    /// log2(physical blocks per logical block).
    pub physical_block_exp: u8,
    /// Largest discard in sectors.
    pub max_discard_sectors: u32,
    /// Discard alignment in sectors.
    pub discard_sector_alignment: u32,
}

fn read_u64<M: Mmio>(m: &M, off: usize) -> u64 {
    u64::from(m.read32(off)) | (u64::from(m.read32(off + 4)) << 32)
}

impl BlkConfig {
    fn read<M: Mmio>(m: &M, features: u64) -> BlkConfig {
        let has = |bit: u64, off: usize, len: usize| features & bit != 0 && off + len <= m.len();
        BlkConfig {
            capacity: if m.len() >= 8 {
                read_u64(m, cfg::CAPACITY)
            } else {
                0
            },
            size_max: if has(blkf::SIZE_MAX, cfg::SIZE_MAX, 4) {
                m.read32(cfg::SIZE_MAX)
            } else {
                0
            },
            seg_max: if has(blkf::SEG_MAX, cfg::SEG_MAX, 4) {
                m.read32(cfg::SEG_MAX)
            } else {
                0
            },
            blk_size: if has(blkf::BLK_SIZE, cfg::BLK_SIZE, 4) {
                m.read32(cfg::BLK_SIZE)
            } else {
                512
            },
            physical_block_exp: if has(blkf::TOPOLOGY, cfg::PHYSICAL_BLOCK_EXP, 1) {
                m.read8(cfg::PHYSICAL_BLOCK_EXP)
            } else {
                0
            },
            max_discard_sectors: if has(blkf::DISCARD, cfg::MAX_DISCARD_SECTORS, 4)
                && m.len() >= cfg::LEN_DISCARD
            {
                m.read32(cfg::MAX_DISCARD_SECTORS)
            } else {
                0
            },
            discard_sector_alignment: if has(blkf::DISCARD, cfg::DISCARD_SECTOR_ALIGNMENT, 4) {
                m.read32(cfg::DISCARD_SECTOR_ALIGNMENT)
            } else {
                0
            },
        }
    }
}

/// One request slot.
struct Slot<R> {
    page: Page<R>,
    tag: u64,
}

/// Counters for `disk list` and debugging.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests submitted to the device.
    pub submitted: u64,
    /// Requests completed.
    pub completed: u64,
    /// Doorbells rung.
    pub kicks: u64,
    /// Used-ring entries that named no request in flight.
    pub bad_used: u64,
}

/// A virtio-blk device driven through one split virtqueue.
pub struct VirtioBlk<M: Mmio, R: RingMemory> {
    transport: Transport<M>,
    queue: SplitQueue<R>,
    setup: QueueSetup,
    features: u64,
    config: BlkConfig,
    info: DiskInfo,
    slots: Vec<Slot<R>>,
    free_slots: Vec<u16>,
    /// Slot of each in-flight head.
    head_slot: Vec<u16>,
    /// Requests finished without the device (flush on a write-through device).
    synthetic: Vec<u64>,
    /// Reusable descriptor list.
    scratch: Vec<Desc>,
    pending_kick: bool,
    stats: Stats,
}

impl<M: Mmio, R: RingMemory> VirtioBlk<M, R> {
    /// Initialises the device (§3.1.1): features, configuration, queue 0 with rings in three
    /// pages from `alloc`, up to `max_depth` slot pages, then `DRIVER_OK`. Interrupts are
    /// not requested (vector [`NO_VECTOR`], `VIRTQ_AVAIL_F_NO_INTERRUPT`) until
    /// [`use_msix_vector`](Self::use_msix_vector).
    pub fn new(
        transport: Transport<M>,
        alloc: &mut dyn FnMut() -> Option<Page<R>>,
        max_depth: u16,
    ) -> Result<Self, Error> {
        let features = transport.negotiate(WANTED)?;
        let config = transport.read_config(|m| BlkConfig::read(m, features));
        let fail = |e: Error| {
            transport.add_status(super::status::FAILED);
            e
        };
        if config.capacity == 0
            || config.blk_size < 512
            || !config.blk_size.is_power_of_two()
            || config.blk_size > 4096
        {
            return Err(fail(Error::Config));
        }
        let size = transport.queue_max_size(0).min(super::queue::MAX_SIZE);
        // Round down to a power of two (a device may offer any size up to its maximum).
        let size = if size == 0 {
            return Err(fail(Error::Queue));
        } else {
            1u16 << (15 - size.leading_zeros())
        };
        let (Some(desc), Some(avail), Some(used)) = (alloc(), alloc(), alloc()) else {
            return Err(fail(Error::NoMemory));
        };
        let setup =
            match transport.setup_queue(0, size, desc.maddr, avail.maddr, used.maddr, NO_VECTOR) {
                Ok(s) => s,
                Err(e) => return Err(fail(e)),
            };
        let mut queue =
            SplitQueue::new(size, desc.mem, avail.mem, used.mem).map_err(|_| fail(Error::Queue))?;
        queue.set_interrupts(false);
        let indirect = features & feature::INDIRECT_DESC != 0;
        let depth = max_depth.min(size).clamp(1, MAX_DEPTH);
        let mut slots = Vec::with_capacity(usize::from(depth));
        for _ in 0..depth {
            match alloc() {
                Some(page) => slots.push(Slot { page, tag: 0 }),
                None => break,
            }
        }
        if slots.is_empty() {
            return Err(fail(Error::NoMemory));
        }
        let depth = slots.len() as u16;
        // Data segments: the device's limit, then what one request can carry here.
        let ring_limit = if indirect {
            INDIRECT_DATA_SEGS
        } else {
            u32::from(size) - 3
        };
        let max_segments = match config.seg_max {
            0 => ring_limit,
            n => n.min(ring_limit),
        }
        .max(1);
        let flush = features & blkf::FLUSH != 0;
        let discard = features & blkf::DISCARD != 0 && config.max_discard_sectors > 0;
        let info = DiskInfo {
            sectors: config.capacity,
            sector_size: config.blk_size,
            physical_sector_size: config
                .blk_size
                .checked_shl(u32::from(config.physical_block_exp))
                .unwrap_or(config.blk_size),
            read_only: features & blkf::RO != 0,
            flush,
            discard,
            discard_granularity: if discard {
                config.discard_sector_alignment.max(1).saturating_mul(512)
            } else {
                0
            },
            max_discard_sectors: if discard {
                config.max_discard_sectors
            } else {
                0
            },
            max_segments,
            queue_depth: u32::from(depth),
        };
        transport.driver_ok();
        Ok(Self {
            transport,
            queue,
            setup,
            features,
            config,
            info,
            slots,
            free_slots: (0..depth).rev().collect(),
            head_slot: alloc::vec![0; usize::from(size)],
            synthetic: Vec::new(),
            scratch: Vec::with_capacity(TABLE_ENTRIES),
            pending_kick: false,
            stats: Stats::default(),
        })
    }

    /// Negotiated feature bits.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The configuration read at setup.
    pub fn config(&self) -> BlkConfig {
        self.config
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The queue size.
    pub fn queue_size(&self) -> u16 {
        self.queue.size()
    }

    /// The transport (for MSI-X setup and status).
    pub fn transport(&self) -> &Transport<M> {
        &self.transport
    }

    /// Routes queue 0's interrupts to MSI-X table entry `vector` and asks the device for
    /// them; returns false (and keeps polling) if the device refused the vector.
    pub fn use_msix_vector(&mut self, vector: u16) -> bool {
        if self.transport.set_queue_vector(0, vector) != vector {
            self.transport.set_queue_vector(0, NO_VECTOR);
            return false;
        }
        self.queue.set_interrupts(true);
        true
    }

    fn check(&self, r: &DeviceRequest<'_>) -> Result<(), SubmitError> {
        let bad = Err(SubmitError::Invalid);
        let per_block = u64::from(self.info.sector_size / 512);
        let end = r
            .sector
            .checked_add(r.nr_sectors)
            .ok_or(SubmitError::Invalid)?;
        match r.op {
            BlockOp::Read | BlockOp::Write => {
                if r.op == BlockOp::Write && self.info.read_only {
                    return bad;
                }
                if r.segments.is_empty() || end > self.info.sectors {
                    return bad;
                }
                if !r.sector.is_multiple_of(per_block) || !r.nr_sectors.is_multiple_of(per_block) {
                    return bad;
                }
                let mut total = 0u64;
                for s in r.segments {
                    let in_page = (s.maddr & 0xfff) + u64::from(s.len);
                    if s.len == 0 || s.len % 512 != 0 || s.maddr % 512 != 0 || in_page > 4096 {
                        return bad;
                    }
                    total += u64::from(s.len);
                }
                if total != r.nr_sectors * 512 {
                    return bad;
                }
                Ok(())
            }
            BlockOp::Flush => Ok(()),
            BlockOp::Discard => {
                if !self.info.discard
                    || self.info.read_only
                    || r.nr_sectors == 0
                    || r.nr_sectors > u64::from(self.info.max_discard_sectors)
                    || end > self.info.sectors
                    || !r.segments.is_empty()
                {
                    return bad;
                }
                Ok(())
            }
        }
    }

    /// Builds `scratch`: header, data (merged when contiguous), status.
    fn build(&mut self, r: &DeviceRequest<'_>, slot_maddr: u64) -> Result<(), SubmitError> {
        let size_max = self.config.size_max;
        let data_flags = if r.op == BlockOp::Read {
            DESC_F_WRITE
        } else {
            0
        };
        self.scratch.clear();
        self.scratch.push(Desc {
            addr: slot_maddr + SLOT_HEADER as u64,
            len: 16,
            flags: 0,
        });
        let mut data = 0u32;
        for s in r.segments {
            if let Some(last) = self.scratch.last_mut() {
                let fits = size_max == 0 || last.len.saturating_add(s.len) <= size_max;
                if data > 0 && last.addr + u64::from(last.len) == s.maddr && fits {
                    last.len += s.len;
                    continue;
                }
            }
            data += 1;
            if data > self.info.max_segments {
                return Err(SubmitError::Invalid);
            }
            self.scratch.push(Desc {
                addr: s.maddr,
                len: s.len,
                flags: data_flags,
            });
        }
        if r.op == BlockOp::Discard {
            self.scratch.push(Desc {
                addr: slot_maddr + SLOT_DISCARD as u64,
                len: 16,
                flags: 0,
            });
        }
        self.scratch.push(Desc {
            addr: slot_maddr + SLOT_STATUS as u64,
            len: 1,
            flags: DESC_F_WRITE,
        });
        Ok(())
    }
}

impl<M: Mmio, R: RingMemory> BlockDevice for VirtioBlk<M, R> {
    fn info(&self) -> DiskInfo {
        self.info
    }

    fn submit(&mut self, r: &DeviceRequest<'_>) -> Result<(), SubmitError> {
        self.check(r)?;
        let (ty, sector) = match r.op {
            BlockOp::Read => (req::IN, r.sector),
            BlockOp::Write => (req::OUT, r.sector),
            BlockOp::Flush if !self.info.flush => {
                // No volatile cache: completed writes are already durable (§5.2.6.2).
                self.synthetic.push(r.tag);
                return Ok(());
            }
            BlockOp::Flush => (req::FLUSH, 0),
            BlockOp::Discard => (req::DISCARD, 0),
        };
        let Some(&slot_idx) = self.free_slots.last() else {
            return Err(SubmitError::Busy);
        };
        let slot_maddr = self.slots[usize::from(slot_idx)].page.maddr;
        self.build(r, slot_maddr)?;
        let indirect = self.features & feature::INDIRECT_DESC != 0;
        let page = &self.slots[usize::from(slot_idx)].page.mem;
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&ty.to_le_bytes());
        hdr[8..16].copy_from_slice(&sector.to_le_bytes());
        page.write_bytes(SLOT_HEADER, &hdr);
        if r.op == BlockOp::Discard {
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&r.sector.to_le_bytes());
            d[8..12].copy_from_slice(&(r.nr_sectors as u32).to_le_bytes());
            page.write_bytes(SLOT_DISCARD, &d);
        }
        // A status the device never writes reads as an error, not as success.
        page.write_bytes(SLOT_STATUS, &[0xff]);
        let added = if indirect {
            let n = self.scratch.len();
            for (i, d) in self.scratch.iter().enumerate() {
                let next = (i + 1 < n).then_some((i + 1) as u16);
                page.write_bytes(SLOT_TABLE + i * DESC_SIZE, &d.encode(next));
            }
            self.queue.add(&[Desc {
                addr: slot_maddr + SLOT_TABLE as u64,
                len: (n * DESC_SIZE) as u32,
                flags: DESC_F_INDIRECT,
            }])
        } else {
            self.queue.add(&self.scratch)
        };
        let head = match added {
            Ok(h) => h,
            Err(QueueError::Full) => return Err(SubmitError::Busy),
            Err(_) => return Err(SubmitError::Invalid),
        };
        self.free_slots.pop();
        self.slots[usize::from(slot_idx)].tag = r.tag;
        self.head_slot[usize::from(head)] = slot_idx;
        self.pending_kick = true;
        self.stats.submitted += 1;
        Ok(())
    }

    fn kick(&mut self) {
        if !self.pending_kick {
            return;
        }
        self.pending_kick = false;
        if self.queue.publish() {
            self.transport.notify(&self.setup, 0);
            self.stats.kicks += 1;
        }
    }

    fn complete(&mut self, done: &mut dyn FnMut(u64, DeviceStatus)) -> usize {
        let mut n = 0;
        for tag in self.synthetic.drain(..) {
            done(tag, DeviceStatus::Ok);
            n += 1;
        }
        while let Some(r) = self.queue.pop_used() {
            let Ok((head, _len)) = r else {
                self.stats.bad_used += 1;
                continue;
            };
            let slot_idx = self.head_slot[usize::from(head)];
            let slot = &self.slots[usize::from(slot_idx)];
            let mut status = [0u8; 1];
            slot.page.mem.read_bytes(SLOT_STATUS, &mut status);
            let s = match status[0] {
                st::OK => DeviceStatus::Ok,
                st::UNSUPP => DeviceStatus::Unsupported,
                _ => DeviceStatus::IoError,
            };
            let tag = slot.tag;
            self.free_slots.push(slot_idx);
            self.stats.completed += 1;
            done(tag, s);
            n += 1;
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.queue.in_flight() + self.synthetic.len()
    }
}

#[cfg(test)]
mod tests;
