//! Host tests of the writable-page-table emulator. Instruction bytes were produced with GNU
//! `as` and checked with `objdump`; the assembly is in each comment.

use super::*;

const RAX: usize = 0;
const RCX: usize = 1;
const RDX: usize = 2;
const RBX: usize = 3;
const RBP: usize = 5;
const RSI: usize = 6;
const RDI: usize = 7;
const R8: usize = 8;
const R9: usize = 9;
const R10: usize = 10;
const R12: usize = 12;
const R13: usize = 13;

/// Linear address of the mock L1 page (Linux's direct map).
const PAGE: u64 = 0xffff_8880_0123_4000;
const RIP: u64 = 0xffff_ffff_8106_0000;
/// A PTE the way Linux writes one: present, RW, accessed, dirty, NX.
const PTE: u64 = 0x8000_0000_1234_5067;
/// The mock validator refuses entries with this (reserved) bit set.
const BAD_BIT: u64 = 1 << 51;
/// What a concurrent writer flips in the mock (a software-available bit).
const RACE_BIT: u64 = 1 << 9;

/// One L1 page with a validator and an optional concurrent writer.
struct MockL1 {
    entries: [u64; 512],
    reads: usize,
    updates: usize,
    /// The next `races` updates find the entry changed by someone else first.
    races: usize,
    /// `read_entry` fails (the frame stopped being an L1).
    unreadable: bool,
}

impl MockL1 {
    fn new() -> Self {
        let mut entries = [0u64; 512];
        for (i, e) in entries.iter_mut().enumerate() {
            *e = PTE + ((i as u64) << 12);
        }
        MockL1 {
            entries,
            reads: 0,
            updates: 0,
            races: 0,
            unreadable: false,
        }
    }

    fn slot(addr: u64) -> usize {
        assert_eq!(addr & 7, 0, "entry address must be aligned");
        assert_eq!(addr & !0xFFF, PAGE, "entry address outside the page");
        ((addr & 0xFFF) / 8) as usize
    }
}

impl PteAccess for MockL1 {
    fn read_entry(&mut self, entry_addr: u64) -> Result<u64, Fault> {
        self.reads += 1;
        if self.unreadable {
            return Err(Fault(Errno::EFAULT));
        }
        Ok(self.entries[Self::slot(entry_addr)])
    }

    fn update_entry(
        &mut self,
        entry_addr: u64,
        old: u64,
        new: u64,
    ) -> Result<Result<(), u64>, Fault> {
        self.updates += 1;
        let i = Self::slot(entry_addr);
        if self.races > 0 {
            self.races -= 1;
            self.entries[i] ^= RACE_BIT;
        }
        if new & BAD_BIT != 0 {
            return Err(Fault(Errno::EINVAL));
        }
        if self.entries[i] != old {
            return Ok(Err(self.entries[i]));
        }
        self.entries[i] = new;
        Ok(Ok(()))
    }
}

/// Registers with RDI pointing at entry `idx` of the mock page.
fn regs_at(idx: u64) -> Regs {
    let mut r = Regs {
        rip: RIP,
        rflags: 0x202,
        ..Regs::default()
    };
    for (i, g) in r.gpr.iter_mut().enumerate() {
        *g = 0x1111_1111_1111_1111u64.wrapping_mul(i as u64 + 1);
    }
    r.gpr[RDI] = PAGE + idx * 8;
    r
}

fn entry(m: &MockL1, idx: u64) -> u64 {
    m.entries[idx as usize]
}

fn flags(r: &Regs) -> u64 {
    r.rflags & ARITH_FLAGS
}

/// Emulates `insn` expecting success; checks RIP advanced by its length.
fn ok(insn: &[u8], regs: &mut Regs, cr2: u64, m: &mut MockL1) {
    let rip = regs.rip;
    assert_eq!(emulate(insn, regs, cr2, m), Ok(()), "insn {insn:02x?}");
    assert_eq!(regs.rip, rip + insn.len() as u64, "RIP after {insn:02x?}");
}

/// Emulates `insn` expecting `err`, and checks neither registers nor the page changed.
fn refused(insn: &[u8], regs: &Regs, cr2: u64, err: EmulateError) {
    let mut m = MockL1::new();
    let before = m.entries;
    let mut r = *regs;
    assert_eq!(
        emulate(insn, &mut r, cr2, &mut m),
        Err(err),
        "insn {insn:02x?}"
    );
    assert_eq!(r, *regs, "registers changed by a refused {insn:02x?}");
    assert_eq!(m.entries, before, "page changed by a refused {insn:02x?}");
}

// ---- the exact forms Linux 6.1 uses (ABI.md §3.3) ----

#[test]
fn linux_mov_r64_m64() {
    // mov %rsi,(%rdi)
    let mut m = MockL1::new();
    let mut r = regs_at(5);
    r.gpr[RSI] = 0x8000_0000_0abc_d067;
    let before = r;
    ok(&[0x48, 0x89, 0x37], &mut r, PAGE + 40, &mut m);
    assert_eq!(entry(&m, 5), 0x8000_0000_0abc_d067);
    assert_eq!(entry(&m, 4), PTE + (4 << 12), "neighbour untouched");
    assert_eq!(r.gpr, before.gpr);
    assert_eq!(r.rflags, before.rflags);
}

#[test]
fn linux_mov_imm32_m64_sign_extends() {
    // movq $0x0,(%rdi)
    let mut m = MockL1::new();
    let mut r = regs_at(7);
    ok(&[0x48, 0xC7, 0x07, 0, 0, 0, 0], &mut r, PAGE + 56, &mut m);
    assert_eq!(entry(&m, 7), 0);
    // movq $-0x1000,(%rdi) would set the reserved bit; with a negative imm32 whose
    // extension is valid: movq $0x80000067? (sign-extends to 0xffffffff80000067).
    let mut m = MockL1::new();
    let mut r = regs_at(7);
    assert_eq!(
        emulate(
            &[0x48, 0xC7, 0x07, 0x67, 0, 0, 0x80],
            &mut r,
            PAGE + 56,
            &mut m
        ),
        Err(EmulateError::Rejected(Errno::EINVAL)),
        "0xffffffff80000067 has bit 51 set: the validator must see the extended value"
    );
    // movl $0x80000067,(%rdi): 32-bit store, no extension, high half kept.
    let mut m = MockL1::new();
    let mut r = regs_at(7);
    ok(&[0xC7, 0x07, 0x67, 0, 0, 0x80], &mut r, PAGE + 56, &mut m);
    assert_eq!(entry(&m, 7), (PTE & !0xFFFF_FFFF) | 0x8000_0067);
}

#[test]
fn linux_xchg_r64_m64() {
    // xchg %rax,(%rdi)
    let mut m = MockL1::new();
    let mut r = regs_at(3);
    r.gpr[RAX] = 0;
    ok(&[0x48, 0x87, 0x07], &mut r, PAGE + 24, &mut m);
    assert_eq!(entry(&m, 3), 0);
    assert_eq!(r.gpr[RAX], PTE + (3 << 12), "old entry returned in RAX");
}

#[test]
fn linux_lock_andb_imm8_m8() {
    // lock andb $0xfd,(%rdi): clear_bit(_PAGE_BIT_RW)
    let mut m = MockL1::new();
    let mut r = regs_at(9);
    r.rflags |= FLAG_CF | FLAG_OF | FLAG_ZF;
    ok(&[0xF0, 0x80, 0x27, 0xFD], &mut r, PAGE + 72, &mut m);
    assert_eq!(entry(&m, 9), PTE + (9 << 12) - 2);
    // 0x67 & 0xfd = 0x65: not zero, positive, four bits set (even parity).
    assert_eq!(flags(&r), FLAG_PF);
}

#[test]
fn linux_lock_btr_imm8_m64() {
    // lock btrq $0x5,(%rdi): test_and_clear_bit(_PAGE_BIT_ACCESSED)
    let mut m = MockL1::new();
    let mut r = regs_at(2);
    ok(
        &[0xF0, 0x48, 0x0F, 0xBA, 0x37, 0x05],
        &mut r,
        PAGE + 16,
        &mut m,
    );
    assert_eq!(entry(&m, 2), PTE + (2 << 12) - 0x20);
    assert_eq!(r.rflags & FLAG_CF, FLAG_CF, "bit was set");
    // Again: now clear, CF clear, entry unchanged.
    ok(
        &[0xF0, 0x48, 0x0F, 0xBA, 0x37, 0x05],
        &mut r,
        PAGE + 16,
        &mut m,
    );
    assert_eq!(entry(&m, 2), PTE + (2 << 12) - 0x20);
    assert_eq!(r.rflags & FLAG_CF, 0);
}

#[test]
fn linux_lock_btr_r64_m64() {
    // lock btr %rsi,(%rdi)
    let mut m = MockL1::new();
    let mut r = regs_at(2);
    r.gpr[RSI] = 63;
    ok(&[0xF0, 0x48, 0x0F, 0xB3, 0x37], &mut r, PAGE + 16, &mut m);
    assert_eq!(entry(&m, 2), (PTE + (2 << 12)) & !(1 << 63));
    assert_eq!(r.rflags & FLAG_CF, FLAG_CF);
}

// ---- addressing forms ----

#[test]
fn disp8_and_negative_disp32() {
    // mov %rax,0x8(%rdi)
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[RAX] = 0x42;
    ok(&[0x48, 0x89, 0x47, 0x08], &mut r, PAGE + 8, &mut m);
    assert_eq!(entry(&m, 1), 0x42);
    // mov %rax,-0x1000(%rdi) with RDI one page above.
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[RDI] = PAGE + 0x1000 + 0x10;
    r.gpr[RAX] = 0x43;
    ok(
        &[0x48, 0x89, 0x87, 0x00, 0xF0, 0xFF, 0xFF],
        &mut r,
        PAGE + 0x10,
        &mut m,
    );
    assert_eq!(entry(&m, 2), 0x43);
}

#[test]
fn sib_index_scale() {
    // mov %rax,(%rdi,%rcx,8)
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[RCX] = 100;
    r.gpr[RAX] = 0x44;
    ok(&[0x48, 0x89, 0x04, 0xCF], &mut r, PAGE + 800, &mut m);
    assert_eq!(entry(&m, 100), 0x44);
    // mov %rax,0x0(,%rcx,4): no base, disp32.
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[RCX] = (PAGE + 0x18) / 4;
    r.gpr[RAX] = 0x45;
    ok(
        &[0x48, 0x89, 0x04, 0x8D, 0, 0, 0, 0],
        &mut r,
        PAGE + 0x18,
        &mut m,
    );
    assert_eq!(entry(&m, 3), 0x45);
    // mov %rax,0x10(%rbp,%r9,2): REX.X index, disp8.
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[RBP] = PAGE;
    r.gpr[R9] = 0x20;
    r.gpr[RAX] = 0x46;
    ok(&[0x4A, 0x89, 0x44, 0x4D, 0x10], &mut r, PAGE + 0x50, &mut m);
    assert_eq!(entry(&m, 10), 0x46);
    // mov %rax,(%rax,%r12,1): REX.X turns index 100 into r12.
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[RAX] = 0x60;
    r.gpr[R12] = PAGE;
    ok(&[0x4A, 0x89, 0x04, 0x20], &mut r, PAGE + 0x60, &mut m);
    assert_eq!(entry(&m, 12), 0x60);
}

#[test]
fn rex_b_bases_r8_r12_r13() {
    // mov %r10,(%r8)
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[R8] = PAGE + 0x100;
    r.gpr[R10] = 0x47;
    ok(&[0x4D, 0x89, 0x10], &mut r, PAGE + 0x100, &mut m);
    assert_eq!(entry(&m, 32), 0x47);
    // mov %rax,(%r12): needs a SIB.
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[R12] = PAGE + 0x108;
    r.gpr[RAX] = 0x48;
    ok(&[0x49, 0x89, 0x04, 0x24], &mut r, PAGE + 0x108, &mut m);
    assert_eq!(entry(&m, 33), 0x48);
    // mov %rax,0x0(%r13): mod=01 rm=101 with REX.B is r13, not RIP-relative.
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[R13] = PAGE + 0x110;
    r.gpr[RAX] = 0x49;
    ok(&[0x49, 0x89, 0x45, 0x00], &mut r, PAGE + 0x110, &mut m);
    assert_eq!(entry(&m, 34), 0x49);
}

#[test]
fn rip_relative_uses_next_rip() {
    // mov %rax,0x100(%rip)
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.rip = PAGE + 0x200 - 0x100 - 7;
    r.gpr[RAX] = 0x4A;
    ok(
        &[0x48, 0x89, 0x05, 0x00, 0x01, 0x00, 0x00],
        &mut r,
        PAGE + 0x200,
        &mut m,
    );
    assert_eq!(entry(&m, 64), 0x4A);
    // Relative to the faulting RIP instead, the store would straddle two entries.
    let mut r = regs_at(0);
    r.rip = PAGE + 0x200 - 0x100;
    refused(
        &[0x48, 0x89, 0x05, 0x00, 0x01, 0x00, 0x00],
        &r,
        PAGE + 0x200,
        EmulateError::CrossesEntry,
    );
}

#[test]
fn fs_and_gs_overrides_add_the_base() {
    // mov %rax,%fs:0x10
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.fs_base = PAGE + 0x300;
    r.gpr[RAX] = 0x4B;
    ok(
        &[0x64, 0x48, 0x89, 0x04, 0x25, 0x10, 0, 0, 0],
        &mut r,
        PAGE + 0x310,
        &mut m,
    );
    assert_eq!(entry(&m, 98), 0x4B);
    // mov %rax,%gs:(%rbx)
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gs_base = PAGE;
    r.gpr[RBX] = 0x320;
    r.gpr[RAX] = 0x4C;
    ok(&[0x65, 0x48, 0x89, 0x03], &mut r, PAGE + 0x320, &mut m);
    assert_eq!(entry(&m, 100), 0x4C);
    // The same without the override misses.
    let mut r = regs_at(0);
    r.gs_base = PAGE;
    r.gpr[RBX] = 0x320;
    refused(
        &[0x48, 0x89, 0x03],
        &r,
        PAGE + 0x320,
        EmulateError::AddressMismatch,
    );
    // A DS override after GS: the last segment prefix wins, flat.
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gs_base = 0x5000;
    r.gpr[RBX] = PAGE + 0x328;
    ok(
        &[0x65, 0x3E, 0x48, 0x89, 0x03],
        &mut r,
        PAGE + 0x328,
        &mut m,
    );
    assert_eq!(entry(&m, 101), r.gpr[RAX]);
}

#[test]
fn addr32_truncates_the_offset() {
    // mov %rax,(%edi): only the low 32 bits of RDI count; with a GS base to land in the page.
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[RDI] = 0xdead_0000_0000_0040;
    r.gs_base = PAGE;
    r.gpr[RAX] = 0x4D;
    ok(&[0x65, 0x67, 0x48, 0x89, 0x07], &mut r, PAGE + 0x40, &mut m);
    assert_eq!(entry(&m, 8), 0x4D);
}

// ---- operand sizes and sub-entry merges ----

#[test]
fn sixteen_bit_mov_and_imm16() {
    // mov %ax,(%rdi)
    let mut m = MockL1::new();
    let mut r = regs_at(4);
    r.gpr[RAX] = 0xFFFF_FFFF_FFFF_0123;
    ok(&[0x66, 0x89, 0x07], &mut r, PAGE + 32, &mut m);
    assert_eq!(entry(&m, 4), ((PTE + (4 << 12)) & !0xFFFF) | 0x0123);
    // movw $0x1234,6(%rdi) (66 c7 47 06 34 12): the top 16 bits.
    let mut m = MockL1::new();
    let mut r = regs_at(4);
    ok(
        &[0x66, 0xC7, 0x47, 0x06, 0x34, 0x12],
        &mut r,
        PAGE + 38,
        &mut m,
    );
    assert_eq!(
        entry(&m, 4),
        ((PTE + (4 << 12)) & !(0xFFFF << 48)) | (0x1234 << 48)
    );
}

#[test]
fn thirty_two_bit_high_half() {
    // mov %eax,0x4(%rdi)
    let mut m = MockL1::new();
    let mut r = regs_at(6);
    r.gpr[RAX] = 0xAAAA_AAAA_0000_0001;
    ok(&[0x89, 0x47, 0x04], &mut r, PAGE + 52, &mut m);
    assert_eq!(entry(&m, 6), ((PTE + (6 << 12)) & 0xFFFF_FFFF) | (1 << 32));
}

#[test]
fn byte_registers_with_and_without_rex() {
    // mov %ah,(%rdi)
    let mut m = MockL1::new();
    let mut r = regs_at(1);
    r.gpr[RAX] = 0x1234_5678_9ABC_DEF0;
    ok(&[0x88, 0x27], &mut r, PAGE + 8, &mut m);
    assert_eq!(entry(&m, 1) & 0xFF, 0xDE);
    // mov %spl,(%rdi)
    let mut m = MockL1::new();
    let mut r = regs_at(1);
    r.gpr[4] = 0x77;
    ok(&[0x40, 0x88, 0x27], &mut r, PAGE + 8, &mut m);
    assert_eq!(entry(&m, 1) & 0xFF, 0x77);
    // movb $0x5a,0x3(%rdi)
    let mut m = MockL1::new();
    let mut r = regs_at(1);
    ok(&[0xC6, 0x47, 0x03, 0x5A], &mut r, PAGE + 11, &mut m);
    assert_eq!(
        entry(&m, 1),
        ((PTE + (1 << 12)) & !(0xFF << 24)) | (0x5A << 24)
    );
}

#[test]
fn rex_before_a_legacy_prefix_is_ignored() {
    // 48 66 89 07: the REX is not next to the opcode, so this is mov %ax,(%rdi).
    let mut m = MockL1::new();
    let mut r = regs_at(4);
    r.gpr[RAX] = 0xFFFF_FFFF_FFFF_0123;
    ok(&[0x48, 0x66, 0x89, 0x07], &mut r, PAGE + 32, &mut m);
    assert_eq!(entry(&m, 4), ((PTE + (4 << 12)) & !0xFFFF) | 0x0123);
}

// ---- register write-back ----

#[test]
fn xchg_32_bit_zero_extends_and_8_bit_keeps() {
    // xchg %eax,0x4(%rdi)
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[RAX] = 0xFFFF_FFFF_0000_0007;
    ok(&[0x87, 0x47, 0x04], &mut r, PAGE + 4, &mut m);
    assert_eq!(r.gpr[RAX], PTE >> 32, "old high half, zero-extended");
    assert_eq!(entry(&m, 0), (PTE & 0xFFFF_FFFF) | (7 << 32));
    // xchg %ah,0x1(%rdi)
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[RAX] = 0x1111_1111_1111_AB22;
    ok(&[0x86, 0x67, 0x01], &mut r, PAGE + 1, &mut m);
    assert_eq!(r.gpr[RAX], 0x1111_1111_1111_5022, "AH gets byte 1 (0x50)");
    assert_eq!(entry(&m, 0), (PTE & !0xFF00) | 0xAB00);
}

#[test]
fn cmpxchg_success_and_failure() {
    // lock cmpxchg %rsi,(%rdi)
    let insn = [0xF0, 0x48, 0x0F, 0xB1, 0x37];
    let mut m = MockL1::new();
    let mut r = regs_at(3);
    r.gpr[RAX] = PTE + (3 << 12);
    r.gpr[RSI] = 0;
    ok(&insn, &mut r, PAGE + 24, &mut m);
    assert_eq!(entry(&m, 3), 0);
    assert_eq!(r.gpr[RAX], PTE + (3 << 12), "RAX untouched on success");
    assert_eq!(flags(&r), FLAG_ZF | FLAG_PF);

    let mut m = MockL1::new();
    let mut r = regs_at(3);
    r.gpr[RAX] = 1;
    r.gpr[RSI] = 0;
    ok(&insn, &mut r, PAGE + 24, &mut m);
    assert_eq!(entry(&m, 3), PTE + (3 << 12), "unchanged");
    assert_eq!(r.gpr[RAX], PTE + (3 << 12), "current value loaded");
    assert_eq!(r.rflags & FLAG_ZF, 0);
    // Flags of 1 - 0x8000_0000_1234_8067: a borrow, but the signed result
    // 1 + (2^63 - 0x1234_8067) still fits and is positive.
    assert_eq!(r.rflags & (FLAG_CF | FLAG_OF | FLAG_SF), FLAG_CF);
    assert_eq!(m.updates, 0, "a failed comparison writes nothing");
}

#[test]
fn cmpxchg_32_bit_failure_zero_extends_rax() {
    // lock cmpxchg %esi,0x4(%rdi) (f0 0f b1 77 04)
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[RAX] = 0xFFFF_FFFF_0000_0000;
    ok(&[0xF0, 0x0F, 0xB1, 0x77, 0x04], &mut r, PAGE + 4, &mut m);
    assert_eq!(r.gpr[RAX], PTE >> 32);
    // Success: RAX keeps its high half.
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[RAX] = 0xFFFF_FFFF_0000_0000 | (PTE >> 32);
    r.gpr[RSI] = 0x5555_5555_0000_0000;
    ok(&[0xF0, 0x0F, 0xB1, 0x77, 0x04], &mut r, PAGE + 4, &mut m);
    assert_eq!(r.gpr[RAX], 0xFFFF_FFFF_0000_0000 | (PTE >> 32));
    assert_eq!(entry(&m, 0), PTE & 0xFFFF_FFFF);
    assert_eq!(r.rflags & FLAG_ZF, FLAG_ZF);
}

#[test]
fn cmpxchg_byte_compares_only_its_byte() {
    // lock cmpxchg %cl,(%rdi) (f0 0f b0 0f); another CPU flips bit 9 first: the byte still
    // matches, so the emulator retries the whole-entry exchange and succeeds.
    let mut m = MockL1::new();
    m.races = 1;
    let mut r = regs_at(0);
    r.gpr[RAX] = 0x67;
    r.gpr[RCX] = 0x65;
    ok(&[0xF0, 0x0F, 0xB0, 0x0F], &mut r, PAGE, &mut m);
    assert_eq!(entry(&m, 0), (PTE ^ RACE_BIT) & !0xFF | 0x65);
    assert_eq!(m.updates, 2);
}

#[test]
fn cmpxchg8b_uses_edx_eax_and_ecx_ebx() {
    // lock cmpxchg8b (%rdi)
    let insn = [0xF0, 0x0F, 0xC7, 0x0F];
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[RAX] = 0xAAAA_AAAA_0000_0000 | (PTE & 0xFFFF_FFFF);
    r.gpr[RDX] = 0xBBBB_BBBB_0000_0000 | (PTE >> 32);
    r.gpr[RBX] = 0xCCCC_CCCC_0000_1067;
    r.gpr[RCX] = 0xDDDD_DDDD_0000_0000;
    r.rflags |= FLAG_CF;
    let before = r;
    ok(&insn, &mut r, PAGE, &mut m);
    assert_eq!(entry(&m, 0), 0x1067);
    assert_eq!(r.gpr, before.gpr);
    assert_eq!(flags(&r), FLAG_ZF | FLAG_CF, "only ZF changes");

    // Failure: EDX:EAX loaded, zero-extended.
    let mut r = before;
    ok(&insn, &mut r, PAGE, &mut m);
    assert_eq!(r.gpr[RAX], 0x1067);
    assert_eq!(r.gpr[RDX], 0);
    assert_eq!(flags(&r), FLAG_CF);
    assert_eq!(entry(&m, 0), 0x1067);
}

#[test]
fn cmpxchg_loses_a_race_on_its_own_bytes() {
    // lock cmpxchg %cl,0x1(%rdi) (f0 0f b0 4f 01): the comparison matches (byte 1 is 0x50),
    // but another CPU flips bit 9 before the exchange; the retry then sees 0x52 and the
    // instruction completes as a failed comparison.
    let mut m = MockL1::new();
    m.races = 1;
    let mut r = regs_at(0);
    r.gpr[RAX] = 0x50;
    r.gpr[RCX] = 0x00;
    ok(&[0xF0, 0x0F, 0xB0, 0x4F, 0x01], &mut r, PAGE + 1, &mut m);
    assert_eq!(entry(&m, 0), PTE ^ RACE_BIT);
    assert_eq!(r.gpr[RAX], 0x52);
    assert_eq!(r.rflags & FLAG_ZF, 0);
    assert_eq!(m.updates, 1);
}

#[test]
fn misc_prefix_combinations() {
    // lock xchg %rax,(%rdi) (f0 48 87 07): redundant LOCK is fine.
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[RAX] = 0x1067;
    ok(&[0xF0, 0x48, 0x87, 0x07], &mut r, PAGE, &mut m);
    assert_eq!((entry(&m, 0), r.gpr[RAX]), (0x1067, PTE));
    // cs mov %rsi,(%rdi) (2e 48 89 37): a flat override.
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[RSI] = 0x2067;
    ok(&[0x2E, 0x48, 0x89, 0x37], &mut r, PAGE, &mut m);
    assert_eq!(entry(&m, 0), 0x2067);
    // mov %rax,0x100(%eip) (67 48 89 05 ..): EIP-relative, truncated to 32 bits, with a
    // GS base to get back to the page.
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.rip = 0xffff_ffff_0000_1000;
    r.gs_base = PAGE + 0x10 - (0x1000 + 9 + 0x100);
    r.gpr[RAX] = 0x3067;
    let insn = [0x65, 0x67, 0x48, 0x89, 0x05, 0x00, 0x01, 0x00, 0x00];
    ok(&insn, &mut r, PAGE + 0x10, &mut m);
    assert_eq!(entry(&m, 2), 0x3067);
    // Unlocked cmpxchg8b with F2, and cmpxchg8b at an odd dword.
    let r = regs_at(0);
    refused(
        &[0xF2, 0x0F, 0xC7, 0x0F],
        &r,
        PAGE,
        EmulateError::Unsupported,
    );
    refused(
        &[0xF0, 0x0F, 0xC7, 0x4F, 0x04],
        &r,
        PAGE + 4,
        EmulateError::CrossesEntry,
    );
}

// ---- arithmetic and flags ----

#[test]
fn alu_register_forms() {
    let pte = PTE;
    let cases: &[(&[u8], u64, u64)] = &[
        // lock or %rax,(%rdi)
        (&[0xF0, 0x48, 0x09, 0x07], 0x100, pte | 0x100),
        // sub %rax,(%rdi) (48 29 07)
        (&[0x48, 0x29, 0x07], 0x7, pte - 7),
        // and %eax,(%rdi) (21 07): low half only.
        (&[0x21, 0x07], 0xF, pte & !0xFFFF_FFF0),
        // xor %rax,(%rdi) (48 31 07)
        (&[0x48, 0x31, 0x07], 0x2, pte ^ 2),
        // or %al,(%rdi) (08 07)
        (&[0x08, 0x07], 0x80, pte | 0x80),
        // add %al,(%rdi) (00 07): 0x67 + 0xa0 = 0x107, carry out of the byte.
        (&[0x00, 0x07], 0xA0, (pte & !0xFF) | 0x07),
        // xor %al,(%rdi) (30 07)
        (&[0x30, 0x07], 0x67, pte & !0xFF),
    ];
    for &(insn, rax, want) in cases {
        let mut m = MockL1::new();
        let mut r = regs_at(0);
        r.gpr[RAX] = rax;
        ok(insn, &mut r, PAGE, &mut m);
        assert_eq!(entry(&m, 0), want, "insn {insn:02x?}");
        assert_eq!(r.gpr[RAX], rax);
    }
}

#[test]
fn alu_immediate_forms_and_flags() {
    // lock addl $0x1,(%rdi): 0x12345067 + 1.
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    ok(&[0xF0, 0x83, 0x07, 0x01], &mut r, PAGE, &mut m);
    assert_eq!(entry(&m, 0), PTE + 1);
    assert_eq!(flags(&r), 0, "0x12345068: odd parity, no carry");

    // subl $0x1,(%rdi) on zero: borrow, negative, AF; the high half is kept.
    let mut m = MockL1::new();
    m.entries[0] = 0x1234_0000_0000_0000;
    let mut r = regs_at(0);
    ok(&[0x83, 0x2F, 0x01], &mut r, PAGE, &mut m);
    assert_eq!(entry(&m, 0), 0x1234_0000_FFFF_FFFF);
    assert_eq!(flags(&r), FLAG_CF | FLAG_SF | FLAG_AF | FLAG_PF);

    // lock addw $0x1,(%rdi) on 0x7fff: signed overflow.
    let mut m = MockL1::new();
    m.entries[0] = 0x7FFF;
    let mut r = regs_at(0);
    ok(&[0x66, 0xF0, 0x83, 0x07, 0x01], &mut r, PAGE, &mut m);
    assert_eq!(entry(&m, 0), 0x8000);
    assert_eq!(flags(&r), FLAG_OF | FLAG_SF | FLAG_AF | FLAG_PF);

    // lock orl $0x80000000,0x4(%rdi): set NX via the high half.
    let mut m = MockL1::new();
    m.entries[0] = 0x1067;
    let mut r = regs_at(0);
    ok(
        &[0xF0, 0x81, 0x4F, 0x04, 0, 0, 0, 0x80],
        &mut r,
        PAGE + 4,
        &mut m,
    );
    assert_eq!(entry(&m, 0), 0x8000_0000_0000_1067);
    // The dword result 0x80000000: negative, low byte 0 has even parity.
    assert_eq!(flags(&r), FLAG_SF | FLAG_PF);

    // andq $0x7fffffff,(%rdi): imm32 sign-extends as positive, clears the high half.
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    ok(
        &[0x48, 0x81, 0x27, 0xFF, 0xFF, 0xFF, 0x7F],
        &mut r,
        PAGE,
        &mut m,
    );
    assert_eq!(entry(&m, 0), PTE & 0x7FFF_FFFF);

    // andq $-0x2,(%rdi) (48 83 27 fe): imm8 sign-extends to 64 bits.
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    ok(&[0x48, 0x83, 0x27, 0xFE], &mut r, PAGE, &mut m);
    assert_eq!(entry(&m, 0), PTE & !1);

    // lock andb $0x0,(%rdi) (f0 80 27 00): result zero.
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.rflags |= FLAG_CF | FLAG_OF | FLAG_AF;
    ok(&[0xF0, 0x80, 0x27, 0x00], &mut r, PAGE, &mut m);
    assert_eq!(flags(&r), FLAG_ZF | FLAG_PF);

    // xorw $0x8000,(%rdi) (66 81 37 00 80): imm16.
    let mut m = MockL1::new();
    m.entries[0] = 0;
    let mut r = regs_at(0);
    ok(&[0x66, 0x81, 0x37, 0x00, 0x80], &mut r, PAGE, &mut m);
    assert_eq!(entry(&m, 0), 0x8000);
    assert_eq!(flags(&r), FLAG_SF | FLAG_PF);
}

#[test]
fn bit_ops_imm_and_reg_offsets() {
    // btsq $0x3f,(%rdi)
    let mut m = MockL1::new();
    m.entries[0] = 0x1067;
    let mut r = regs_at(0);
    ok(&[0x48, 0x0F, 0xBA, 0x2F, 0x3F], &mut r, PAGE, &mut m);
    assert_eq!(entry(&m, 0), 0x8000_0000_0000_1067);
    assert_eq!(r.rflags & FLAG_CF, 0);
    // btcq $0x1,(%rdi)
    ok(&[0x48, 0x0F, 0xBA, 0x3F, 0x01], &mut r, PAGE, &mut m);
    assert_eq!(entry(&m, 0), 0x8000_0000_0000_1065);
    assert_eq!(r.rflags & FLAG_CF, FLAG_CF);
    // btsl $0x23,(%rdi) (0f ba 2f 23): 35 mod 32 = bit 3 of the dword.
    ok(&[0x0F, 0xBA, 0x2F, 0x23], &mut r, PAGE, &mut m);
    assert_eq!(entry(&m, 0), 0x8000_0000_0000_106D);

    // bts %rax,(%rdi) with RAX = 70: bit 6 of the next entry.
    let mut m = MockL1::new();
    m.entries[1] = 0;
    let mut r = regs_at(0);
    r.gpr[RAX] = 70;
    ok(&[0x48, 0x0F, 0xAB, 0x07], &mut r, PAGE + 8, &mut m);
    assert_eq!(entry(&m, 1), 0x40);
    assert_eq!(entry(&m, 0), PTE);
    // The same with CR2 at the base entry is refused: the write is elsewhere.
    let mut r = regs_at(0);
    r.gpr[RAX] = 70;
    refused(
        &[0x48, 0x0F, 0xAB, 0x07],
        &r,
        PAGE,
        EmulateError::AddressMismatch,
    );

    // btr %rsi,(%rdi) with RSI = -1: bit 63 of the previous entry.
    let mut m = MockL1::new();
    let mut r = regs_at(5);
    r.gpr[RSI] = u64::MAX;
    ok(&[0x48, 0x0F, 0xB3, 0x37], &mut r, PAGE + 32, &mut m);
    assert_eq!(entry(&m, 4), (PTE + (4 << 12)) & !(1 << 63));
    assert_eq!(r.rflags & FLAG_CF, FLAG_CF);

    // btc %ax,(%rdi) with AX = 0xfff0 (-16): the word two bytes below, bit 0.
    let mut m = MockL1::new();
    let mut r = regs_at(5);
    r.gpr[RAX] = 0x1234_FFF0;
    ok(&[0x66, 0x0F, 0xBB, 0x07], &mut r, PAGE + 38, &mut m);
    assert_eq!(entry(&m, 4), (PTE + (4 << 12)) ^ (1 << 48));

    // btr %esi,(%rdi) (0f b3 37) with ESI = 32 + 7: the high dword, bit 7.
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[RSI] = 0xFFFF_FFFF_0000_0027;
    ok(&[0x0F, 0xB3, 0x37], &mut r, PAGE + 4, &mut m);
    assert_eq!(entry(&m, 0), PTE & !(1 << 39));
}

#[test]
fn hle_hints_are_harmless() {
    // xrelease mov %rsi,(%rdi)
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[RSI] = 0x99;
    ok(&[0xF3, 0x48, 0x89, 0x37], &mut r, PAGE, &mut m);
    assert_eq!(entry(&m, 0), 0x99);
    // xacquire lock cmpxchg %rsi,(%rdi)
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.gpr[RAX] = PTE;
    r.gpr[RSI] = 0x98;
    ok(&[0xF2, 0xF0, 0x48, 0x0F, 0xB1, 0x37], &mut r, PAGE, &mut m);
    assert_eq!(entry(&m, 0), 0x98);
    // xacquire xchg (f2 48 87 07)
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    ok(&[0xF2, 0x48, 0x87, 0x07], &mut r, PAGE, &mut m);
}

#[test]
fn clears_rf_and_keeps_other_flags() {
    let mut m = MockL1::new();
    let mut r = regs_at(0);
    r.rflags = 0x202 | FLAG_RF | (1 << 8);
    ok(&[0x48, 0x89, 0x37], &mut r, PAGE, &mut m);
    assert_eq!(r.rflags, 0x202 | (1 << 8));
}

// ---- rejections ----

#[test]
fn wrong_address_is_refused() {
    let r = regs_at(5);
    refused(
        &[0x48, 0x89, 0x37],
        &r,
        PAGE + 48,
        EmulateError::AddressMismatch,
    );
    refused(
        &[0x48, 0x89, 0x37],
        &r,
        PAGE + 0x1028,
        EmulateError::AddressMismatch,
    );
    // CR2 anywhere inside the written entry is accepted.
    let mut m = MockL1::new();
    let mut r = regs_at(5);
    ok(&[0x48, 0x89, 0x37], &mut r, PAGE + 47, &mut m);
}

#[test]
fn crossing_and_misaligned_writes_are_refused() {
    // mov %rax,0x4(%rdi): crosses into the next entry.
    let r = regs_at(0);
    refused(
        &[0x48, 0x89, 0x47, 0x04],
        &r,
        PAGE + 4,
        EmulateError::CrossesEntry,
    );
    refused(
        &[0x48, 0x89, 0x47, 0x04],
        &r,
        PAGE + 8,
        EmulateError::CrossesEntry,
    );
    // mov %eax,0x2(%rdi) (89 47 02): inside one entry but misaligned (Xen refuses).
    refused(&[0x89, 0x47, 0x02], &r, PAGE + 2, EmulateError::Misaligned);
    // lock cmpxchg16b (%rdi): 16 bytes never fit one entry.
    refused(
        &[0xF0, 0x48, 0x0F, 0xC7, 0x0F],
        &r,
        PAGE,
        EmulateError::CrossesEntry,
    );
    // An access wrapping around the top of the address space.
    let mut r = regs_at(0);
    r.gpr[RDI] = u64::MAX - 3;
    refused(
        &[0x48, 0x89, 0x37],
        &r,
        u64::MAX,
        EmulateError::CrossesEntry,
    );
}

#[test]
fn unsupported_encodings_are_refused() {
    let r = regs_at(0);
    let cases: &[&[u8]] = &[
        // lock mov %rsi,(%rdi): #UD on hardware.
        &[0xF0, 0x48, 0x89, 0x37],
        // mov %rsi,%rdi: register destination.
        &[0x48, 0x89, 0xF7],
        // rep stos %rax,%es:(%rdi)
        &[0xF3, 0x48, 0xAB],
        // repne mov %rsi,(%rdi)
        &[0xF2, 0x48, 0x89, 0x37],
        // rep or %rax,(%rdi) without lock
        &[0xF3, 0x48, 0x09, 0x07],
        // adcq $1,(%rdi), sbbq $1,(%rdi), cmpq $1,(%rdi)
        &[0x48, 0x83, 0x17, 0x01],
        &[0x48, 0x83, 0x1F, 0x01],
        &[0x48, 0x83, 0x3F, 0x01],
        // btq $5,(%rdi): no write.
        &[0x48, 0x0F, 0xBA, 0x27, 0x05],
        // mov with /1 (c7 0f ...)
        &[0x48, 0xC7, 0x0F, 0, 0, 0, 0],
        // 0f c7 /6 (vmptrld (%rdi)) and 66 0f c7 /1
        &[0x0F, 0xC7, 0x37],
        &[0x66, 0x0F, 0xC7, 0x0F],
        // movsq, nop, a VEX prefix, ud2
        &[0x48, 0xA5],
        &[0x90],
        &[0xC5, 0xF9, 0x7F, 0x07],
        &[0x0F, 0x0B],
    ];
    for insn in cases {
        refused(insn, &r, PAGE, EmulateError::Unsupported);
    }
}

#[test]
fn truncated_and_overlong_encodings_are_refused() {
    let r = regs_at(0);
    for insn in [
        &[][..],
        &[0x48][..],
        &[0x48, 0x89][..],
        &[0x48, 0xC7, 0x07, 0, 0][..],
        &[0x48, 0x89, 0x04][..],
        &[0x48, 0x89, 0x87, 0, 0, 0][..],
        &[0xF0, 0x48, 0x0F, 0xBA, 0x37][..],
        &[0x0F][..],
    ] {
        refused(insn, &r, PAGE, EmulateError::Truncated);
    }
    // 14 prefixes + a 3-byte mov = 17 bytes.
    let mut long = [0x3Eu8; 17];
    long[14..].copy_from_slice(&[0x48, 0x89, 0x37]);
    refused(&long, &r, PAGE, EmulateError::TooLong);
    // 12 prefixes + 3 bytes = 15 is the limit and fine.
    let mut m = MockL1::new();
    let mut r2 = r;
    ok(&long[2..], &mut r2, PAGE, &mut m);
    // Trailing bytes after the instruction are not looked at.
    let mut m = MockL1::new();
    let mut r2 = r;
    let mut trail = [0xFFu8; 15];
    trail[..3].copy_from_slice(&[0x48, 0x89, 0x37]);
    ok(&trail[..3], &mut r2, PAGE, &mut m);
    let mut r3 = r;
    assert_eq!(emulate(&trail, &mut r3, PAGE, &mut m), Ok(()));
    assert_eq!(r3.rip, r.rip + 3);
}

#[test]
fn validation_failure_carries_the_errno() {
    // mov %rsi,(%rdi) with a reserved bit.
    let mut r = regs_at(0);
    r.gpr[RSI] = PTE | BAD_BIT;
    refused(
        &[0x48, 0x89, 0x37],
        &r,
        PAGE,
        EmulateError::Rejected(Errno::EINVAL),
    );
    // A read failure is passed on as well.
    let mut m = MockL1::new();
    m.unreadable = true;
    let mut r = regs_at(0);
    assert_eq!(
        emulate(&[0x48, 0x89, 0x37], &mut r, PAGE, &mut m),
        Err(EmulateError::Rejected(Errno::EFAULT))
    );
    assert_eq!(r.rip, RIP);
}

#[test]
fn concurrent_changes_are_retried_then_given_up() {
    // lock andb $0xfd,(%rdi) racing with a writer twice: still succeeds, on the new value.
    let mut m = MockL1::new();
    m.races = 2;
    let mut r = regs_at(0);
    ok(&[0xF0, 0x80, 0x27, 0xFD], &mut r, PAGE, &mut m);
    assert_eq!(entry(&m, 0), PTE & !2);
    assert_eq!(m.updates, 3);
    assert_eq!(m.reads, 1, "the value found by a failed exchange is reused");

    // A writer that never stops: Retry, nothing committed, RIP not advanced.
    let mut m = MockL1::new();
    m.races = usize::MAX;
    let mut r = regs_at(0);
    let before = r;
    assert_eq!(
        emulate(&[0xF0, 0x48, 0x0F, 0xBA, 0x37, 0x05], &mut r, PAGE, &mut m),
        Err(EmulateError::Retry)
    );
    assert_eq!(r, before);
    assert_eq!(m.updates, MAX_ATTEMPTS);

    // xchg under a race returns the value it actually replaced.
    let mut m = MockL1::new();
    m.races = 1;
    let mut r = regs_at(0);
    r.gpr[RAX] = 0;
    ok(&[0x48, 0x87, 0x07], &mut r, PAGE, &mut m);
    assert_eq!(r.gpr[RAX], PTE ^ RACE_BIT);
}

// ---- hostile input ----

mod hostile {
    use super::*;
    use proptest::prelude::*;

    /// A PteAccess that answers anything, to let random instructions run to the end.
    struct AnyPage {
        value: u64,
        fail_every: u64,
        calls: u64,
    }

    impl PteAccess for AnyPage {
        fn read_entry(&mut self, entry_addr: u64) -> Result<u64, Fault> {
            assert_eq!(entry_addr & 7, 0);
            self.calls += 1;
            Ok(self.value)
        }

        fn update_entry(
            &mut self,
            entry_addr: u64,
            old: u64,
            new: u64,
        ) -> Result<Result<(), u64>, Fault> {
            assert_eq!(entry_addr & 7, 0);
            self.calls += 1;
            if self.fail_every != 0 && self.calls.is_multiple_of(self.fail_every) {
                return Err(Fault(Errno::EINVAL));
            }
            if old != self.value {
                return Ok(Err(self.value));
            }
            self.value = new;
            Ok(Ok(()))
        }
    }

    /// Bytes biased towards the prefixes and opcodes the decoder knows.
    fn insn_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            any::<u8>(),
            proptest::sample::select(vec![
                0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x64, 0x65, 0x48, 0x4F, 0x41, 0x0F, 0x88, 0x89,
                0x86, 0x87, 0xC6, 0xC7, 0x80, 0x81, 0x83, 0x09, 0x21, 0x29, 0xB1, 0xBA, 0xB3, 0xAB,
                0x04, 0x05, 0x24, 0x25, 0x44, 0x84, 0x07, 0x37,
            ]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20000, ..ProptestConfig::default() })]

        #[test]
        fn never_panics(
            insn in proptest::collection::vec(insn_byte(), 0..20),
            gpr in proptest::array::uniform16(any::<u64>()),
            rip in any::<u64>(),
            rflags in any::<u64>(),
            fs_base in any::<u64>(),
            gs_base in any::<u64>(),
            value in any::<u64>(),
            fail_every in 0u64..4,
            fault_addr in any::<u64>(),
            aim in any::<bool>(),
        ) {
            let mut regs = Regs { gpr, rip, rflags, fs_base, gs_base };
            // Half the time, point CR2 at what the instruction probably targets so the
            // execution paths run, not only the refusals.
            let cr2 = if aim { gpr[7] } else { fault_addr };
            let before = regs;
            let mut page = AnyPage { value, fail_every, calls: 0 };
            match emulate(&insn, &mut regs, cr2, &mut page) {
                Ok(()) => {
                    let len = regs.rip.wrapping_sub(before.rip);
                    prop_assert!((1..=15).contains(&len));
                    prop_assert!(len as usize <= insn.len());
                    prop_assert_eq!(regs.fs_base, before.fs_base);
                    prop_assert_eq!(regs.gs_base, before.gs_base);
                }
                Err(_) => prop_assert_eq!(regs, before),
            }
            prop_assert!(page.calls <= 2 * MAX_ATTEMPTS as u64);
        }

        /// 8-byte `mov r64,(base)` with any registers and entry: the entry becomes exactly
        /// the register, whatever CR2 offset within the entry.
        #[test]
        fn mov_r64_any_register(
            src in 0u8..16,
            // Bases encodable as plain (base): rsp/r12 need a SIB, rbp/r13 a disp.
            base in proptest::sample::select(vec![0u8, 1, 2, 3, 6, 7, 8, 9, 10, 11, 14, 15]),
            val in any::<u64>(),
            off in 0u64..8,
        ) {
            let src = if src == base { (src + 1) & 15 } else { src };
            let rex = 0x48 | ((src >> 3) << 2) | (base >> 3);
            let modrm = ((src & 7) << 3) | (base & 7);
            let mut m = MockL1::new();
            let mut r = regs_at(0);
            r.gpr[usize::from(base)] = PAGE + 0x80;
            r.gpr[usize::from(src)] = val;
            let res = emulate(&[rex, 0x89, modrm], &mut r, PAGE + 0x80 + off, &mut m);
            if val & BAD_BIT != 0 {
                prop_assert_eq!(res, Err(EmulateError::Rejected(Errno::EINVAL)));
            } else {
                prop_assert_eq!(res, Ok(()));
                prop_assert_eq!(m.entries[16], val);
            }
        }
    }
}
