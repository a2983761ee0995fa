//! Descriptor tables and control registers: the GDT with Xen's reserved selectors, the
//! TSS with IST stacks, the IDT, and the MSRs for `syscall` entry.
//!
//! Xen's GDT is 16 pages; the last two are the hypervisor's and page 14 holds the flat
//! selectors every PV guest uses (FLAT_RING3_CS64 0xe033, ...). Entries 0..7167 belong
//! to the guest (`set_gdt`, a later issue); until then they are empty.

use core::mem::size_of;

/// Hypervisor code selector (Xen's `__HYPERVISOR_CS`).
pub const HYPERVISOR_CS: u16 = 0xe008;
/// Hypervisor data/stack selector.
pub const HYPERVISOR_DS: u16 = 0xe010;
/// Selector of the TSS descriptor (Xen's `TSS_SELECTOR`).
pub const TSS_SELECTOR: u16 = 0xe040;

const GDT_ENTRIES: usize = 8192;

/// IST slots (1-based, as the IDT encodes them).
pub const IST_NMI: u8 = 1;
/// IST slot of #DF.
pub const IST_DF: u8 = 2;
/// IST slot of #MC.
pub const IST_MC: u8 = 3;

#[repr(C, packed(4))]
struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

#[repr(C, align(4096))]
struct Gdt([u64; GDT_ENTRIES]);

#[repr(C, align(4096))]
struct Idt([u64; 512]);

#[repr(C, align(16))]
struct Stack([u8; 16384]);

static mut GDT: Gdt = Gdt([0; GDT_ENTRIES]);
static mut IDT: Idt = Idt([0; 512]);
static mut TSS: Tss = Tss {
    reserved0: 0,
    rsp: [0; 3],
    reserved1: 0,
    ist: [0; 7],
    reserved2: 0,
    reserved3: 0,
    iomap_base: size_of::<Tss>() as u16,
};
static mut IST_STACKS: [Stack; 3] = [const { Stack([0; 16384]) }; 3];

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

unsafe extern "C" {
    /// 256 entry stubs of 16 bytes each (entry.S).
    static trap_stubs: [u8; 4096];
    /// `syscall` entry point (entry.S).
    fn syscall_entry();
    /// Top of the hypervisor stack used for every entry from a guest.
    #[link_name = "hv_stack_top"]
    static HV_STACK_TOP: u8;
}

/// Address of the hypervisor stack top (also the TSS's RSP0).
pub fn hv_stack_top() -> u64 {
    (&raw const HV_STACK_TOP) as u64
}

fn code_data(index: usize, desc: u64) {
    // SAFETY: called only during single-threaded boot, before the GDT is in use by
    // anything that could observe a torn entry.
    unsafe { GDT.0[index] = desc };
}

/// Virtual address of the hypervisor image's 16-page GDT.
pub fn static_gdt() -> u64 {
    (&raw const GDT) as u64
}

/// Builds and loads the GDT, TSS and IDT, and programs the `syscall` MSRs.
pub fn init() {
    code_data(usize::from(HYPERVISOR_CS >> 3), 0x00af_9a00_0000_ffff);
    code_data(usize::from(HYPERVISOR_DS >> 3), 0x00cf_9200_0000_ffff);
    code_data(
        usize::from(xen_abi::xen::FLAT_RING3_CS32 >> 3),
        0x00cf_fa00_0000_ffff,
    );
    code_data(
        usize::from(xen_abi::xen::FLAT_RING3_DS32 >> 3),
        0x00cf_f200_0000_ffff,
    );
    code_data(
        usize::from(xen_abi::xen::FLAT_RING3_CS64 >> 3),
        0x00af_fa00_0000_ffff,
    );

    // SAFETY: single-threaded boot; the statics are only touched here and by the CPU.
    unsafe {
        let tss = &raw mut TSS;
        (*tss).rsp[0] = hv_stack_top();
        let ist = &raw mut IST_STACKS;
        for i in 0..3 {
            (*tss).ist[i] = (&raw const (*ist)[i]) as u64 + 16384;
        }
        let base = tss as u64;
        let limit = (size_of::<Tss>() - 1) as u64;
        let low = (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (0x89u64 << 40)
            | (((limit >> 16) & 0xf) << 48)
            | (((base >> 24) & 0xff) << 56);
        code_data(usize::from(TSS_SELECTOR >> 3), low);
        code_data(usize::from(TSS_SELECTOR >> 3) + 1, base >> 32);

        let gdtr = DescriptorPointer {
            limit: (GDT_ENTRIES * 8 - 1) as u16,
            base: (&raw const GDT) as u64,
        };
        core::arch::asm!(
            "lgdt [{gdtr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ss, {ds:x}",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "ltr {tss:x}",
            gdtr = in(reg) &gdtr,
            cs = in(reg) u64::from(HYPERVISOR_CS),
            ds = in(reg) u64::from(HYPERVISOR_DS),
            tss = in(reg) TSS_SELECTOR,
            tmp = out(reg) _,
        );

        let stubs = (&raw const trap_stubs) as u64;
        let idt = &raw mut IDT;
        for v in 0..256usize {
            let handler = stubs + 16 * v as u64;
            // int3, into and int $0x80 may be raised by the guest directly (DPL 3);
            // every other vector is DPL 0, so a guest's `int $n` raises #GP, which the
            // hypervisor turns into a software interrupt of the guest's own trap table.
            let dpl: u64 = if v == 3 || v == 4 || v == 0x80 { 3 } else { 0 };
            let ist: u64 = match v {
                2 => u64::from(IST_NMI),
                8 => u64::from(IST_DF),
                18 => u64::from(IST_MC),
                _ => 0,
            };
            let low = (handler & 0xffff)
                | (u64::from(HYPERVISOR_CS) << 16)
                | (ist << 32)
                | ((0x8e | (dpl << 5)) << 40)
                | (((handler >> 16) & 0xffff) << 48);
            (*idt).0[2 * v] = low;
            (*idt).0[2 * v + 1] = handler >> 32;
        }
        let idtr = DescriptorPointer {
            limit: (256 * 16 - 1) as u16,
            base: idt as u64,
        };
        core::arch::asm!("lidt [{}]", in(reg) &idtr);

        // syscall: CS/SS from STAR[47:32]; sysret would use STAR[63:48] (0xe023 → 0xe033/0xe02b).
        wrmsr(
            MSR_STAR,
            (u64::from(xen_abi::xen::FLAT_RING3_CS32) << 48) | (u64::from(HYPERVISOR_CS) << 32),
        );
        wrmsr(MSR_LSTAR, syscall_entry as *const () as u64);
        // Mask IF, TF, DF, NT, AC on entry: the hypervisor runs with interrupts off.
        wrmsr(
            MSR_FMASK,
            (1 << 9) | (1 << 8) | (1 << 10) | (1 << 14) | (1 << 18),
        );
        wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE | EFER_NXE);
    }
}

/// IA32_EFER.
pub const MSR_EFER: u32 = 0xc000_0080;
const EFER_SCE: u64 = 1 << 0;
const EFER_NXE: u64 = 1 << 11;
/// STAR: syscall/sysret selectors.
pub const MSR_STAR: u32 = 0xc000_0081;
/// LSTAR: 64-bit syscall entry.
pub const MSR_LSTAR: u32 = 0xc000_0082;
/// FMASK: RFLAGS bits cleared on syscall.
pub const MSR_FMASK: u32 = 0xc000_0084;
/// FS base.
pub const MSR_FS_BASE: u32 = 0xc000_0100;
/// Active GS base.
pub const MSR_GS_BASE: u32 = 0xc000_0101;
/// GS base swapped in by `swapgs`.
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// Reads an MSR.
///
/// # Safety
/// `msr` must exist on this CPU.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR.
///
/// # Safety
/// `msr` must exist and the value must not break the hypervisor's invariants.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the write is valid and harmless.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
    };
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc has no side effects.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Reads CR2 (the faulting address of the last #PF).
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) v, options(nomem, nostack)) };
    v
}

/// Reads CR3.
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) v, options(nomem, nostack)) };
    v
}

/// Loads CR3.
///
/// # Safety
/// `value` must point at a valid L4 that maps the hypervisor (slots 256..=271).
pub unsafe fn write_cr3(value: u64) {
    // SAFETY: the caller guarantees the new tables map the hypervisor.
    unsafe { core::arch::asm!("mov cr3, {}", in(reg) value, options(nostack)) };
}

/// Invalidates the TLB entry of one virtual address.
pub fn invlpg(va: u64) {
    // SAFETY: invlpg only drops a cached translation.
    unsafe { core::arch::asm!("invlpg [{}]", in(reg) va, options(nostack)) };
}

/// Sets or clears CR0.TS (the guest's virtual TS is mirrored into the real one).
pub fn set_cr0_ts(set: bool) {
    // SAFETY: TS only controls #NM on FPU use; the hypervisor does not use the FPU.
    unsafe {
        if set {
            core::arch::asm!("mov {t}, cr0", "or {t}, 8", "mov cr0, {t}", t = out(reg) _, options(nostack));
        } else {
            core::arch::asm!("clts", options(nostack));
        }
    }
}

/// `cpuid`.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Halts until the next interrupt, with interrupts enabled only while halted.
pub fn idle_once() {
    // SAFETY: sti;hlt atomically waits for an interrupt; cli restores the hypervisor's
    // interrupts-off invariant before any other code runs.
    unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}
