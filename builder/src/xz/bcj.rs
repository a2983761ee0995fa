//! The x86 BCJ ("branch/call/jump") filter, decoder direction (`.xz` filter ID 0x04).
//!
//! The encoder rewrote the 32-bit relative displacement of `E8` (call) and `E9` (jmp)
//! instructions into an absolute address so that repeated calls to one function compress
//! well; decoding subtracts the position again. Which `E8`/`E9` bytes were converted is
//! decided by a heuristic over the bytes the encoder saw (a bitmask of recent `E8`/`E9`
//! positions and whether the displacement's top byte is `00` or `FF`); the decoder must
//! reproduce it exactly, so this follows the format's reference behaviour step by step.
//!
//! The whole (LZMA2-decoded) block is filtered in one pass. The last four bytes are never
//! converted: an instruction starting there would extend past the end of the data.

/// Whether `b` can be the most significant byte of a converted displacement (a near branch
/// forwards or backwards).
fn is_msbyte(b: u8) -> bool {
    b == 0x00 || b == 0xFF
}

/// Undoes the x86 BCJ filter in place. `start` is the uncompressed position of `buf[0]`
/// (the filter's start offset property; 0 by default).
pub fn x86_decode(buf: &mut [u8], start: u32) {
    // Indexed by the mask of E8/E9 bytes among the three bytes before the current one.
    const ALLOWED: [bool; 8] = [true, true, true, false, true, false, false, false];
    const BIT_NUM: [u32; 8] = [0, 1, 2, 2, 3, 3, 3, 3];

    let Some(limit) = buf.len().checked_sub(4) else {
        return;
    };
    let mut prev_mask: u32 = 0;
    // Position of the previous E8/E9 byte; `None` before the first one (then the gap is
    // taken as "far away", which clears the mask).
    let mut prev_pos: Option<usize> = None;
    let mut i = 0usize;
    while i < limit {
        let Some(&op) = buf.get(i) else { break };
        if op & 0xFE != 0xE8 {
            i += 1;
            continue;
        }
        let gap = prev_pos.map_or(usize::MAX, |p| i - p);
        if gap > 3 {
            prev_mask = 0;
        } else {
            // gap is 1..=3 here.
            prev_mask = (prev_mask << (gap - 1)) & 7;
            if prev_mask != 0 {
                let idx = prev_mask as usize;
                let probe = buf.get(i + 4 - BIT_NUM[idx] as usize).copied().unwrap_or(0);
                if !ALLOWED[idx] || is_msbyte(probe) {
                    prev_pos = Some(i);
                    prev_mask = (prev_mask << 1) | 1;
                    i += 1;
                    continue;
                }
            }
        }
        prev_pos = Some(i);

        let Some(disp) = buf.get(i + 1..i + 5) else {
            break;
        };
        if is_msbyte(disp[3]) {
            let mut src = u32::from_le_bytes([disp[0], disp[1], disp[2], disp[3]]);
            // The position of the byte after the instruction, as the encoder computed it
            // (only the low 32 bits matter).
            let here = start.wrapping_add(i as u32).wrapping_add(5);
            let mut dest;
            loop {
                dest = src.wrapping_sub(here);
                if prev_mask == 0 {
                    break;
                }
                let j = BIT_NUM[prev_mask as usize] * 8;
                if !is_msbyte((dest >> (24 - j)) as u8) {
                    break;
                }
                src = dest ^ ((1u32 << (32 - j)) - 1);
            }
            // Sign-extend bit 24 into the top byte.
            dest &= 0x01FF_FFFF;
            dest |= 0u32.wrapping_sub(dest & 0x0100_0000);
            if let Some(d) = buf.get_mut(i + 1..i + 5) {
                d.copy_from_slice(&dest.to_le_bytes());
            }
            i += 5;
        } else {
            prev_mask = (prev_mask << 1) | 1;
            i += 1;
        }
    }
}
