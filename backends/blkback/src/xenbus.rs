//! The xenbus side (`xen/include/public/io/xenbus.h`, Linux `xenbus_client.c`): device
//! states, the small store interface the handshake needs, and what the backend needs from
//! its host kernel (ring mapping, event channels, disks).

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use ring::RingMemory;
use xen_abi::{DomId, EvtchnPort, GrantRef};

use crate::device::BlockDevice;
use crate::grant::GrantMapper;

pub use xen_abi::xenbus::XenbusState;

/// The xenstore operations the backend uses, with absolute paths, as dom0 (full rights).
pub trait Store {
    /// A node's value, or `None` if it does not exist (or is not UTF-8).
    fn read(&mut self, path: &str) -> Option<String>;
    /// Writes a node (creating parents); `false` if the store refused.
    fn write(&mut self, path: &str, value: &str) -> bool;
    /// The children of a node (empty if it does not exist).
    fn directory(&mut self, path: &str) -> Vec<String>;
    /// Asks to be told (through [`changed`](Self::changed)) when anything at or below
    /// `path` changes. Optional.
    fn watch(&mut self, _path: &str) {}
    /// Undoes [`watch`](Self::watch).
    fn unwatch(&mut self, _path: &str) {}
    /// Whether a watched path changed since the last call; `true` when unsure. The
    /// default (no watches) rescans on every poll.
    fn changed(&mut self) -> bool {
        true
    }
}

/// A failed host operation: what and the (positive) errno it gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformError {
    /// Errno (positive), written into the `error` node.
    pub errno: u32,
}

/// What the backend needs from the kernel it runs in, besides data-grant mapping.
pub trait Platform: GrantMapper {
    /// The frontend's ring pages, mapped into our address space. Cloning must be cheap
    /// and not duplicate the mapping (a handle); one clone is given back to
    /// [`unmap_ring`](Self::unmap_ring) after every other is dropped.
    type Ring: RingMemory + Clone;

    /// Maps the ring pages `grefs` (1, 2, 4 or 8, in order) granted by `dom`, contiguous.
    fn map_ring(&mut self, dom: DomId, grefs: &[GrantRef]) -> Result<Self::Ring, PlatformError>;
    /// Unmaps a ring mapped by [`map_ring`](Self::map_ring).
    fn unmap_ring(&mut self, ring: Self::Ring);
    /// Binds `dom`'s unbound port `remote` (`EVTCHNOP_bind_interdomain`); our port.
    fn bind_evtchn(&mut self, dom: DomId, remote: EvtchnPort) -> Result<EvtchnPort, PlatformError>;
    /// Closes our port.
    fn unbind_evtchn(&mut self, port: EvtchnPort);
    /// Sends an event on our port.
    fn notify(&mut self, port: EvtchnPort);
    /// Takes the dom0 disk called `name` (e.g. `vda`) for exclusive use.
    fn take_disk(&mut self, name: &str) -> Option<Box<dyn BlockDevice>>;
    /// Returns a disk taken with [`take_disk`](Self::take_disk) (nothing in flight).
    fn give_back_disk(&mut self, name: &str, disk: Box<dyn BlockDevice>);
    /// Whether a disk called `name` exists even though [`take_disk`](Self::take_disk)
    /// cannot have it now (another device still drains its I/O before giving it back):
    /// the device then waits for it instead of failing.
    fn disk_exists(&mut self, name: &str) -> bool {
        let _ = name;
        false
    }
}
