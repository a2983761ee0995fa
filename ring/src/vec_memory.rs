//! [`VecRingMemory`]: a safe [`RingMemory`] for host tests (feature `test-utils`).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::{Fence, RingMemory};

/// Heap-backed shared memory for tests: a cheaply clonable handle to one zeroed area made of
/// `AtomicU32` words, so a clone given to another thread is a faithful model of a page shared
/// with another domain. Loads and stores are `Relaxed`; [`Fence`]s map to
/// `fence(Acquire/Release/SeqCst)`, so the ring code is checked against the C11 model with
/// exactly the barriers it asks for.
///
/// Every access is bounds-checked and **panics** outside the area or on a misaligned `u32`:
/// the ring types promise never to do that whatever the peer writes, and the hostile-peer
/// tests rely on this panic to catch a broken promise.
#[derive(Clone, Debug)]
pub struct VecRingMemory {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    words: Vec<AtomicU32>,
    len: usize,
    accesses: AtomicU64,
}

// A test double: out-of-contract access is meant to panic (see the type's docs), and all
// arithmetic below is on offsets already checked against `len`.
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
impl VecRingMemory {
    /// A zeroed area of `len` bytes.
    pub fn new(len: usize) -> Self {
        let words = (0..len.div_ceil(4)).map(|_| AtomicU32::new(0)).collect();
        Self {
            inner: Arc::new(Inner {
                words,
                len,
                accesses: AtomicU64::new(0),
            }),
        }
    }

    /// A zeroed ring of `2^order` 4 KiB pages.
    pub fn pages(order: u32) -> Self {
        Self::new(xen_abi::PAGE_SIZE << order)
    }

    /// Number of loads and stores made so far through any handle (fences not counted).
    pub fn accesses(&self) -> u64 {
        self.inner.accesses.load(Ordering::Relaxed)
    }

    /// A copy of the whole area.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut v = alloc::vec![0; self.inner.len];
        self.read_bytes(0, &mut v);
        v
    }

    fn check(&self, offset: usize, len: usize) {
        self.inner.accesses.fetch_add(1, Ordering::Relaxed);
        let end = offset.checked_add(len);
        assert!(
            end.is_some_and(|end| end <= self.inner.len),
            "ring access outside shared memory: offset {offset:#x} len {len:#x} area {:#x}",
            self.inner.len
        );
    }

    fn byte(&self, at: usize) -> u8 {
        (self.inner.words[at / 4].load(Ordering::Relaxed) >> ((at % 4) * 8)) as u8
    }

    fn set_byte(&self, at: usize, b: u8) {
        let shift = (at % 4) * 8;
        let word = &self.inner.words[at / 4];
        // Two atomic RMWs touch only this byte, so a concurrent writer of a neighbouring
        // byte in the same word is never undone.
        word.fetch_and(!(0xffu32 << shift), Ordering::Relaxed);
        word.fetch_or(u32::from(b) << shift, Ordering::Relaxed);
    }
}

#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
impl RingMemory for VecRingMemory {
    fn len(&self) -> usize {
        self.inner.len
    }

    fn load_u32(&self, offset: usize) -> u32 {
        self.check(offset, 4);
        assert!(
            offset.is_multiple_of(4),
            "misaligned u32 load at {offset:#x}"
        );
        self.inner.words[offset / 4].load(Ordering::Relaxed)
    }

    fn store_u32(&self, offset: usize, value: u32) {
        self.check(offset, 4);
        assert!(
            offset.is_multiple_of(4),
            "misaligned u32 store at {offset:#x}"
        );
        self.inner.words[offset / 4].store(value, Ordering::Relaxed);
    }

    fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        self.check(offset, dst.len());
        let mut at = offset;
        let mut rest = dst;
        while !rest.is_empty() {
            if at.is_multiple_of(4) && rest.len() >= 4 {
                let w = self.inner.words[at / 4].load(Ordering::Relaxed);
                let (head, tail) = rest.split_at_mut(4);
                head.copy_from_slice(&w.to_le_bytes());
                rest = tail;
                at += 4;
            } else {
                let (head, tail) = rest.split_at_mut(1);
                head[0] = self.byte(at);
                rest = tail;
                at += 1;
            }
        }
    }

    fn write_bytes(&self, offset: usize, src: &[u8]) {
        self.check(offset, src.len());
        let mut at = offset;
        let mut rest = src;
        while !rest.is_empty() {
            if at.is_multiple_of(4) && rest.len() >= 4 {
                let (head, tail) = rest.split_at(4);
                let w = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
                self.inner.words[at / 4].store(w, Ordering::Relaxed);
                rest = tail;
                at += 4;
            } else {
                self.set_byte(at, rest[0]);
                rest = &rest[1..];
                at += 1;
            }
        }
    }

    fn fence(&self, f: Fence) {
        fence(match f {
            Fence::Read => Ordering::Acquire,
            Fence::Write => Ordering::Release,
            Fence::Full => Ordering::SeqCst,
        });
    }
}
