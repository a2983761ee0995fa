//! Why the builder refused an image or a layout: one [`BuildError`] variant per rejection.
//!
//! The names follow the checks in Xen's libelf (`elf_xen_note_check`,
//! `elf_xen_addr_calc_check`, `elf_xen_parse_features`) and libxc (`xc_dom_build_image`);
//! the [`Display`](core::fmt::Display) text says what is wrong in words a user can act on.

use core::fmt;

use crate::bzimage::Compression;

/// A feature name copied out of a kernel's `FEATURES` note (so [`BuildError`] stays `Copy`
/// and does not borrow the image). Names longer than [`FeatureName::MAX_LEN`] bytes are
/// truncated (and shown with a trailing `…`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FeatureName {
    buf: [u8; FeatureName::MAX_LEN],
    len: u8,
    truncated: bool,
}

impl FeatureName {
    /// Longest name kept in full.
    pub const MAX_LEN: usize = 32;

    /// Copies (a prefix of) `name`.
    pub fn new(name: &[u8]) -> Self {
        let mut buf = [0u8; Self::MAX_LEN];
        let len = name.len().min(Self::MAX_LEN);
        for (dst, src) in buf.iter_mut().zip(name.iter()) {
            *dst = *src;
        }
        Self {
            buf,
            // len <= MAX_LEN = 32, fits in u8.
            len: len as u8,
            truncated: name.len() > Self::MAX_LEN,
        }
    }

    /// The stored bytes (possibly truncated).
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl fmt::Display for FeatureName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.as_bytes() {
            let c = if b.is_ascii_graphic() {
                char::from(b)
            } else {
                '?'
            };
            write!(f, "{c}")?;
        }
        if self.truncated {
            write!(f, "…")?;
        }
        Ok(())
    }
}

impl fmt::Debug for FeatureName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FeatureName(\"{self}\")")
    }
}

/// Every way building a domain can be refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    // ----- ELF container -----
    /// Neither an ELF file (`\x7fELF`) nor a bzImage (`HdrS` at 0x202).
    NotElf,
    /// The file starts like an ELF but is shorter than the 64-byte ELF64 header.
    TruncatedElfHeader,
    /// ELF class is not ELFCLASS64.
    NotElf64,
    /// ELF data encoding is not little-endian.
    NotLittleEndian,
    /// ELF identification or header version is not EV_CURRENT (1).
    BadElfVersion,
    /// `e_type` is not ET_EXEC.
    NotExecutable {
        /// The `e_type` found.
        e_type: u16,
    },
    /// `e_machine` is not EM_X86_64.
    WrongMachine {
        /// The `e_machine` found.
        machine: u16,
    },
    /// `e_phentsize` is not 56 although there are program headers.
    BadProgramHeaderSize {
        /// The `e_phentsize` found.
        size: u16,
    },
    /// The program header table does not lie inside the file.
    ProgramHeadersOutOfFile,
    /// `e_shentsize` is not 64 although there are section headers.
    BadSectionHeaderSize {
        /// The `e_shentsize` found.
        size: u16,
    },
    /// The section header table does not lie inside the file.
    SectionHeadersOutOfFile,
    /// No PT_LOAD segment (with R, W or X permission) to load.
    NoLoadableSegments,
    /// A PT_LOAD segment's file bytes are not inside the file.
    SegmentOutOfFile {
        /// Program header index.
        index: u16,
    },
    /// A PT_LOAD segment has `p_filesz > p_memsz`.
    SegmentFileSizeExceedsMemSize {
        /// Program header index.
        index: u16,
    },
    /// `p_paddr + p_memsz` of a PT_LOAD segment overflows.
    SegmentAddressOverflow {
        /// Program header index.
        index: u16,
    },
    /// A PT_NOTE segment or SHT_NOTE section is not inside the file.
    NotesOutOfFile {
        /// Program header or section index.
        index: u16,
    },
    /// A note's header, name or descriptor runs past the end of its note area.
    MalformedNote,
    /// A Xen note's descriptor has a size its type does not allow (numeric notes: 4 or 8
    /// bytes).
    BadNoteSize {
        /// `XEN_ELFNOTE_*` type.
        note: u32,
        /// Descriptor size found.
        size: u32,
    },

    // ----- Xen notes: libelf's checks -----
    /// No `"Xen"` ELF note at all: not a Xen PV kernel.
    NotXenImage,
    /// XEN_VERSION note missing or not starting with `"xen-3.0"`.
    BadXenVersion,
    /// Neither LOADER starts with `"generic"` nor GUEST_OS with `"linux"`.
    UnsupportedLoader,
    /// PADDR_OFFSET given without VIRT_BASE.
    PaddrOffsetWithoutVirtBase,
    /// The image's virtual range ends before it starts (address arithmetic wrapped).
    ImageBoundsInvalid,
    /// The entry point is outside the image.
    EntryOutsideImage {
        /// The entry VA.
        entry: u64,
    },
    /// VIRT_BASE lies above the start of the image.
    VirtBaseAboveImage,
    /// INIT_P2M points inside the image.
    InitP2mInsideImage {
        /// The INIT_P2M VA.
        va: u64,
    },
    /// VIRT_BASE or the image start is not page aligned.
    MisalignedImage,
    /// The HYPERCALL_PAGE note points outside the image.
    HypercallPageOutsideImage {
        /// The hypercall page VA.
        va: u64,
    },
    /// The FEATURES note requires (`!`) a feature name Xen does not know.
    UnknownFeature {
        /// The name as written in the note.
        name: FeatureName,
    },
    /// The FEATURES note requires (`!`) a feature the hypervisor does not offer.
    UnsupportedFeature {
        /// The feature's name.
        name: FeatureName,
    },

    // ----- bzImage -----
    /// bzImage boot protocol older than 2.08 (no payload fields).
    BzImageTooOld {
        /// Boot protocol version found.
        version: u16,
    },
    /// The bzImage payload does not lie inside the file.
    BzImagePayloadOutOfFile,
    /// The bzImage payload is compressed: xz through [`crate::bzimage::unpack_kernel`]
    /// first; other compressions are not supported.
    CompressedPayload {
        /// The compression recognised from the payload's magic bytes.
        kind: Compression,
    },
    /// The bzImage's xz payload could not be decompressed.
    Xz(crate::xz::XzError),

    // ----- layout -----
    /// The domain has fewer pages than the layout needs.
    NotEnoughMemory {
        /// Pages the layout needs.
        needed: u64,
        /// Pages the domain has.
        available: u64,
    },
    /// A layout address or size computation overflowed.
    AddressOverflow,
    /// A mapping would use a non-canonical virtual address.
    NonCanonicalAddress {
        /// First offending VA.
        va: u64,
    },
    /// A mapping would use the hypervisor's reserved range (L4 slots 256..=271).
    InHypervisorArea {
        /// First offending VA.
        va: u64,
    },
    /// The INIT_P2M mapping would overlap the initial mapping.
    OverlappingMappings,

    // ----- build -----
    /// The [`Layout`](crate::Layout) passed to `build` was not planned for this image.
    LayoutMismatch,
    /// The ramdisk passed to `build` is not as long as the one planned for.
    RamdiskLengthMismatch {
        /// Length given to `plan`.
        planned: u64,
        /// Length given to `build`.
        given: u64,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use BuildError::*;
        match *self {
            NotElf => write!(f, "kernel is neither an ELF file nor a bzImage"),
            TruncatedElfHeader => write!(f, "kernel ELF header is truncated"),
            NotElf64 => write!(f, "kernel is not a 64-bit ELF file"),
            NotLittleEndian => write!(f, "kernel ELF is not little-endian"),
            BadElfVersion => write!(f, "kernel ELF has an unknown ELF version"),
            NotExecutable { e_type } => {
                write!(f, "kernel ELF is not an executable (e_type {e_type})")
            }
            WrongMachine { machine } => {
                write!(f, "kernel ELF is not for x86_64 (e_machine {machine})")
            }
            BadProgramHeaderSize { size } => {
                write!(f, "kernel ELF has program headers of {size} bytes, not 56")
            }
            ProgramHeadersOutOfFile => write!(f, "kernel ELF program headers are truncated"),
            BadSectionHeaderSize { size } => {
                write!(f, "kernel ELF has section headers of {size} bytes, not 64")
            }
            SectionHeadersOutOfFile => write!(f, "kernel ELF section headers are truncated"),
            NoLoadableSegments => write!(f, "kernel ELF has no loadable segment"),
            SegmentOutOfFile { index } => {
                write!(
                    f,
                    "kernel ELF segment {index} extends past the end of the file"
                )
            }
            SegmentFileSizeExceedsMemSize { index } => write!(
                f,
                "kernel ELF segment {index} has more file bytes than memory bytes"
            ),
            SegmentAddressOverflow { index } => {
                write!(
                    f,
                    "kernel ELF segment {index} wraps around the address space"
                )
            }
            NotesOutOfFile { index } => {
                write!(
                    f,
                    "kernel ELF note area {index} extends past the end of the file"
                )
            }
            MalformedNote => write!(f, "kernel ELF has a truncated or malformed note"),
            BadNoteSize { note, size } => {
                write!(f, "Xen ELF note {note} has an invalid size of {size} bytes")
            }
            NotXenImage => write!(f, "not a Xen PV kernel: no Xen ELF notes"),
            BadXenVersion => write!(
                f,
                "kernel is not built for the Xen 3.0 interface (XEN_VERSION note)"
            ),
            UnsupportedLoader => write!(
                f,
                "kernel is neither built for the generic loader (LOADER) nor Linux (GUEST_OS)"
            ),
            PaddrOffsetWithoutVirtBase => {
                write!(f, "kernel has a PADDR_OFFSET note but no VIRT_BASE note")
            }
            ImageBoundsInvalid => write!(f, "kernel image address range is invalid"),
            EntryOutsideImage { entry } => {
                write!(f, "kernel entry point {entry:#x} is outside the image")
            }
            VirtBaseAboveImage => write!(f, "kernel VIRT_BASE is above the image start"),
            InitP2mInsideImage { va } => {
                write!(f, "kernel INIT_P2M address {va:#x} is inside the image")
            }
            MisalignedImage => write!(f, "kernel VIRT_BASE or image start is not page aligned"),
            HypercallPageOutsideImage { va } => {
                write!(f, "kernel hypercall page {va:#x} is outside the image")
            }
            UnknownFeature { name } => {
                write!(f, "kernel requires unknown feature {name}")
            }
            UnsupportedFeature { name } => write!(
                f,
                "kernel requires feature {name} which rxen does not support"
            ),
            BzImageTooOld { version } => write!(
                f,
                "bzImage boot protocol {}.{:02} is older than 2.08",
                version >> 8,
                version & 0xff
            ),
            BzImagePayloadOutOfFile => {
                write!(f, "bzImage payload extends past the end of the file")
            }
            CompressedPayload { kind } => write!(
                f,
                "bzImage payload is {kind}-compressed; decompress the kernel (vmlinux) first"
            ),
            Xz(e) => write!(f, "bzImage xz payload: {e}"),
            NotEnoughMemory { needed, available } => write!(
                f,
                "domain needs at least {needed} pages for its initial layout but has {available}"
            ),
            AddressOverflow => write!(f, "initial layout does not fit in the address space"),
            NonCanonicalAddress { va } => {
                write!(f, "initial layout would map non-canonical address {va:#x}")
            }
            InHypervisorArea { va } => write!(
                f,
                "initial layout would map {va:#x}, inside the hypervisor's reserved range"
            ),
            OverlappingMappings => {
                write!(f, "the INIT_P2M mapping would overlap the initial mapping")
            }
            LayoutMismatch => write!(f, "layout was planned for a different kernel image"),
            RamdiskLengthMismatch { planned, given } => write!(
                f,
                "ramdisk is {given} bytes but the layout was planned for {planned}"
            ),
        }
    }
}

impl From<BuildError> for xen_abi::Errno {
    /// Errno for toolstack interfaces: memory shortfalls are ENOMEM, everything else is a
    /// bad image or argument (EINVAL), as in libxc.
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::NotEnoughMemory { .. } => xen_abi::Errno::ENOMEM,
            BuildError::Xz(crate::xz::XzError::OutOfMemory) => xen_abi::Errno::ENOMEM,
            _ => xen_abi::Errno::EINVAL,
        }
    }
}
