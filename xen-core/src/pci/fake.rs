//! A fake PCI configuration space for the host tests of `pci` and `pirq`.

use crate::pirq::{reg, Bdf, ConfigSpace};
use std::collections::HashMap;

/// A fake configuration space whose BARs behave like hardware: a write of all-ones reads
/// back the size mask (low flag bits kept), anything else is stored.
#[derive(Default)]
pub(crate) struct Fake {
    /// Each function's 256 bytes (absent functions read all-ones).
    pub funcs: HashMap<Bdf, [u8; 256]>,
    /// Every 16-bit write, in order.
    pub writes: Vec<(Bdf, u8, u16)>,
    /// (function, BAR register) → writable address bits.
    bar_masks: HashMap<(Bdf, u8), u32>,
    /// Command register values seen while a BAR held all-ones.
    pub command_during_probe: Vec<u16>,
}

impl Fake {
    pub fn put32(&mut self, bdf: Bdf, off: u8, v: u32) {
        let f = self.funcs.entry(bdf).or_insert([0; 256]);
        f[usize::from(off)..usize::from(off) + 4].copy_from_slice(&v.to_le_bytes());
    }
    pub fn put16(&mut self, bdf: Bdf, off: u8, v: u16) {
        let f = self.funcs.entry(bdf).or_insert([0; 256]);
        f[usize::from(off)..usize::from(off) + 2].copy_from_slice(&v.to_le_bytes());
    }
    pub fn put8(&mut self, bdf: Bdf, off: u8, v: u8) {
        self.funcs.entry(bdf).or_insert([0; 256])[usize::from(off)] = v;
    }
    pub fn get32(&self, bdf: Bdf, off: u8) -> u32 {
        let f = &self.funcs[&bdf];
        let o = usize::from(off);
        u32::from_le_bytes([f[o], f[o + 1], f[o + 2], f[o + 3]])
    }
    /// A function with vendor/device `id` and header type `header`.
    pub fn function(&mut self, bdf: Bdf, id: u32, header: u8) {
        self.put32(bdf, 0, id);
        self.put8(bdf, reg::HEADER_TYPE, header);
        self.put16(bdf, reg::COMMAND, 0x7);
    }
    /// BAR register `off` at `value` (flags included) decoding `size` bytes.
    pub fn bar(&mut self, bdf: Bdf, off: u8, value: u32, mask: u32) {
        self.put32(bdf, off, value);
        self.bar_masks.insert((bdf, off), mask);
    }
}

impl ConfigSpace for Fake {
    fn read32(&mut self, bdf: Bdf, offset: u8) -> u32 {
        match self.funcs.get(&bdf) {
            None => u32::MAX,
            Some(_) => self.get32(bdf, offset & 0xfc),
        }
    }
    fn write16(&mut self, bdf: Bdf, offset: u8, value: u16) {
        self.writes.push((bdf, offset, value));
        self.put16(bdf, offset & !1, value);
    }
    fn write32(&mut self, bdf: Bdf, offset: u8, value: u32) {
        let off = offset & !3;
        match self.bar_masks.get(&(bdf, off)).copied() {
            Some(mask) => {
                // Read-only flag bits: whatever the mask does not cover in the low nibble.
                let flags = self.get32(bdf, off) & !mask & 0xf;
                if value == u32::MAX {
                    let cmd = self.read16(bdf, reg::COMMAND);
                    self.command_during_probe.push(cmd);
                }
                self.put32(bdf, off, (value & mask) | flags);
            }
            None => self.put32(bdf, off, value),
        }
    }
}
