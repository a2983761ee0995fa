//! Decoder for the x86-64 instructions a PV kernel uses to write a page-table entry.
//!
//! Only memory-destination forms are accepted: a register destination can never fault on
//! a read-only page, so seeing one means the guest changed the code under our feet (or
//! lies about the fault) and the fault is refused.
//!
//! Encodings follow the Intel SDM volume 2 (chapter 2 for prefixes, REX, ModRM and SIB;
//! the instruction pages for the opcodes). Segment overrides follow Xen's `x86_emulate`:
//! the last one wins, and in 64-bit mode CS/DS/ES/SS have base 0.

use super::EmulateError;

/// The architectural limit on instruction length; longer encodings raise #GP.
pub const MAX_INSN_LEN: usize = 15;

/// A general-purpose register operand. `high` selects AH/CH/DH/BH (bits 15..8 of
/// RAX/RCX/RDX/RBX), which byte-sized operands without a REX prefix encode as 4..=7.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct GReg {
    /// Index in [`super::Regs::gpr`], always below 16.
    pub idx: u8,
    pub high: bool,
}

impl GReg {
    pub const RAX: GReg = GReg::full(0);
    pub const RCX: GReg = GReg::full(1);
    pub const RDX: GReg = GReg::full(2);
    pub const RBX: GReg = GReg::full(3);

    const fn full(idx: u8) -> GReg {
        GReg { idx, high: false }
    }
}

/// The segment whose base is added to the effective address. In 64-bit mode only FS and
/// GS have a base; the others are flat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Seg {
    Flat,
    Fs,
    Gs,
}

/// The memory operand, as encoded; [`super::emulate`] turns it into an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct MemOperand {
    pub seg: Seg,
    pub base: Option<u8>,
    /// Index register and the scale as a shift count (0..=3).
    pub index: Option<(u8, u8)>,
    pub disp: i64,
    /// `mod=00 rm=101`: relative to the address of the next instruction.
    pub rip_relative: bool,
    /// The 0x67 prefix: the offset is computed and truncated to 32 bits.
    pub addr32: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AluOp {
    Add,
    Or,
    And,
    Sub,
    Xor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BitOp {
    Bts,
    Btr,
    Btc,
}

/// The register or immediate operand of an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Src {
    Reg(GReg),
    /// Already sign-extended to 64 bits where the SDM says so.
    Imm(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    /// `mov r/m, r` (88/89) and `mov r/m, imm` (C6/C7 /0).
    Mov(Src),
    /// `xchg r/m, r` (86/87), locked whether or not it has a LOCK prefix.
    Xchg(GReg),
    /// `cmpxchg r/m, r` (0F B0/B1): the accumulator is the comparand.
    Cmpxchg(GReg),
    /// `cmpxchg8b m64` (0F C7 /1), or `cmpxchg16b m128` with REX.W (size 16).
    Cmpxchg8b,
    /// `add/or/and/sub/xor r/m, r|imm`.
    Alu(AluOp, Src),
    /// `bts/btr/btc r/m, r|imm8`. An immediate offset is taken modulo the operand width;
    /// a register offset is signed and may select a bit outside the operand.
    Bit(BitOp, Src),
}

impl Op {
    /// Whether the SDM allows a LOCK prefix on the memory form.
    fn lockable(self) -> bool {
        !matches!(self, Op::Mov(_))
    }
}

/// A decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Insn {
    pub op: Op,
    /// Operand size in bytes: 1, 2, 4 or 8 (16 only for `cmpxchg16b`).
    pub size: u8,
    pub mem: MemOperand,
    /// Length in bytes, at most [`MAX_INSN_LEN`].
    pub len: u8,
}

/// A bounded reader over the instruction bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// True if the caller supplied at least [`MAX_INSN_LEN`] bytes, so that running out
    /// means the encoding is too long rather than that the fetch was short.
    full_window: bool,
}

impl Cursor<'_> {
    fn peek(&self) -> Result<u8, EmulateError> {
        match self.bytes.get(self.pos) {
            Some(&b) => Ok(b),
            None if self.full_window => Err(EmulateError::TooLong),
            None => Err(EmulateError::Truncated),
        }
    }

    fn next(&mut self) -> Result<u8, EmulateError> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }

    fn imm(&mut self, bytes: u8) -> Result<u64, EmulateError> {
        let mut v = 0u64;
        for i in 0..u32::from(bytes) {
            v |= u64::from(self.next()?) << (8 * i);
        }
        Ok(v)
    }

    /// Reads an immediate of `bytes` (1, 2 or 4) and sign-extends it to 64 bits.
    fn simm(&mut self, bytes: u8) -> Result<u64, EmulateError> {
        let v = self.imm(bytes)?;
        Ok(sign_extend(v, bytes))
    }
}

/// Sign-extends the low `bytes` bytes of `v` to 64 bits.
pub(super) fn sign_extend(v: u64, bytes: u8) -> u64 {
    match bytes {
        1 => v as u8 as i8 as i64 as u64,
        2 => v as u16 as i16 as i64 as u64,
        4 => v as u32 as i32 as i64 as u64,
        _ => v,
    }
}

const REX_W: u8 = 8;
const REX_R: u8 = 4;
const REX_X: u8 = 2;
const REX_B: u8 = 1;

/// Prefix state gathered before the opcode.
#[derive(Default)]
struct Prefixes {
    opsize16: bool,
    addr32: bool,
    lock: bool,
    rep_f2: bool,
    rep_f3: bool,
    seg: Option<Seg>,
    /// The REX byte's low nibble if a REX prefix immediately precedes the opcode.
    rex: Option<u8>,
}

impl Prefixes {
    fn rex_bit(&self, bit: u8) -> u8 {
        u8::from(self.rex.unwrap_or(0) & bit != 0)
    }
}

/// The ModRM byte's fields once REX is applied; only the memory form is represented.
struct ModRm {
    /// The reg field (with REX.R), or the opcode extension for group opcodes.
    reg: u8,
    mem: MemOperand,
}

fn decode_modrm(c: &mut Cursor<'_>, p: &Prefixes) -> Result<ModRm, EmulateError> {
    let modrm = c.next()?;
    let md = modrm >> 6;
    let reg = ((modrm >> 3) & 7) | (p.rex_bit(REX_R) << 3);
    let rm = modrm & 7;
    if md == 3 {
        return Err(EmulateError::Unsupported);
    }
    let mut mem = MemOperand {
        seg: p.seg.unwrap_or(Seg::Flat),
        base: None,
        index: None,
        disp: 0,
        rip_relative: false,
        addr32: p.addr32,
    };
    let mut disp32 = md == 2;
    if rm == 4 {
        let sib = c.next()?;
        let scale = sib >> 6;
        let index = ((sib >> 3) & 7) | (p.rex_bit(REX_X) << 3);
        let base = sib & 7;
        // Index 100 without REX.X means "no index"; with REX.X it is r12.
        if index != 4 {
            mem.index = Some((index, scale));
        }
        // Base 101 with mod=00 means "no base, disp32", whatever REX.B says.
        if base == 5 && md == 0 {
            disp32 = true;
        } else {
            mem.base = Some(base | (p.rex_bit(REX_B) << 3));
        }
    } else if rm == 5 && md == 0 {
        mem.rip_relative = true;
        disp32 = true;
    } else {
        mem.base = Some(rm | (p.rex_bit(REX_B) << 3));
    }
    if md == 1 {
        mem.disp = c.simm(1)? as i64;
    } else if disp32 {
        mem.disp = c.simm(4)? as i64;
    }
    Ok(ModRm { reg, mem })
}

/// Decodes one instruction from the start of `bytes` (at most [`MAX_INSN_LEN`] are
/// looked at). Anything outside the supported set is [`EmulateError::Unsupported`].
pub(super) fn decode(bytes: &[u8]) -> Result<Insn, EmulateError> {
    let window = bytes.get(..MAX_INSN_LEN).unwrap_or(bytes);
    let mut c = Cursor {
        bytes: window,
        pos: 0,
        full_window: window.len() == MAX_INSN_LEN,
    };
    let mut p = Prefixes::default();
    loop {
        let b = c.peek()?;
        match b {
            0x66 => p.opsize16 = true,
            0x67 => p.addr32 = true,
            0xF0 => p.lock = true,
            0xF2 => p.rep_f2 = true,
            0xF3 => p.rep_f3 = true,
            0x26 | 0x2E | 0x36 | 0x3E => p.seg = Some(Seg::Flat),
            0x64 => p.seg = Some(Seg::Fs),
            0x65 => p.seg = Some(Seg::Gs),
            0x40..=0x4F => {
                c.pos += 1;
                // A REX counts only if the opcode follows it directly; a later REX
                // replaces an earlier one.
                p.rex = Some(b & 0xF);
                continue;
            }
            _ => break,
        }
        c.pos += 1;
        // A legacy prefix after a REX makes the REX ineffective.
        p.rex = None;
    }

    let byte_size = 1u8;
    let v_size = if p.rex_bit(REX_W) != 0 {
        8
    } else if p.opsize16 {
        2
    } else {
        4
    };
    // Byte registers 4..=7 are AH..BH unless any REX prefix is present.
    let greg8 = |r: u8| -> GReg {
        if p.rex.is_none() && (4..8).contains(&r) {
            GReg {
                idx: r - 4,
                high: true,
            }
        } else {
            GReg {
                idx: r,
                high: false,
            }
        }
    };
    let greg = |r: u8, size: u8| {
        if size == 1 {
            greg8(r)
        } else {
            GReg {
                idx: r,
                high: false,
            }
        }
    };
    // Immediate width for a full-size operand: imm16 with 0x66, otherwise imm32
    // (sign-extended to 64 bits under REX.W).
    let iz = |size: u8| if size == 2 { 2 } else { 4 };

    let opcode = c.next()?;
    let (op, size, mem) = match opcode {
        // mov Eb,Gb / Ev,Gv
        0x88 | 0x89 => {
            let size = if opcode == 0x88 { byte_size } else { v_size };
            let m = decode_modrm(&mut c, &p)?;
            (Op::Mov(Src::Reg(greg(m.reg, size))), size, m.mem)
        }
        // xchg Eb,Gb / Ev,Gv
        0x86 | 0x87 => {
            let size = if opcode == 0x86 { byte_size } else { v_size };
            let m = decode_modrm(&mut c, &p)?;
            (Op::Xchg(greg(m.reg, size)), size, m.mem)
        }
        // add/or/and/sub/xor Eb,Gb / Ev,Gv
        0x00 | 0x01 | 0x08 | 0x09 | 0x20 | 0x21 | 0x28 | 0x29 | 0x30 | 0x31 => {
            let alu = match opcode & 0xF8 {
                0x00 => AluOp::Add,
                0x08 => AluOp::Or,
                0x20 => AluOp::And,
                0x28 => AluOp::Sub,
                _ => AluOp::Xor,
            };
            let size = if opcode & 1 == 0 { byte_size } else { v_size };
            let m = decode_modrm(&mut c, &p)?;
            (Op::Alu(alu, Src::Reg(greg(m.reg, size))), size, m.mem)
        }
        // group 1: Eb,Ib / Ev,Iz / Ev,Ib (sign-extended)
        0x80 | 0x81 | 0x83 => {
            let size = if opcode == 0x80 { byte_size } else { v_size };
            let m = decode_modrm(&mut c, &p)?;
            let alu = match m.reg & 7 {
                0 => AluOp::Add,
                1 => AluOp::Or,
                4 => AluOp::And,
                5 => AluOp::Sub,
                6 => AluOp::Xor,
                // adc/sbb are not used on page tables; cmp does not write.
                _ => return Err(EmulateError::Unsupported),
            };
            let imm = match opcode {
                0x81 => c.simm(iz(size))?,
                _ => c.simm(1)?,
            };
            (Op::Alu(alu, Src::Imm(imm)), size, m.mem)
        }
        // mov Eb,Ib / Ev,Iz
        0xC6 | 0xC7 => {
            let size = if opcode == 0xC6 { byte_size } else { v_size };
            let m = decode_modrm(&mut c, &p)?;
            if m.reg & 7 != 0 {
                return Err(EmulateError::Unsupported);
            }
            let imm = c.simm(if size == 1 { 1 } else { iz(size) })?;
            (Op::Mov(Src::Imm(imm)), size, m.mem)
        }
        0x0F => {
            let op2 = c.next()?;
            match op2 {
                0xB0 | 0xB1 => {
                    let size = if op2 == 0xB0 { byte_size } else { v_size };
                    let m = decode_modrm(&mut c, &p)?;
                    (Op::Cmpxchg(greg(m.reg, size)), size, m.mem)
                }
                0xC7 => {
                    let m = decode_modrm(&mut c, &p)?;
                    // Only /1; an operand-size prefix is not part of the encoding.
                    if m.reg & 7 != 1 || p.opsize16 {
                        return Err(EmulateError::Unsupported);
                    }
                    let size = if p.rex_bit(REX_W) != 0 { 16 } else { 8 };
                    (Op::Cmpxchg8b, size, m.mem)
                }
                0xAB | 0xB3 | 0xBB => {
                    let bit = match op2 {
                        0xAB => BitOp::Bts,
                        0xB3 => BitOp::Btr,
                        _ => BitOp::Btc,
                    };
                    let m = decode_modrm(&mut c, &p)?;
                    (Op::Bit(bit, Src::Reg(greg(m.reg, v_size))), v_size, m.mem)
                }
                0xBA => {
                    let m = decode_modrm(&mut c, &p)?;
                    let bit = match m.reg & 7 {
                        5 => BitOp::Bts,
                        6 => BitOp::Btr,
                        7 => BitOp::Btc,
                        // bt does not write; /0../3 are undefined.
                        _ => return Err(EmulateError::Unsupported),
                    };
                    let imm = c.imm(1)?;
                    (Op::Bit(bit, Src::Imm(imm)), v_size, m.mem)
                }
                _ => return Err(EmulateError::Unsupported),
            }
        }
        _ => return Err(EmulateError::Unsupported),
    };

    // LOCK on a form that does not allow it raises #UD on hardware.
    if p.lock && !op.lockable() {
        return Err(EmulateError::Unsupported);
    }
    // F2/F3 are only harmless as HLE hints: XACQUIRE/XRELEASE on a locked instruction
    // (xchg is locked implicitly), and XRELEASE on a mov to memory.
    if p.rep_f2 || p.rep_f3 {
        let locked = p.lock || matches!(op, Op::Xchg(_));
        let xrelease_mov = matches!(op, Op::Mov(_)) && !p.rep_f2;
        if !locked && !xrelease_mov {
            return Err(EmulateError::Unsupported);
        }
    }

    Ok(Insn {
        op,
        size,
        mem,
        // The cursor never moves past the 15-byte window.
        len: c.pos.min(MAX_INSN_LEN) as u8,
    })
}
