//! The block-device interface blkback drives: what dom0's native disk driver (virtio-blk)
//! offers a backend, and what dom0's own tools use when they touch a disk directly.
//!
//! Requests are asynchronous and many may be in flight: a caller `submit`s, `kick`s the
//! device once per batch (one doorbell for many requests, as Linux's `blk_mq` plugging
//! does), then collects completions with `complete`. Data moves by DMA straight to and from
//! the machine addresses in the segments: for blkback these are the frontend's granted
//! pages, mapped with `GNTMAP_device_map`, so no byte is copied in dom0.

/// What a block request asks the device to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockOp {
    /// Read `segments` worth of sectors starting at `sector`.
    Read,
    /// Write `segments` worth of sectors starting at `sector`.
    Write,
    /// Make every completed write durable (virtio-blk `VIRTIO_BLK_T_FLUSH`).
    Flush,
    /// Discard `nr_sectors` sectors starting at `sector` (no segments).
    Discard,
}

/// One DMA buffer: a machine address and a length in bytes. Both are multiples of 512 and
/// the buffer never crosses a page boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaSegment {
    /// Machine (bus) address of the first byte.
    pub maddr: u64,
    /// Length in bytes.
    pub len: u32,
}

/// One request handed to a [`BlockDevice`].
#[derive(Clone, Copy, Debug)]
pub struct DeviceRequest<'a> {
    /// The caller's cookie, handed back on completion.
    pub tag: u64,
    /// The operation.
    pub op: BlockOp,
    /// First 512-byte sector (ignored for `Flush`).
    pub sector: u64,
    /// Number of 512-byte sectors for `Discard`; for `Read`/`Write` it is the sum of the
    /// segment lengths / 512 and for `Flush` 0.
    pub nr_sectors: u64,
    /// The data buffers, in disk order (empty for `Flush` and `Discard`).
    pub segments: &'a [DmaSegment],
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Done.
    Ok,
    /// The device reported an I/O error.
    IoError,
    /// The device does not support the operation.
    Unsupported,
}

/// Why `submit` refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The device queue is full: complete some requests, then try again.
    Busy,
    /// The request can never be done (out of range, too many segments, bad alignment,
    /// read-only device, unsupported operation); nothing was queued.
    Invalid,
}

/// A disk's geometry and capabilities, read once at setup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
    /// Logical block size in bytes (a multiple of 512).
    pub sector_size: u32,
    /// Physical block size in bytes.
    pub physical_sector_size: u32,
    /// Writes are refused.
    pub read_only: bool,
    /// `Flush` is meaningful (the device has a volatile write cache).
    pub flush: bool,
    /// `Discard` is supported.
    pub discard: bool,
    /// Discard granularity in bytes (0 if no discard).
    pub discard_granularity: u32,
    /// Largest discard in sectors (0 if no discard).
    pub max_discard_sectors: u32,
    /// Most segments one request may carry.
    pub max_segments: u32,
    /// Most requests in flight at once.
    pub queue_depth: u32,
}

/// A disk that performs [`DeviceRequest`]s asynchronously.
pub trait BlockDevice {
    /// Geometry and capabilities.
    fn info(&self) -> DiskInfo;
    /// Queues one request (does not necessarily notify the device yet).
    fn submit(&mut self, req: &DeviceRequest<'_>) -> Result<(), SubmitError>;
    /// Notifies the device of everything submitted since the last kick.
    fn kick(&mut self);
    /// Hands every completed request to `done` as `(tag, status)`; returns how many.
    fn complete(&mut self, done: &mut dyn FnMut(u64, DeviceStatus)) -> usize;
    /// How many submitted requests have not completed yet.
    fn in_flight(&self) -> usize;
}
