//! Virtio 1.x (OASIS virtio v1.2) as dom0's native drivers use it: the modern PCI transport
//! (§4.1: vendor capabilities locating the common, notify, ISR and device-specific
//! structures in BARs), split virtqueues (§2.7, [`queue`]) and the block device (§5.2,
//! [`blk`]).
//!
//! All of it is portable: register access goes through [`Mmio`] and shared memory through
//! [`ring::RingMemory`], which dom0's kernel implements over mapped BARs and its own frames,
//! and host tests implement with a fake device.

pub mod blk;
pub mod queue;

use crate::pci::{self, Bar, Bdf, ConfigSpace};

/// PCI vendor ID of virtio devices.
pub const PCI_VENDOR: u16 = 0x1af4;
/// Modern (non-transitional) device IDs are `0x1040 + device type`.
pub const PCI_DEVICE_MODERN_BASE: u16 = 0x1040;
/// Virtio device type of a block device.
pub const DEVICE_TYPE_BLOCK: u16 = 2;
/// Transitional block device ID (legacy + modern).
pub const PCI_DEVICE_BLOCK_TRANSITIONAL: u16 = 0x1001;

/// Device status bits (§2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest knows how to drive it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 64;
    /// The guest gave up on the device.
    pub const FAILED: u8 = 128;
}

/// Device-independent feature bits (§6).
pub mod feature {
    /// Indirect descriptor tables.
    pub const INDIRECT_DESC: u64 = 1 << 28;
    /// `used_event` / `avail_event` notification suppression.
    pub const EVENT_IDX: u64 = 1 << 29;
    /// Virtio 1.x (mandatory for modern devices).
    pub const VERSION_1: u64 = 1 << 32;
    /// The device is behind an IOMMU / restricted DMA.
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
}

/// `cfg_type` of a virtio PCI capability (§4.1.4).
pub mod cfg_type {
    /// Common configuration.
    pub const COMMON: u8 = 1;
    /// Notifications.
    pub const NOTIFY: u8 = 2;
    /// ISR status.
    pub const ISR: u8 = 3;
    /// Device-specific configuration.
    pub const DEVICE: u8 = 4;
}

/// Offsets in the common configuration structure (`struct virtio_pci_common_cfg`).
pub mod common {
    /// u32: selects which 32 feature bits `DEVICE_FEATURE` shows.
    pub const DEVICE_FEATURE_SELECT: usize = 0x00;
    /// u32 (RO).
    pub const DEVICE_FEATURE: usize = 0x04;
    /// u32.
    pub const DRIVER_FEATURE_SELECT: usize = 0x08;
    /// u32.
    pub const DRIVER_FEATURE: usize = 0x0c;
    /// u16: MSI-X vector for configuration changes.
    pub const MSIX_CONFIG: usize = 0x10;
    /// u16 (RO).
    pub const NUM_QUEUES: usize = 0x12;
    /// u8.
    pub const DEVICE_STATUS: usize = 0x14;
    /// u8 (RO).
    pub const CONFIG_GENERATION: usize = 0x15;
    /// u16.
    pub const QUEUE_SELECT: usize = 0x16;
    /// u16: maximum on read; the driver may write a smaller power of two.
    pub const QUEUE_SIZE: usize = 0x18;
    /// u16.
    pub const QUEUE_MSIX_VECTOR: usize = 0x1a;
    /// u16.
    pub const QUEUE_ENABLE: usize = 0x1c;
    /// u16 (RO).
    pub const QUEUE_NOTIFY_OFF: usize = 0x1e;
    /// u64: descriptor table.
    pub const QUEUE_DESC: usize = 0x20;
    /// u64: available ring ("driver area").
    pub const QUEUE_DRIVER: usize = 0x28;
    /// u64: used ring ("device area").
    pub const QUEUE_DEVICE: usize = 0x30;
    /// Size of the structure.
    pub const LEN: usize = 0x38;
}

/// How often [`Transport::read_config`] retries a read torn by a configuration change.
const CONFIG_RETRIES: usize = 16;

/// "No MSI-X vector" in `msix_config` / `queue_msix_vector`.
pub const NO_VECTOR: u16 = 0xffff;

/// Register access to one mapped structure (uncached MMIO in dom0). Offsets are relative to
/// the structure; implementations bound-check them (a device's capability sets the length).
pub trait Mmio {
    /// Length of the structure in bytes.
    fn len(&self) -> usize;
    /// Whether the structure is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// One byte load.
    fn read8(&self, offset: usize) -> u8;
    /// One 16-bit load.
    fn read16(&self, offset: usize) -> u16;
    /// One 32-bit load.
    fn read32(&self, offset: usize) -> u32;
    /// One byte store.
    fn write8(&self, offset: usize, value: u8);
    /// One 16-bit store.
    fn write16(&self, offset: usize, value: u16);
    /// One 32-bit store.
    fn write32(&self, offset: usize, value: u32);
}

/// Where one virtio structure lives: BAR index, offset in the BAR, length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// BAR number (0..6).
    pub bar: u8,
    /// Offset inside the BAR.
    pub offset: u32,
    /// Length in bytes.
    pub length: u32,
}

/// The structures a modern virtio PCI function exposes (§4.1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciLayout {
    /// Common configuration.
    pub common: Region,
    /// Notification area.
    pub notify: Region,
    /// `notify_off_multiplier`.
    pub notify_multiplier: u32,
    /// ISR status.
    pub isr: Option<Region>,
    /// Device-specific configuration.
    pub device: Option<Region>,
    /// Offset of the MSI-X capability, if any.
    pub msix_cap: Option<u8>,
}

/// Why a device cannot be driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// No common or notify capability, or one pointing at a BAR that is not memory.
    NoModernInterface,
    /// The device refused `FEATURES_OK` or lacks `VERSION_1`.
    Features,
    /// The queue does not exist or has size 0, or the device did not enable it.
    Queue,
    /// Too little memory for rings or request pages.
    NoMemory,
    /// Mapping the BARs failed.
    Map,
    /// The device's configuration is unusable (e.g. capacity 0, bad block size).
    Config,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Error::NoModernInterface => "no usable virtio 1.x PCI capabilities",
            Error::Features => "feature negotiation failed",
            Error::Queue => "virtqueue setup failed",
            Error::NoMemory => "out of memory",
            Error::Map => "cannot map the device's BARs",
            Error::Config => "unusable device configuration",
        })
    }
}

/// Whether `f` is a virtio device of type `device_type` we can drive in modern mode.
pub fn is_virtio(f: &pci::Function, device_type: u16) -> bool {
    f.vendor == PCI_VENDOR
        && (f.device == PCI_DEVICE_MODERN_BASE + device_type
            || (device_type == DEVICE_TYPE_BLOCK && f.device == PCI_DEVICE_BLOCK_TRANSITIONAL))
}

/// Reads the virtio vendor capabilities of `bdf` (the first of each type wins, as the spec
/// asks drivers to prefer the first they can use). Regions in BARs that are not memory are
/// skipped.
pub fn parse_layout(cs: &mut impl ConfigSpace, f: &pci::Function) -> Result<PciLayout, Error> {
    let bdf: Bdf = f.bdf;
    let caps = pci::capabilities(cs, bdf);
    let mut common = None;
    let mut notify = None;
    let mut isr = None;
    let mut device = None;
    let mut mul = 0;
    let mut msix_cap = None;
    for &(off, id) in &caps {
        if id == pci::cap::MSIX && msix_cap.is_none() {
            msix_cap = Some(off);
        }
        if id != pci::cap::VENDOR || off > 0xec {
            continue;
        }
        let w0 = cs.read32(bdf, off);
        let ty = (w0 >> 24) as u8;
        let bar = cs.read8(bdf, off + 4);
        let region = Region {
            bar,
            offset: cs.read32(bdf, off + 8),
            length: cs.read32(bdf, off + 12),
        };
        let usable =
            bar < 6 && matches!(f.bars[usize::from(bar)], Bar::Mem { .. }) && region.length > 0;
        if !usable {
            continue;
        }
        match ty {
            cfg_type::COMMON if common.is_none() => common = Some(region),
            cfg_type::NOTIFY if notify.is_none() => {
                notify = Some(region);
                mul = cs.read32(bdf, off + 16);
            }
            cfg_type::ISR if isr.is_none() => isr = Some(region),
            cfg_type::DEVICE if device.is_none() => device = Some(region),
            _ => {}
        }
    }
    match (common, notify) {
        (Some(common), Some(notify)) if common.length as usize >= common::LEN => Ok(PciLayout {
            common,
            notify,
            notify_multiplier: mul,
            isr,
            device,
            msix_cap,
        }),
        _ => Err(Error::NoModernInterface),
    }
}

/// A modern virtio PCI device's registers: the common configuration, the notification area
/// and the device-specific configuration.
pub struct Transport<M: Mmio> {
    /// Common configuration.
    pub common: M,
    /// Notification area.
    pub notify: M,
    /// `notify_off_multiplier`.
    pub notify_multiplier: u32,
    /// Device-specific configuration (empty if the device has none).
    pub device: M,
}

/// A virtqueue as the device was told about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSetup {
    /// Queue size (power of two).
    pub size: u16,
    /// Offset of its doorbell in the notification area.
    pub notify_offset: usize,
}

impl<M: Mmio> Transport<M> {
    /// Writes 0 to `device_status` and waits for it to read back 0 (§4.1.4.3.2).
    pub fn reset(&self) {
        self.common.write8(common::DEVICE_STATUS, 0);
        for _ in 0..1_000_000 {
            if self.common.read8(common::DEVICE_STATUS) == 0 {
                break;
            }
            core::hint::spin_loop();
        }
    }

    /// The device status.
    pub fn status(&self) -> u8 {
        self.common.read8(common::DEVICE_STATUS)
    }

    /// Adds status bits.
    pub fn add_status(&self, bits: u8) {
        let s = self.status();
        self.common.write8(common::DEVICE_STATUS, s | bits);
    }

    /// The 64 device feature bits.
    pub fn device_features(&self) -> u64 {
        self.common.write32(common::DEVICE_FEATURE_SELECT, 0);
        let lo = self.common.read32(common::DEVICE_FEATURE);
        self.common.write32(common::DEVICE_FEATURE_SELECT, 1);
        let hi = self.common.read32(common::DEVICE_FEATURE);
        u64::from(lo) | (u64::from(hi) << 32)
    }

    /// The initialisation sequence up to `FEATURES_OK` (§3.1.1): reset, ACKNOWLEDGE, DRIVER,
    /// accept `wanted & offered` (which must include `VERSION_1`), FEATURES_OK and check
    /// that it stuck. Returns the negotiated features. On failure the device is left
    /// `FAILED`.
    pub fn negotiate(&self, wanted: u64) -> Result<u64, Error> {
        self.reset();
        self.add_status(status::ACKNOWLEDGE);
        self.add_status(status::DRIVER);
        let features = self.device_features() & wanted;
        if features & feature::VERSION_1 == 0 {
            self.add_status(status::FAILED);
            return Err(Error::Features);
        }
        self.common.write32(common::DRIVER_FEATURE_SELECT, 0);
        self.common.write32(common::DRIVER_FEATURE, features as u32);
        self.common.write32(common::DRIVER_FEATURE_SELECT, 1);
        self.common
            .write32(common::DRIVER_FEATURE, (features >> 32) as u32);
        self.add_status(status::FEATURES_OK);
        if self.status() & status::FEATURES_OK == 0 {
            self.add_status(status::FAILED);
            return Err(Error::Features);
        }
        Ok(features)
    }

    fn write64(&self, offset: usize, value: u64) {
        // Drivers may write 64-bit fields as two 32-bit halves, low first (§4.1.3.1).
        self.common.write32(offset, value as u32);
        self.common.write32(offset + 4, (value >> 32) as u32);
    }

    /// The largest size the device allows for queue `index` (0: no such queue).
    pub fn queue_max_size(&self, index: u16) -> u16 {
        if index >= self.common.read16(common::NUM_QUEUES) {
            return 0;
        }
        self.common.write16(common::QUEUE_SELECT, index);
        self.common.read16(common::QUEUE_SIZE)
    }

    /// Tells the device about queue `index` (size `size`, rings at the given machine
    /// addresses, MSI-X vector `vector` or [`NO_VECTOR`]) and enables it.
    pub fn setup_queue(
        &self,
        index: u16,
        size: u16,
        desc: u64,
        avail: u64,
        used: u64,
        vector: u16,
    ) -> Result<QueueSetup, Error> {
        let max = self.queue_max_size(index);
        if max == 0 || size == 0 || size > max || !size.is_power_of_two() {
            return Err(Error::Queue);
        }
        self.common.write16(common::QUEUE_SELECT, index);
        self.common.write16(common::QUEUE_SIZE, size);
        self.write64(common::QUEUE_DESC, desc);
        self.write64(common::QUEUE_DRIVER, avail);
        self.write64(common::QUEUE_DEVICE, used);
        self.common.write16(common::QUEUE_MSIX_VECTOR, vector);
        let off = self.common.read16(common::QUEUE_NOTIFY_OFF);
        let notify_offset = usize::from(off) * self.notify_multiplier as usize;
        if notify_offset + 2 > self.notify.len() {
            return Err(Error::Queue);
        }
        self.common.write16(common::QUEUE_ENABLE, 1);
        Ok(QueueSetup {
            size,
            notify_offset,
        })
    }

    /// Sets the configuration-change MSI-X vector; returns what the device kept
    /// ([`NO_VECTOR`] if it could not allocate one).
    pub fn set_config_vector(&self, vector: u16) -> u16 {
        self.common.write16(common::MSIX_CONFIG, vector);
        self.common.read16(common::MSIX_CONFIG)
    }

    /// Sets queue `index`'s MSI-X vector (only allowed before DRIVER_OK by some devices;
    /// QEMU accepts it at any time); returns what the device kept.
    pub fn set_queue_vector(&self, index: u16, vector: u16) -> u16 {
        self.common.write16(common::QUEUE_SELECT, index);
        self.common.write16(common::QUEUE_MSIX_VECTOR, vector);
        self.common.read16(common::QUEUE_MSIX_VECTOR)
    }

    /// Rings queue `q`'s doorbell (writes the queue index, §4.1.5.2).
    pub fn notify(&self, q: &QueueSetup, index: u16) {
        self.notify.write16(q.notify_offset, index);
    }

    /// Reads the device configuration consistently: runs `read` until `config_generation`
    /// is the same before and after (§2.5.1).
    pub fn read_config<T>(&self, mut read: impl FnMut(&M) -> T) -> T {
        // A device that never settles gets the last read: configuration changes are rare
        // and a bounded loop keeps a broken device from hanging dom0.
        let mut v = read(&self.device);
        for _ in 0..CONFIG_RETRIES {
            let before = self.common.read8(common::CONFIG_GENERATION);
            v = read(&self.device);
            if self.common.read8(common::CONFIG_GENERATION) == before {
                break;
            }
        }
        v
    }

    /// Sets DRIVER_OK: the device is live.
    pub fn driver_ok(&self) {
        self.add_status(status::DRIVER_OK);
    }
}

#[cfg(test)]
pub mod fake;
