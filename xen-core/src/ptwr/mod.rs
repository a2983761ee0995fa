//! Xen's writable page tables (`VMASST_TYPE_writable_pagetables`, ABI.md §3.3 rule 8):
//! the emulation of a PV guest kernel's store to one of its own read-only L1 page-table
//! pages. This is the portable part of Xen's `xen/arch/x86/pv/ro-page-fault.c`
//! (`ptwr_emulated_update` and friends), with a small decoder in place of Xen's full
//! `x86_emulate`.
//!
//! The trap handler decides that a #PF is a candidate (guest kernel mode, present + write,
//! not an instruction fetch, the mapping is read-only and the frame has type L1), fetches
//! up to [`MAX_INSN_LEN`] bytes at RIP, and calls [`emulate`] with the faulting address
//! (CR2) and a [`PteAccess`] for the page-table frame. [`emulate`]:
//!
//! 1. decodes the instruction (the forms Linux and Mini-OS use, table below);
//! 2. computes the address it writes and requires it to lie in the same naturally aligned
//!    8-byte entry as CR2, naturally aligned for its size (Xen refuses anything else);
//! 3. reads the entry, computes the new value (sub-8-byte writes are spliced into the
//!    whole entry) and installs it with a compare-exchange through
//!    [`PteAccess::update_entry`], which validates the new entry as `mmu_update` would;
//! 4. on success writes back registers and flags as the instruction would, and advances
//!    RIP past it.
//!
//! Every form is performed as read, compute, compare-exchange, so even an unlocked
//! read-modify-write is atomic with respect to the entry. If the entry keeps changing under
//! us, the attempt is abandoned after [`MAX_ATTEMPTS`] tries with [`EmulateError::Retry`]:
//! the caller resumes the guest without advancing RIP, and the instruction faults again
//! (Xen's `X86EMUL_RETRY`). A failed `cmpxchg` comparison is not a retry: it completes with
//! ZF clear and the current value loaded, as on hardware.
//!
//! # Supported encodings
//!
//! Memory destinations only (`mod != 11`), operand size 1, 2, 4 or 8 bytes (`v` = 2 with
//! 0x66, 8 with REX.W, else 4):
//!
//! | opcode | instruction | LOCK |
//! |---|---|---|
//! | 88 /r, 89 /r | `mov r/m8, r8`, `mov r/mv, rv` | #UD (refused) |
//! | C6 /0 ib, C7 /0 iw/id | `mov r/m, imm` (imm32 sign-extended under REX.W) | #UD |
//! | 86 /r, 87 /r | `xchg r/m, r` (always atomic; register gets the old value) | allowed |
//! | 0F B0 /r, 0F B1 /r | `cmpxchg r/m, r` (AL/AX/EAX/RAX comparand) | allowed |
//! | 0F C7 /1 | `cmpxchg8b m64` (EDX:EAX, ECX:EBX); `cmpxchg16b` decodes but always crosses | allowed |
//! | 00/01, 08/09, 20/21, 28/29, 30/31 /r | `add/or/and/sub/xor r/m, r` | allowed |
//! | 80 /0,1,4,5,6 ib; 81 … iw/id; 83 … ib | `add/or/and/sub/xor r/m, imm` (sign-extended) | allowed |
//! | 0F BA /5,6,7 ib | `bts/btr/btc r/m, imm8` (offset modulo the operand width) | allowed |
//! | 0F AB, 0F B3, 0F BB /r | `bts/btr/btc r/m, r` (signed offset, may address other units) | allowed |
//!
//! Prefixes: 0x66, 0x67 (32-bit address arithmetic), LOCK, segment overrides (FS and GS add
//! [`Regs::fs_base`]/[`Regs::gs_base`]; CS/DS/ES/SS are flat; the last one wins), REX.W/R/X/B
//! (ignored unless directly before the opcode), F2/F3 only as HLE hints (on a locked
//! instruction or `xchg`, and F3 on `mov`). ModRM with SIB, disp8/disp32 and RIP-relative
//! addressing. At most 15 bytes.
//!
//! Everything here runs on guest-controlled bytes and registers: nothing panics, all
//! address arithmetic wraps, and the decoder looks at no more than 15 bytes.
//!
//! What the caller still does itself (as Xen's `pv_ro_page_fault` does): on any error other
//! than `Retry`, bounce the #PF to the guest with the original error code and CR2; after
//! success, inject a single-step #DB if the guest had RFLAGS.TF set.

mod decode;
#[cfg(test)]
mod tests;

use xen_abi::Errno;

pub use decode::MAX_INSN_LEN;
use decode::{AluOp, BitOp, GReg, Insn, MemOperand, Op, Seg, Src};

/// How many read/compare-exchange rounds one emulation may take before giving up with
/// [`EmulateError::Retry`]; Xen bounds its compare-exchange loops at five as well.
pub const MAX_ATTEMPTS: usize = 5;

/// The guest's registers at the faulting instruction, as far as emulation needs them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15: the SDM's encoding order.
    pub gpr: [u64; 16],
    /// Address of the faulting instruction; advanced past it on success.
    pub rip: u64,
    /// Arithmetic flags are updated as the instruction would; RF is cleared on success.
    pub rflags: u64,
    /// Used for an FS segment override (the guest's `FS_BASE`).
    pub fs_base: u64,
    /// Used for a GS segment override (the guest's current `GS_BASE`).
    pub gs_base: u64,
}

/// A refusal from the [`PteAccess`] implementation: the entry could not be read, or the
/// new entry failed validation (the errno `mmu_update` would have returned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault(pub Errno);

/// The hypervisor's view of the faulting L1 page-table slot.
///
/// Addresses are guest linear addresses, always 8-byte aligned and always inside the entry
/// that contains CR2; the implementation maps them to the page-table frame it looked up
/// for the fault.
pub trait PteAccess {
    /// Reads the naturally aligned 8-byte entry at `entry_addr`.
    fn read_entry(&mut self, entry_addr: u64) -> Result<u64, Fault>;

    /// Validates `new` as an L1 entry of the faulting domain and installs it if the entry
    /// still holds `old` (one atomic compare-exchange, with the references of the new entry
    /// taken before and those of the old entry dropped after it). Returns `Ok(Err(found))`
    /// with the value found if the entry no longer holds `old`; nothing is changed then.
    fn update_entry(
        &mut self,
        entry_addr: u64,
        old: u64,
        new: u64,
    ) -> Result<Result<(), u64>, Fault>;
}

/// Why an instruction was not emulated. Apart from [`EmulateError::Retry`], the caller
/// treats all of them as Xen treats `X86EMUL_UNHANDLEABLE`: the #PF goes to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmulateError {
    /// The bytes supplied end before the instruction does (short fetch).
    Truncated,
    /// The encoding is longer than 15 bytes.
    TooLong,
    /// Not one of the supported instructions, or a register destination, or a prefix that
    /// would change the meaning (LOCK on `mov`, a REP prefix, ...).
    Unsupported,
    /// The instruction does not write the 8-byte entry that contains CR2.
    AddressMismatch,
    /// The write covers the CR2 entry and part of another one.
    CrossesEntry,
    /// The write lies within the entry but is not naturally aligned for its size.
    Misaligned,
    /// [`PteAccess`] refused: the new entry is invalid, or the entry could not be read.
    Rejected(Errno),
    /// The entry kept changing concurrently; re-execute the instruction (leave RIP).
    Retry,
}

impl From<Fault> for EmulateError {
    fn from(f: Fault) -> Self {
        EmulateError::Rejected(f.0)
    }
}

const FLAG_CF: u64 = 1 << 0;
const FLAG_PF: u64 = 1 << 2;
const FLAG_AF: u64 = 1 << 4;
const FLAG_ZF: u64 = 1 << 6;
const FLAG_SF: u64 = 1 << 7;
const FLAG_OF: u64 = 1 << 11;
const FLAG_RF: u64 = 1 << 16;
const ARITH_FLAGS: u64 = FLAG_CF | FLAG_PF | FLAG_AF | FLAG_ZF | FLAG_SF | FLAG_OF;

/// Emulates the store to a page-table entry that faulted at `fault_addr` (CR2).
///
/// `insn` holds the bytes at `regs.rip` (up to [`MAX_INSN_LEN`]; fewer if the fetch
/// stopped at an unmapped page). On `Ok`, the entry has been updated through `mem` (or, for
/// a failed compare-exchange, left alone), `regs` reflect the instruction's effects and
/// `regs.rip` points after it. On `Err`, `regs` are unchanged.
pub fn emulate(
    insn: &[u8],
    regs: &mut Regs,
    fault_addr: u64,
    mem: &mut impl PteAccess,
) -> Result<(), EmulateError> {
    let insn = decode::decode(insn)?;
    let next_rip = regs.rip.wrapping_add(u64::from(insn.len));
    let addr = access_address(&insn, regs, next_rip);
    let entry = check_target(addr, insn.size, fault_addr)?;
    let shift = ((addr & 7) * 8) as u32;

    let mut known: Option<u64> = None;
    for _ in 0..MAX_ATTEMPTS {
        let full = match known {
            Some(v) => v,
            None => mem.read_entry(entry)?,
        };
        let effect = execute(&insn, regs, extract(full, shift, insn.size));
        if let Some(value) = effect.store {
            let new = splice(full, shift, insn.size, value);
            match mem.update_entry(entry, full, new)? {
                Ok(()) => {}
                Err(found) => {
                    known = Some(found);
                    continue;
                }
            }
        }
        effect.commit(regs);
        regs.rflags &= !FLAG_RF;
        regs.rip = next_rip;
        return Ok(());
    }
    Err(EmulateError::Retry)
}

/// The linear address of the first byte the instruction writes.
fn access_address(insn: &Insn, regs: &Regs, next_rip: u64) -> u64 {
    let m: &MemOperand = &insn.mem;
    let mut off = if m.rip_relative {
        next_rip.wrapping_add(m.disp as u64)
    } else {
        let mut a = m.disp as u64;
        if let Some(b) = m.base {
            a = a.wrapping_add(gpr(regs, b));
        }
        if let Some((i, scale)) = m.index {
            a = a.wrapping_add(gpr(regs, i) << (scale & 3));
        }
        a
    };
    // A register bit offset selects the operand-sized unit that holds the bit: the offset
    // is signed and the unit is EA + size * floor(offset / (8 * size)) (SDM, BT).
    if let Op::Bit(_, Src::Reg(r)) = insn.op {
        let bits_log2 = size_log2(insn.size) + 3;
        let offset = decode::sign_extend(read_reg(regs, r, insn.size), insn.size) as i64;
        let units = offset >> bits_log2;
        off = off.wrapping_add((units << size_log2(insn.size)) as u64);
    }
    if m.addr32 {
        off &= 0xFFFF_FFFF;
    }
    let base = match m.seg {
        Seg::Flat => 0,
        Seg::Fs => regs.fs_base,
        Seg::Gs => regs.gs_base,
    };
    off.wrapping_add(base)
}

/// Checks that a `size`-byte write at `addr` stays within the naturally aligned 8-byte
/// entry holding `fault_addr`, aligned for its size, and returns that entry's address.
fn check_target(addr: u64, size: u8, fault_addr: u64) -> Result<u64, EmulateError> {
    let entry = fault_addr & !7;
    let first = addr & !7;
    let last = addr.wrapping_add(u64::from(size) - 1) & !7;
    if first != entry && last != entry {
        return Err(EmulateError::AddressMismatch);
    }
    if first != last {
        return Err(EmulateError::CrossesEntry);
    }
    if addr & (u64::from(size) - 1) != 0 {
        return Err(EmulateError::Misaligned);
    }
    Ok(entry)
}

fn size_log2(size: u8) -> u32 {
    u32::from(size.max(1)).trailing_zeros()
}

/// All ones in the low `size` bytes.
fn mask(size: u8) -> u64 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        4 => 0xFFFF_FFFF,
        _ => u64::MAX,
    }
}

/// The sign bit of a `size`-byte value.
fn sign_bit(size: u8) -> u64 {
    1u64 << (8 * u32::from(size.clamp(1, 8)) - 1)
}

/// The `size`-byte operand at bit `shift` of the entry.
fn extract(full: u64, shift: u32, size: u8) -> u64 {
    full.checked_shr(shift).unwrap_or(0) & mask(size)
}

/// The entry with the `size`-byte operand at bit `shift` replaced by `value`.
fn splice(full: u64, shift: u32, size: u8, value: u64) -> u64 {
    let m = mask(size).checked_shl(shift).unwrap_or(0);
    (full & !m) | ((value & mask(size)).checked_shl(shift).unwrap_or(0) & m)
}

fn gpr(regs: &Regs, idx: u8) -> u64 {
    regs.gpr[usize::from(idx & 15)]
}

fn read_reg(regs: &Regs, r: GReg, size: u8) -> u64 {
    let v = gpr(regs, r.idx);
    if r.high {
        (v >> 8) & 0xFF
    } else {
        v & mask(size)
    }
}

/// Writes a `size`-byte result as the CPU would: 8- and 16-bit writes keep the other bits,
/// 32-bit writes zero-extend into the full register.
fn write_reg(regs: &mut Regs, r: GReg, size: u8, value: u64) {
    let slot = &mut regs.gpr[usize::from(r.idx & 15)];
    *slot = if r.high {
        (*slot & !0xFF00) | ((value & 0xFF) << 8)
    } else {
        match size {
            1 | 2 => (*slot & !mask(size)) | (value & mask(size)),
            4 => value & 0xFFFF_FFFF,
            _ => value,
        }
    };
}

/// What one execution of the instruction does, computed against one value of the entry
/// and applied only if that value is the one replaced.
#[derive(Default)]
struct Effect {
    /// The new operand value, if the instruction writes memory.
    store: Option<u64>,
    /// Register results: (register, operand size, value).
    regs: [Option<(GReg, u8, u64)>; 2],
    /// Flags: (which bits, their new values).
    flags: (u64, u64),
}

impl Effect {
    fn commit(&self, regs: &mut Regs) {
        for &(r, size, v) in self.regs.iter().flatten() {
            write_reg(regs, r, size, v);
        }
        let (m, v) = self.flags;
        regs.rflags = (regs.rflags & !m) | (v & m);
    }
}

/// ZF, SF and PF of a `size`-byte result.
fn result_flags(res: u64, size: u8) -> u64 {
    let mut f = 0;
    if res & mask(size) == 0 {
        f |= FLAG_ZF;
    }
    if res & sign_bit(size) != 0 {
        f |= FLAG_SF;
    }
    // PF reflects even parity of the low byte only.
    if (res as u8).count_ones().is_multiple_of(2) {
        f |= FLAG_PF;
    }
    f
}

/// `a + b` or `a - b` on `size`-byte operands with all six arithmetic flags.
fn add_sub(a: u64, b: u64, size: u8, sub: bool) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let (res, carry) = if sub {
        (a.wrapping_sub(b) & m, a < b)
    } else {
        let r = a.wrapping_add(b) & m;
        (r, r < a)
    };
    let mut f = result_flags(res, size);
    if carry {
        f |= FLAG_CF;
    }
    if (a ^ b ^ res) & 0x10 != 0 {
        f |= FLAG_AF;
    }
    // Signed overflow: for add, both inputs share a sign the result lacks; for sub, the
    // inputs differ in sign and the result's differs from the minuend's.
    let overflow = if sub {
        (a ^ b) & (a ^ res)
    } else {
        !(a ^ b) & (a ^ res)
    };
    if overflow & sign_bit(size) != 0 {
        f |= FLAG_OF;
    }
    (res, f)
}

fn src_value(regs: &Regs, src: Src, size: u8) -> u64 {
    match src {
        Src::Reg(r) => read_reg(regs, r, size),
        Src::Imm(v) => v & mask(size),
    }
}

/// Computes the instruction's effect given `cur`, the current value of its memory operand.
fn execute(insn: &Insn, regs: &Regs, cur: u64) -> Effect {
    let size = insn.size;
    let mut e = Effect::default();
    match insn.op {
        Op::Mov(src) => e.store = Some(src_value(regs, src, size)),
        Op::Xchg(r) => {
            e.store = Some(read_reg(regs, r, size));
            e.regs[0] = Some((r, size, cur));
        }
        Op::Cmpxchg(r) => {
            let acc = read_reg(regs, GReg::RAX, size);
            // The flags are those of `cmp` between the accumulator and the destination.
            let (_, f) = add_sub(acc, cur, size, true);
            e.flags = (ARITH_FLAGS, f);
            if acc == cur {
                e.store = Some(read_reg(regs, r, size));
            } else {
                e.regs[0] = Some((GReg::RAX, size, cur));
            }
        }
        Op::Cmpxchg8b => {
            // Only the 8-byte form reaches here (16 bytes always crosses an entry).
            let expected = (read_reg(regs, GReg::RDX, 4) << 32) | read_reg(regs, GReg::RAX, 4);
            if cur == expected {
                let new = (read_reg(regs, GReg::RCX, 4) << 32) | read_reg(regs, GReg::RBX, 4);
                e.store = Some(new);
                e.flags = (FLAG_ZF, FLAG_ZF);
            } else {
                e.regs = [
                    Some((GReg::RAX, 4, cur & 0xFFFF_FFFF)),
                    Some((GReg::RDX, 4, cur >> 32)),
                ];
                e.flags = (FLAG_ZF, 0);
            }
        }
        Op::Alu(op, src) => {
            let b = src_value(regs, src, size);
            let (res, f) = match op {
                AluOp::Add => add_sub(cur, b, size, false),
                AluOp::Sub => add_sub(cur, b, size, true),
                // Logic ops clear CF and OF; AF is undefined and cleared, as hardware does.
                AluOp::And => ((cur & b), result_flags(cur & b, size)),
                AluOp::Or => ((cur | b), result_flags(cur | b, size)),
                AluOp::Xor => ((cur ^ b), result_flags(cur ^ b, size)),
            };
            e.store = Some(res & mask(size));
            e.flags = (ARITH_FLAGS, f);
        }
        Op::Bit(op, src) => {
            // The unit holding the bit was chosen by `access_address`; here only the bit
            // number within the operand matters.
            let bits = 8 * u64::from(size);
            let offset = match src {
                Src::Reg(r) => read_reg(regs, r, size),
                Src::Imm(v) => v,
            };
            let bit = 1u64 << (offset & (bits - 1));
            e.flags = (FLAG_CF, if cur & bit != 0 { FLAG_CF } else { 0 });
            e.store = Some(match op {
                BitOp::Bts => cur | bit,
                BitOp::Btr => cur & !bit,
                BitOp::Btc => cur ^ bit,
            });
        }
    }
    e
}
