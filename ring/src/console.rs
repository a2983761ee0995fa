//! The PV console ring (`struct xencons_interface`, `xen/include/public/io/console.h`,
//! ABI.md §5.4): two byte streams in one page, `out[]` from the guest to the console
//! backend and `in[]` back, with free-running `u32` indices and no event indices (the
//! writer always notifies).
//!
//! [`ConsoleFront`] is the guest's side, [`ConsoleBack`] the backend's. Both read every
//! index from the shared page once per call and check `prod - cons <= size` (as Linux's
//! `hvc_xen` does) before touching data, so a corrupt peer yields a [`RingError`] and bytes
//! are only ever accessed inside the two arrays.

use core::mem::offset_of;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::{Fence, RingError, RingIdx, RingMemory};

/// Size of `in[]`.
pub const XENCONS_IN_SIZE: u32 = 1024;
/// Size of `out[]`.
pub const XENCONS_OUT_SIZE: u32 = 2048;
/// `XENCONSOLE_CONNECTED` in [`XenconsInterface::connection`].
pub const XENCONSOLE_CONNECTED: u8 = 0;
/// `XENCONSOLE_DISCONNECTED`.
pub const XENCONSOLE_DISCONNECTED: u8 = 1;

/// The console page (`struct xencons_interface`, 3092 bytes with tail padding).
#[doc(alias = "xencons_interface")]
#[derive(Clone, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XenconsInterface {
    /// \[XEN: backend\] Input to the guest.
    pub in_: [u8; XENCONS_IN_SIZE as usize],
    /// \[GST\] Output from the guest.
    pub out: [u8; XENCONS_OUT_SIZE as usize],
    /// \[GST\] Input consumed.
    pub in_cons: RingIdx,
    /// \[XEN\] Input produced.
    pub in_prod: RingIdx,
    /// \[XEN\] Output consumed.
    pub out_cons: RingIdx,
    /// \[GST\] Output produced.
    pub out_prod: RingIdx,
    /// \[XEN\] `XENCONSOLE_CONNECTED`/`DISCONNECTED` (newer Xen; Linux 6.1 ignores it).
    pub connection: u8,
    /// Tail padding.
    pub pad: [u8; 3],
}
assert_layout!(XenconsInterface, 3092, {
    in_: 0, out: 1024, in_cons: 3072, in_prod: 3076, out_cons: 3080, out_prod: 3084,
    connection: 3088,
});

/// One byte stream of the page: where its data and indices are.
#[derive(Clone, Copy, Debug)]
struct ByteRing {
    data: usize,
    size: u32,
    cons: usize,
    prod: usize,
}

const IN: ByteRing = ByteRing {
    data: offset_of!(XenconsInterface, in_),
    size: XENCONS_IN_SIZE,
    cons: offset_of!(XenconsInterface, in_cons),
    prod: offset_of!(XenconsInterface, in_prod),
};
const OUT: ByteRing = ByteRing {
    data: offset_of!(XenconsInterface, out),
    size: XENCONS_OUT_SIZE,
    cons: offset_of!(XenconsInterface, out_cons),
    prod: offset_of!(XenconsInterface, out_prod),
};

impl ByteRing {
    /// Reads both indices once and checks them; returns `(prod, cons, used)`.
    fn indices<M: RingMemory>(&self, mem: &M) -> Result<(RingIdx, RingIdx, u32), RingError> {
        let cons = RingIdx::new(mem.load_u32(self.cons));
        let prod = RingIdx::new(mem.load_u32(self.prod));
        let used = prod.distance_from(cons);
        if used > self.size {
            return Err(RingError::ConsumerOverrun { prod, cons });
        }
        Ok((prod, cons, used))
    }

    /// The stretch of the data array starting at stream index `at`, at most `len` bytes
    /// and not past the end of the array: `(byte offset, length)`.
    fn chunk(&self, at: RingIdx, len: usize) -> (usize, usize) {
        let slot = at.slot(self.size) as usize;
        // slot < size, so neither subtraction nor addition can wrap.
        let to_end = (self.size as usize).wrapping_sub(slot);
        (self.data.wrapping_add(slot), len.min(to_end))
    }

    /// Appends as much of `src` as fits; returns the number of bytes written.
    fn produce<M: RingMemory>(&self, mem: &M, src: &[u8]) -> Result<usize, RingError> {
        let (prod, _, used) = self.indices(mem)?;
        // Indices read before we overwrite the space they free (hvc_xen's mb()).
        mem.fence(Fence::Full);
        let free = self.size.wrapping_sub(used) as usize;
        let total = src.len().min(free);
        let mut done = 0usize;
        let mut at = prod;
        // At most two chunks (up to the end of the array, then from its start).
        while let Some(rest) = src.get(done..total).filter(|r| !r.is_empty()) {
            let (off, n) = self.chunk(at, rest.len());
            if let Some(part) = rest.get(..n) {
                mem.write_bytes(off, part);
            }
            // n <= rest.len() <= free <= size.
            done = done.wrapping_add(n);
            at = at.wrapping_add(n as u32);
        }
        // Data visible before the index that publishes it.
        mem.fence(Fence::Write);
        mem.store_u32(self.prod, at.raw());
        Ok(total)
    }

    /// Takes up to `dst.len()` bytes; returns the number read.
    fn consume<M: RingMemory>(&self, mem: &M, dst: &mut [u8]) -> Result<usize, RingError> {
        let (_, cons, used) = self.indices(mem)?;
        // Data read only after the index that published it.
        mem.fence(Fence::Full);
        let total = dst.len().min(used as usize);
        let mut done = 0usize;
        let mut at = cons;
        while let Some(rest) = dst.get_mut(done..total).filter(|r| !r.is_empty()) {
            let (off, n) = self.chunk(at, rest.len());
            if let Some(part) = rest.get_mut(..n) {
                mem.read_bytes(off, part);
            }
            done = done.wrapping_add(n);
            at = at.wrapping_add(n as u32);
        }
        // Finish reading before handing the space back.
        mem.fence(Fence::Full);
        mem.store_u32(self.cons, at.raw());
        Ok(total)
    }

    fn pending<M: RingMemory>(&self, mem: &M) -> Result<u32, RingError> {
        Ok(self.indices(mem)?.2)
    }
}

fn check_len<M: RingMemory>(mem: &M) -> Result<(), RingError> {
    if mem.len() < core::mem::size_of::<XenconsInterface>() {
        Err(RingError::BadGeometry)
    } else {
        Ok(())
    }
}

/// The guest's end of the console page: writes `out[]`, reads `in[]`. Notify the backend
/// (`start_info.console.domU.evtchn`) after a write that returned > 0.
#[derive(Debug)]
pub struct ConsoleFront<M> {
    mem: M,
}

impl<M: RingMemory> ConsoleFront<M> {
    /// Wraps the console page (at least 3092 bytes). The toolstack hands the page over
    /// zeroed, so there is nothing to initialise.
    pub fn new(mem: M) -> Result<Self, RingError> {
        check_len(&mem)?;
        Ok(Self { mem })
    }

    /// Appends as much of `data` to `out[]` as fits; returns the bytes written (0 when
    /// full).
    pub fn write(&self, data: &[u8]) -> Result<usize, RingError> {
        OUT.produce(&self.mem, data)
    }

    /// Reads pending input from `in[]` into `buf`; returns the bytes read.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, RingError> {
        IN.consume(&self.mem, buf)
    }

    /// Output bytes the backend has not consumed yet.
    pub fn unsent(&self) -> Result<u32, RingError> {
        OUT.pending(&self.mem)
    }

    /// The shared memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }
}

/// The console backend's end of a guest's console page: reads `out[]`, writes `in[]`.
/// Notify the guest after consuming output (it may be waiting for space) or writing input.
#[derive(Debug)]
pub struct ConsoleBack<M> {
    mem: M,
}

impl<M: RingMemory> ConsoleBack<M> {
    /// Wraps a guest's console page (at least 3092 bytes).
    pub fn new(mem: M) -> Result<Self, RingError> {
        check_len(&mem)?;
        Ok(Self { mem })
    }

    /// Reads the guest's pending output into `buf`; returns the bytes read.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, RingError> {
        OUT.consume(&self.mem, buf)
    }

    /// Appends as much of `data` to the guest's `in[]` as fits; returns the bytes written.
    pub fn write(&self, data: &[u8]) -> Result<usize, RingError> {
        IN.produce(&self.mem, data)
    }

    /// Output bytes waiting to be read.
    pub fn pending_output(&self) -> Result<u32, RingError> {
        OUT.pending(&self.mem)
    }

    /// Sets the `connection` byte (`XENCONSOLE_CONNECTED`/`DISCONNECTED`).
    pub fn set_connection(&self, state: u8) {
        let off = offset_of!(XenconsInterface, connection);
        self.mem.write_bytes(off, &[state]);
    }

    /// The shared memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }
}
