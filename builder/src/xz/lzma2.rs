//! LZMA2 (`.xz` filter ID 0x21): a sequence of chunks, each either stored or LZMA
//! compressed, over one shared dictionary; and the LZMA decoder itself (range decoder,
//! literal/match/rep coding with its 12-state machine).
//!
//! The dictionary is the output itself ([`Sink`]): the whole decompressed block stays in
//! memory, so a match is a copy from earlier output. The LZMA2 dictionary size property
//! still bounds match distances, as a streaming decoder's window would.
//!
//! Every hostile case is an error: chunks must not overrun their declared sizes (a match
//! may not cross a chunk end), the range decoder must consume each chunk's compressed bytes
//! exactly and end with `code == 0`, distances must point into the data since the last
//! dictionary reset, and the end-of-payload marker is not allowed (LZMA2 forbids it).

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use super::sink::Sink;
use super::XzError;

/// Probabilities are 11-bit fixed point; this is 0.5.
const PROB_INIT: u16 = 1 << 10;
const PROB_BITS: u32 = 11;
/// Adaptation speed of the probabilities.
const MOVE_BITS: u32 = 5;
/// The range decoder renormalises when the range drops below 2^24.
const TOP: u32 = 1 << 24;

const STATES: usize = 12;
/// States 0..=6 follow a literal, 7..=11 a match or rep.
const LIT_STATES: usize = 7;
const POS_STATES_MAX: usize = 1 << 4;
const MATCH_LEN_MIN: usize = 2;
/// Distance slots below this code the distance's low bits with per-slot probabilities.
const DIST_MODEL_END: u32 = 14;
const FULL_DISTANCES: usize = 128;
const ALIGN_BITS: u32 = 4;
/// `lc + lp` is at most 4 in LZMA2, so at most 16 literal coders of 0x300 probabilities.
const LITERAL_CODER_SIZE: usize = 0x300;
const LITERAL_CODERS_MAX: usize = 1 << 4;

/// The range decoder over one LZMA chunk's compressed bytes.
struct RangeDecoder<'a> {
    input: &'a [u8],
    pos: usize,
    range: u32,
    code: u32,
    /// Set when a read ran past the chunk: the chunk is corrupt (checked after decoding).
    overrun: bool,
}

impl<'a> RangeDecoder<'a> {
    /// Reads the 5 initialisation bytes (the first is always 0).
    fn new(input: &'a [u8]) -> Result<Self, XzError> {
        let init = input.get(..5).ok_or(XzError::CorruptLzma)?;
        if init[0] != 0 {
            return Err(XzError::CorruptLzma);
        }
        let code = u32::from_be_bytes([init[1], init[2], init[3], init[4]]);
        Ok(RangeDecoder {
            input,
            pos: 5,
            range: u32::MAX,
            code,
            overrun: false,
        })
    }

    #[inline(always)]
    fn next_byte(&mut self) -> u8 {
        match self.input.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => {
                self.overrun = true;
                0
            }
        }
    }

    #[inline(always)]
    fn normalize(&mut self) {
        if self.range < TOP {
            self.range <<= 8;
            self.code = (self.code << 8) | u32::from(self.next_byte());
        }
    }

    /// Decodes one bit with the adaptive probability `p`.
    #[inline(always)]
    fn bit(&mut self, p: &mut u16) -> u32 {
        self.normalize();
        let bound = (self.range >> PROB_BITS) * u32::from(*p);
        if self.code < bound {
            self.range = bound;
            *p += ((1 << PROB_BITS) - *p) >> MOVE_BITS;
            0
        } else {
            self.range -= bound;
            self.code -= bound;
            *p -= *p >> MOVE_BITS;
            1
        }
    }

    /// Decodes `n` bits, most significant first, with a bit tree of `2^n` probabilities.
    #[inline(always)]
    fn tree(&mut self, probs: &mut [u16], n: u32) -> u32 {
        let mut m = 1usize;
        for _ in 0..n {
            let bit = self.bit(&mut probs[m]);
            m = (m << 1) | bit as usize;
        }
        (m - (1 << n)) as u32
    }

    /// Decodes `n` bits, least significant first (a "reverse" bit tree).
    #[inline(always)]
    fn reverse_tree(&mut self, probs: &mut [u16], n: u32) -> u32 {
        let mut m = 1usize;
        let mut sym = 0u32;
        for i in 0..n {
            let bit = self.bit(&mut probs[m]);
            m = (m << 1) | bit as usize;
            sym |= bit << i;
        }
        sym
    }

    /// Decodes `n` bits with fixed probability 0.5.
    fn direct(&mut self, n: u32) -> u32 {
        let mut v = 0u32;
        for _ in 0..n {
            self.normalize();
            self.range >>= 1;
            let bit = u32::from(self.code >= self.range);
            if bit != 0 {
                self.code -= self.range;
            }
            v = (v << 1) | bit;
        }
        v
    }

    /// Whether the chunk ended cleanly: every byte consumed, none missing, code 0.
    fn finished(&self) -> bool {
        !self.overrun && self.pos == self.input.len() && self.code == 0
    }
}

/// Match and rep length coder: 2..=273 in three ranges.
struct LenCoder {
    choice: u16,
    choice2: u16,
    low: [[u16; 8]; POS_STATES_MAX],
    mid: [[u16; 8]; POS_STATES_MAX],
    high: [u16; 256],
}

impl LenCoder {
    const INIT: LenCoder = LenCoder {
        choice: PROB_INIT,
        choice2: PROB_INIT,
        low: [[PROB_INIT; 8]; POS_STATES_MAX],
        mid: [[PROB_INIT; 8]; POS_STATES_MAX],
        high: [PROB_INIT; 256],
    };

    fn decode(&mut self, rc: &mut RangeDecoder<'_>, pos_state: usize) -> usize {
        if rc.bit(&mut self.choice) == 0 {
            MATCH_LEN_MIN + rc.tree(&mut self.low[pos_state], 3) as usize
        } else if rc.bit(&mut self.choice2) == 0 {
            MATCH_LEN_MIN + 8 + rc.tree(&mut self.mid[pos_state], 3) as usize
        } else {
            MATCH_LEN_MIN + 16 + rc.tree(&mut self.high, 8) as usize
        }
    }
}

/// All adaptive probabilities of the LZMA model.
struct Probs {
    is_match: [[u16; POS_STATES_MAX]; STATES],
    is_rep: [u16; STATES],
    is_rep0: [u16; STATES],
    is_rep1: [u16; STATES],
    is_rep2: [u16; STATES],
    is_rep0_long: [[u16; POS_STATES_MAX]; STATES],
    /// Indexed by min(len - 2, 3).
    dist_slot: [[u16; 64]; 4],
    /// Reverse bit trees of slots 4..14, laid out as in the reference (base `dist - slot`,
    /// tree index from 1).
    dist_special: [u16; 1 + FULL_DISTANCES - DIST_MODEL_END as usize],
    dist_align: [u16; 1 << ALIGN_BITS],
    match_len: LenCoder,
    rep_len: LenCoder,
}

impl Probs {
    const INIT: Probs = Probs {
        is_match: [[PROB_INIT; POS_STATES_MAX]; STATES],
        is_rep: [PROB_INIT; STATES],
        is_rep0: [PROB_INIT; STATES],
        is_rep1: [PROB_INIT; STATES],
        is_rep2: [PROB_INIT; STATES],
        is_rep0_long: [[PROB_INIT; POS_STATES_MAX]; STATES],
        dist_slot: [[PROB_INIT; 64]; 4],
        dist_special: [PROB_INIT; 1 + FULL_DISTANCES - DIST_MODEL_END as usize],
        dist_align: [PROB_INIT; 1 << ALIGN_BITS],
        match_len: LenCoder::INIT,
        rep_len: LenCoder::INIT,
    };
}

/// The LZMA decoder state carried across the chunks of one LZMA2 stream.
struct Lzma {
    /// Boxed (~4 KiB) to keep it off small (hypervisor) stacks.
    probs: Box<Probs>,
    /// The literal coders (24 KiB), allocated once for the largest `lc + lp`.
    literal: Vec<u16>,
    state: usize,
    /// Distances minus one of the last four matches.
    reps: [u32; 4],
    lc: u32,
    lp_mask: usize,
    pb_mask: usize,
}

impl Lzma {
    fn new() -> Self {
        Lzma {
            probs: Box::new(Probs::INIT),
            literal: vec![PROB_INIT; LITERAL_CODER_SIZE * LITERAL_CODERS_MAX],
            state: 0,
            reps: [0; 4],
            lc: 0,
            lp_mask: 0,
            pb_mask: 0,
        }
    }

    /// Sets lc/lp/pb from the LZMA2 properties byte `(pb * 5 + lp) * 9 + lc`.
    fn set_props(&mut self, props: u8) -> Result<(), XzError> {
        if props >= 9 * 5 * 5 {
            return Err(XzError::CorruptLzma2);
        }
        let lc = u32::from(props % 9);
        let lp = u32::from(props / 9 % 5);
        let pb = u32::from(props / 45);
        if lc + lp > 4 {
            return Err(XzError::CorruptLzma2);
        }
        self.lc = lc;
        self.lp_mask = (1 << lp) - 1;
        self.pb_mask = (1 << pb) - 1;
        Ok(())
    }

    fn reset_state(&mut self) {
        *self.probs = Probs::INIT;
        self.literal.fill(PROB_INIT);
        self.state = 0;
        self.reps = [0; 4];
    }

    /// Decodes one LZMA chunk: exactly `unc` bytes from `rc`, appended to `out`, whose
    /// dictionary began at `dict_start`, with window `dict_size`.
    fn decode_chunk<S: Sink>(
        &mut self,
        rc: &mut RangeDecoder<'_>,
        out: &mut S,
        dict_start: usize,
        dict_size: usize,
        unc: usize,
    ) -> Result<(), XzError> {
        let end = out.len() + unc;
        let p = &mut *self.probs;
        let mut state = self.state;
        let mut reps = self.reps;
        while out.len() < end {
            if rc.overrun {
                return Err(XzError::CorruptLzma);
            }
            let pos = out.len() - dict_start;
            let pos_state = pos & self.pb_mask;

            if rc.bit(&mut p.is_match[state][pos_state]) == 0 {
                // Literal, coded with the previous byte's top lc bits and pos's low lp bits.
                let prev = if pos > 0 { out.last() } else { 0 };
                let lit_state =
                    ((pos & self.lp_mask) << self.lc) + (usize::from(prev) >> (8 - self.lc));
                let base = LITERAL_CODER_SIZE * lit_state;
                let probs = &mut self.literal[base..base + LITERAL_CODER_SIZE];
                let mut sym = 1usize;
                if state >= LIT_STATES {
                    // After a match the byte at rep0 predicts this one, bit by bit, until
                    // the first bit that differs.
                    let mut match_byte = out.back(reps[0] as usize).ok_or(XzError::CorruptLzma)?;
                    while sym < 0x100 {
                        let match_bit = usize::from(match_byte >> 7);
                        match_byte <<= 1;
                        let bit = rc.bit(&mut probs[((1 + match_bit) << 8) + sym]) as usize;
                        sym = (sym << 1) | bit;
                        if match_bit != bit {
                            break;
                        }
                    }
                }
                while sym < 0x100 {
                    sym = (sym << 1) | rc.bit(&mut probs[sym]) as usize;
                }
                out.push((sym & 0xFF) as u8);
                state = match state {
                    0..=3 => 0,
                    4..=9 => state - 3,
                    _ => state - 6,
                };
                continue;
            }

            let len;
            if rc.bit(&mut p.is_rep[state]) == 0 {
                // A new match: length, then distance (slot, then extra bits).
                len = p.match_len.decode(rc, pos_state);
                state = if state < LIT_STATES { 7 } else { 10 };
                let len_state = (len - MATCH_LEN_MIN).min(3);
                let slot = rc.tree(&mut p.dist_slot[len_state], 6);
                let dist = if slot < 4 {
                    slot
                } else {
                    let direct = (slot >> 1) - 1;
                    let base = (2 | (slot & 1)) << direct;
                    if slot < DIST_MODEL_END {
                        let off = (base - slot) as usize;
                        base + rc.reverse_tree(&mut p.dist_special[off..], direct)
                    } else {
                        let high = rc.direct(direct - ALIGN_BITS) << ALIGN_BITS;
                        // base + high + align stays within u32 (slot 63: 0xC000_0000 plus
                        // at most 2^30 - 1).
                        base.wrapping_add(high)
                            .wrapping_add(rc.reverse_tree(&mut p.dist_align, ALIGN_BITS))
                    }
                };
                if dist == u32::MAX {
                    // The end-of-payload marker: LZMA2 never uses it.
                    return Err(XzError::CorruptLzma);
                }
                reps = [dist, reps[0], reps[1], reps[2]];
            } else {
                if rc.bit(&mut p.is_rep0[state]) == 0 {
                    if rc.bit(&mut p.is_rep0_long[state][pos_state]) == 0 {
                        // Short rep: one byte from rep0.
                        state = if state < LIT_STATES { 9 } else { 11 };
                        copy_match(out, dict_start, dict_size, reps[0], 1)?;
                        continue;
                    }
                } else {
                    let dist;
                    if rc.bit(&mut p.is_rep1[state]) == 0 {
                        dist = reps[1];
                    } else {
                        if rc.bit(&mut p.is_rep2[state]) == 0 {
                            dist = reps[2];
                        } else {
                            dist = reps[3];
                            reps[3] = reps[2];
                        }
                        reps[2] = reps[1];
                    }
                    reps[1] = reps[0];
                    reps[0] = dist;
                }
                len = p.rep_len.decode(rc, pos_state);
                state = if state < LIT_STATES { 8 } else { 11 };
            }
            // A match may not run past the chunk's declared size.
            if len > end - out.len() {
                return Err(XzError::CorruptLzma);
            }
            copy_match(out, dict_start, dict_size, reps[0], len)?;
        }
        self.state = state;
        self.reps = reps;
        Ok(())
    }
}

/// Appends `len` bytes copied from `dist + 1` bytes back, if that lies inside the window.
#[inline(always)]
fn copy_match<S: Sink>(
    out: &mut S,
    dict_start: usize,
    dict_size: usize,
    dist: u32,
    len: usize,
) -> Result<(), XzError> {
    let dist = dist as usize;
    let filled = out.len() - dict_start;
    if dist >= filled || dist >= dict_size {
        return Err(XzError::CorruptLzma);
    }
    out.repeat(dist + 1, len);
    Ok(())
}

/// Decodes the dictionary size property of the LZMA2 filter (`2^n` or `3 * 2^n` bytes,
/// 4 KiB to 3 GiB; 40 means "4 GiB - 1").
pub fn dict_size(prop: u8) -> Result<u32, XzError> {
    match prop {
        0..=39 => Ok((2 | u32::from(prop & 1)) << (prop / 2 + 11)),
        40 => Ok(u32::MAX),
        _ => Err(XzError::BadFilterProperties),
    }
}

/// Decodes one LZMA2 stream from the start of `input`, appending to `out`. Returns how many
/// input bytes it used (through the end-of-stream control byte 0x00).
pub fn decode<S: Sink>(input: &[u8], out: &mut S, dict_size: u32) -> Result<usize, XzError> {
    let dict_size = usize::try_from(dict_size).unwrap_or(usize::MAX);
    let mut lzma: Option<Lzma> = None;
    let mut pos = 0usize;
    let mut dict_start = out.len();
    let mut need_dict_reset = true;
    let mut need_props = true;
    loop {
        let control = *input.get(pos).ok_or(XzError::Truncated)?;
        pos += 1;
        if control == 0x00 {
            return Ok(pos);
        }
        if control >= 0xE0 || control == 0x01 {
            need_props = true;
            need_dict_reset = false;
            dict_start = out.len();
        } else if need_dict_reset {
            return Err(XzError::CorruptLzma2);
        }

        if control < 0x80 {
            // Stored chunk (0x01 with, 0x02 without dictionary reset).
            if control > 0x02 {
                return Err(XzError::CorruptLzma2);
            }
            let size = be16(input, pos)? + 1;
            pos += 2;
            let data = input.get(pos..pos + size).ok_or(XzError::Truncated)?;
            out.reserve(size)?;
            out.extend(data);
            pos += size;
            continue;
        }

        let unc = (usize::from(control & 0x1F) << 16) + be16(input, pos)? + 1;
        let comp = be16(input, pos + 2)? + 1;
        pos += 4;
        let lz = lzma.get_or_insert_with(Lzma::new);
        if control >= 0xC0 {
            let props = *input.get(pos).ok_or(XzError::Truncated)?;
            pos += 1;
            lz.set_props(props)?;
            need_props = false;
            lz.reset_state();
        } else if need_props {
            return Err(XzError::CorruptLzma2);
        } else if control >= 0xA0 {
            lz.reset_state();
        }
        let data = input.get(pos..pos + comp).ok_or(XzError::Truncated)?;
        let mut rc = RangeDecoder::new(data)?;
        out.reserve(unc)?;
        lz.decode_chunk(&mut rc, out, dict_start, dict_size, unc)?;
        rc.normalize();
        if !rc.finished() {
            return Err(XzError::CorruptLzma);
        }
        pos += comp;
    }
}

fn be16(input: &[u8], pos: usize) -> Result<usize, XzError> {
    let b = input.get(pos..pos + 2).ok_or(XzError::Truncated)?;
    Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
}
