//! The split virtqueue (virtio v1.2 §2.7) from the driver's side: a descriptor table, the
//! available ring the driver produces into and the used ring the device returns buffers
//! on, each in its own page of shared memory.
//!
//! The driver keeps its own copy of everything it needs to recycle descriptors (the chain
//! links, which heads are in flight), so a device writing nonsense into the used ring can
//! only make us report an error, never free a descriptor twice or index out of bounds.
//! Many requests may be in flight; [`SplitQueue::publish`] makes a whole batch visible with
//! one index store and says whether the device wants a doorbell for it.

use alloc::vec::Vec;

use ring::{Fence, RingMemory};

/// Descriptor flag: the chain continues at `next`.
pub const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer (otherwise it reads it).
pub const DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is a table of descriptors.
pub const DESC_F_INDIRECT: u16 = 4;
/// Available-ring flag: the driver does not want interrupts.
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Used-ring flag: the device does not want notifications.
pub const USED_F_NO_NOTIFY: u16 = 1;
/// Bytes per descriptor.
pub const DESC_SIZE: usize = 16;
/// Largest queue this driver sets up (a descriptor table fits in one page).
pub const MAX_SIZE: u16 = 256;

/// One buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    /// Machine (bus) address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// [`DESC_F_WRITE`] and/or [`DESC_F_INDIRECT`] (`NEXT` is managed by the queue).
    pub flags: u16,
}

impl Desc {
    /// The 16 bytes of a descriptor (`struct virtq_desc`, little-endian).
    pub fn encode(&self, next: Option<u16>) -> [u8; DESC_SIZE] {
        let mut b = [0u8; DESC_SIZE];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        let flags = (self.flags & !DESC_F_NEXT) | if next.is_some() { DESC_F_NEXT } else { 0 };
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..16].copy_from_slice(&next.unwrap_or(0).to_le_bytes());
        b
    }
}

/// Why a queue operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// Not enough free descriptors (or an empty chain).
    Full,
    /// The size is not a power of two in 1..=[`MAX_SIZE`] or a ring area is too small.
    Layout,
    /// The device returned a head that is not in flight.
    BadUsed(u32),
}

/// Byte sizes of the three areas for a queue of `size` entries (without event fields, which
/// this driver does not negotiate).
pub const fn area_sizes(size: u16) -> (usize, usize, usize) {
    let n = size as usize;
    (DESC_SIZE * n, 4 + 2 * n + 2, 4 + 8 * n + 2)
}

/// A split virtqueue over three shared areas.
pub struct SplitQueue<R: RingMemory> {
    size: u16,
    desc: R,
    avail: R,
    used: R,
    /// Free descriptor indices (a stack).
    free: Vec<u16>,
    /// Our copy of each descriptor's `next` link.
    next: Vec<u16>,
    /// Chain length per head while in flight, 0 otherwise.
    chain_len: Vec<u16>,
    /// Flags we keep in the available ring.
    avail_flags: u16,
    /// Next available-ring index to fill.
    avail_idx: u16,
    /// The index the device has seen.
    published_idx: u16,
    /// Next used-ring index to consume.
    last_used: u16,
    in_flight: usize,
}

impl<R: RingMemory> SplitQueue<R> {
    /// A queue of `size` entries over zeroed areas (each large enough for
    /// [`area_sizes`]`(size)`).
    pub fn new(size: u16, desc: R, avail: R, used: R) -> Result<Self, QueueError> {
        let (d, a, u) = area_sizes(size);
        if !size.is_power_of_two() || size > MAX_SIZE || desc.len() < d || avail.len() < a {
            return Err(QueueError::Layout);
        }
        if used.len() < u {
            return Err(QueueError::Layout);
        }
        avail.store_u32(0, 0);
        Ok(Self {
            size,
            desc,
            avail,
            used,
            free: (0..size).rev().collect(),
            next: alloc::vec![0; usize::from(size)],
            chain_len: alloc::vec![0; usize::from(size)],
            avail_flags: 0,
            avail_idx: 0,
            published_idx: 0,
            last_used: 0,
            in_flight: 0,
        })
    }

    /// Number of entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Descriptors not in use.
    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    /// Chains handed to the device and not yet returned.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Puts a chain of `bufs` in the descriptor table and the available ring (not yet
    /// visible to the device: see [`publish`](Self::publish)). Returns its head.
    pub fn add(&mut self, bufs: &[Desc]) -> Result<u16, QueueError> {
        let n = bufs.len();
        if n == 0 || n > self.free.len() {
            return Err(QueueError::Full);
        }
        // Take the top `n` entries of the free stack, top first, without allocating.
        let start = self.free.len() - n;
        let id_at = |free: &[u16], i: usize| free[start + n - 1 - i];
        for (i, b) in bufs.iter().enumerate() {
            let id = id_at(&self.free, i);
            let next = (i + 1 < n).then(|| id_at(&self.free, i + 1));
            self.next[usize::from(id)] = next.unwrap_or(0);
            self.desc
                .write_bytes(usize::from(id) * DESC_SIZE, &b.encode(next));
        }
        let head = id_at(&self.free, 0);
        self.free.truncate(start);
        self.chain_len[usize::from(head)] = n as u16;
        let slot = usize::from(self.avail_idx % self.size);
        self.store_avail_entry(slot, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.in_flight += 1;
        Ok(head)
    }

    /// Available-ring entries are u16s; the area is accessed in aligned u32s, so update one
    /// half. Both halves are ours, the device only reads them.
    fn store_avail_entry(&self, slot: usize, head: u16) {
        let off = 4 + 2 * slot;
        let word = self.avail.load_u32(off & !3);
        let shift = (off & 2) * 8;
        let word = (word & !(0xffff << shift)) | (u32::from(head) << shift);
        self.avail.store_u32(off & !3, word);
    }

    fn store_avail_header(&self) {
        self.avail.store_u32(
            0,
            u32::from(self.avail_flags) | (u32::from(self.published_idx) << 16),
        );
    }

    /// Asks the device for interrupts (the default) or not (a polling driver).
    pub fn set_interrupts(&mut self, on: bool) {
        self.avail_flags = if on { 0 } else { AVAIL_F_NO_INTERRUPT };
        self.store_avail_header();
    }

    /// Makes every chain added since the last call visible with one index store. Returns
    /// whether the device wants a notification (false if nothing new or the device set
    /// `VIRTQ_USED_F_NO_NOTIFY`).
    pub fn publish(&mut self) -> bool {
        if self.avail_idx == self.published_idx {
            return false;
        }
        // Descriptors and ring entries before the index that publishes them.
        self.avail.fence(Fence::Write);
        self.published_idx = self.avail_idx;
        self.store_avail_header();
        // The index store before the load of the device's flags (else the device could
        // go to sleep after we read "no notify").
        self.avail.fence(Fence::Full);
        (self.used.load_u32(0) as u16) & USED_F_NO_NOTIFY == 0
    }

    /// Takes the next returned chain: `(head, bytes written by the device)`, or `None` if the
    /// device returned nothing new. A head that was not in flight is an error (the entry is
    /// consumed; nothing is freed).
    pub fn pop_used(&mut self) -> Option<Result<(u16, u32), QueueError>> {
        let used_idx = (self.used.load_u32(0) >> 16) as u16;
        if used_idx == self.last_used {
            return None;
        }
        // The index before the entries it covers.
        self.used.fence(Fence::Read);
        let slot = usize::from(self.last_used % self.size);
        let id = self.used.load_u32(4 + 8 * slot);
        let len = self.used.load_u32(8 + 8 * slot);
        self.last_used = self.last_used.wrapping_add(1);
        let head = match u16::try_from(id) {
            Ok(h) if h < self.size && self.chain_len[usize::from(h)] != 0 => h,
            _ => return Some(Err(QueueError::BadUsed(id))),
        };
        let mut id = head;
        let n = core::mem::take(&mut self.chain_len[usize::from(head)]);
        for _ in 0..n {
            self.free.push(id);
            id = self.next[usize::from(id)];
        }
        self.in_flight -= 1;
        Some(Ok((head, len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::VecRingMemory;

    fn q(size: u16) -> (SplitQueue<VecRingMemory>, [VecRingMemory; 3]) {
        let m = [
            VecRingMemory::new(4096),
            VecRingMemory::new(4096),
            VecRingMemory::new(4096),
        ];
        let q = SplitQueue::new(size, m[0].clone(), m[1].clone(), m[2].clone()).unwrap();
        (q, m)
    }

    fn u16_at(m: &VecRingMemory, off: usize) -> u16 {
        let mut b = [0; 2];
        m.read_bytes(off, &mut b);
        u16::from_le_bytes(b)
    }

    /// Device side: return `head` with `len` at used slot `idx`, then bump the index.
    fn device_return(used: &VecRingMemory, idx: u16, size: u16, head: u16, len: u32) {
        let slot = usize::from(idx % size);
        used.store_u32(4 + 8 * slot, u32::from(head));
        used.store_u32(8 + 8 * slot, len);
        let w = used.load_u32(0) & 0xffff;
        used.store_u32(0, w | (u32::from(idx.wrapping_add(1)) << 16));
    }

    #[test]
    fn layout_checks() {
        let m = VecRingMemory::new(4096);
        assert!(SplitQueue::new(3, m.clone(), m.clone(), m.clone()).is_err());
        assert!(SplitQueue::new(512, m.clone(), m.clone(), m.clone()).is_err());
        let small = VecRingMemory::new(64);
        assert!(SplitQueue::new(64, m.clone(), small, m.clone()).is_err());
    }

    #[test]
    fn chains_publish_and_recycle() {
        let (mut q, [desc, avail, used]) = q(8);
        let a = q
            .add(&[
                Desc {
                    addr: 0x1000,
                    len: 16,
                    flags: 0,
                },
                Desc {
                    addr: 0x2000,
                    len: 512,
                    flags: DESC_F_WRITE,
                },
                Desc {
                    addr: 0x3000,
                    len: 1,
                    flags: DESC_F_WRITE,
                },
            ])
            .unwrap();
        let b = q
            .add(&[Desc {
                addr: 0x4000,
                len: 64,
                flags: DESC_F_INDIRECT,
            }])
            .unwrap();
        assert_eq!(q.free_descriptors(), 4);
        assert_eq!(q.in_flight(), 2);
        // Not visible before publish.
        assert_eq!(u16_at(&avail, 2), 0);
        assert!(q.publish());
        assert!(!q.publish(), "nothing new: no second doorbell");
        assert_eq!(u16_at(&avail, 2), 2);
        assert_eq!(u16_at(&avail, 4), a);
        assert_eq!(u16_at(&avail, 6), b);
        // The chain links.
        let mut d = [0u8; 16];
        desc.read_bytes(usize::from(a) * 16, &mut d);
        assert_eq!(u64::from_le_bytes(d[0..8].try_into().unwrap()), 0x1000);
        assert_eq!(
            u16::from_le_bytes(d[12..14].try_into().unwrap()),
            DESC_F_NEXT
        );
        let n1 = u16::from_le_bytes(d[14..16].try_into().unwrap());
        desc.read_bytes(usize::from(n1) * 16, &mut d);
        assert_eq!(
            u16::from_le_bytes(d[12..14].try_into().unwrap()),
            DESC_F_NEXT | DESC_F_WRITE
        );
        // Out-of-order completion.
        assert!(q.pop_used().is_none());
        device_return(&used, 0, 8, b, 0);
        device_return(&used, 1, 8, a, 513);
        assert_eq!(q.pop_used(), Some(Ok((b, 0))));
        assert_eq!(q.pop_used(), Some(Ok((a, 513))));
        assert_eq!(q.pop_used(), None);
        assert_eq!(q.free_descriptors(), 8);
        assert_eq!(q.in_flight(), 0);
    }

    #[test]
    fn full_and_bad_device() {
        let (mut q, [_, _, used]) = q(4);
        let bufs = [Desc {
            addr: 0,
            len: 1,
            flags: 0,
        }; 3];
        let h = q.add(&bufs).unwrap();
        assert_eq!(q.add(&bufs), Err(QueueError::Full));
        assert_eq!(q.add(&[]), Err(QueueError::Full));
        q.publish();
        // A head that is not in flight, then an out-of-range one: reported, nothing freed.
        device_return(&used, 0, 4, (h + 1) % 4, 0);
        device_return(&used, 1, 4, 999, 0);
        assert_eq!(
            q.pop_used(),
            Some(Err(QueueError::BadUsed(u32::from((h + 1) % 4))))
        );
        assert_eq!(q.pop_used(), Some(Err(QueueError::BadUsed(999))));
        assert_eq!(q.free_descriptors(), 1);
        device_return(&used, 2, 4, h, 0);
        assert_eq!(q.pop_used(), Some(Ok((h, 0))));
        // Returning the same head twice does not double-free.
        device_return(&used, 3, 4, h, 0);
        assert_eq!(q.pop_used(), Some(Err(QueueError::BadUsed(u32::from(h)))));
        assert_eq!(q.free_descriptors(), 4);
    }

    #[test]
    fn no_notify_and_interrupt_flags() {
        let (mut q, [_, avail, used]) = q(4);
        used.store_u32(0, u32::from(USED_F_NO_NOTIFY));
        q.add(&[Desc {
            addr: 0,
            len: 1,
            flags: 0,
        }])
        .unwrap();
        assert!(!q.publish());
        q.set_interrupts(false);
        assert_eq!(u16_at(&avail, 0), AVAIL_F_NO_INTERRUPT);
        assert_eq!(u16_at(&avail, 2), 1, "the index survives a flags change");
        // Drain it, then wrap the 16-bit indices.
        used.store_u32(0, 0);
        device_return(&used, 0, 4, 0, 0);
        assert!(matches!(q.pop_used(), Some(Ok(_))));
        for i in 1..70_000u32 {
            let h = q
                .add(&[Desc {
                    addr: 0,
                    len: 1,
                    flags: 0,
                }])
                .unwrap();
            q.publish();
            device_return(&used, i as u16, 4, h, 0);
            assert_eq!(q.pop_used(), Some(Ok((h, 0))));
        }
        assert_eq!(q.free_descriptors(), 4);
    }
}
