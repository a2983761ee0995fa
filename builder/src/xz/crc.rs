//! The two integrity checks an `.xz` file uses: CRC32 (IEEE 802.3, reflected polynomial
//! `0xEDB88320`, for headers, the index and check type 1) and CRC64 (ECMA-182, reflected
//! polynomial `0xC96C5795D7870F42`, check type 4). Byte-at-a-time tables built at compile
//! time: a kernel is decompressed once per boot, so simplicity beats slicing-by-8.

const fn crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

const fn crc64_table() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u64;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xC96C_5795_D787_0F42
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC32_TABLE: [u32; 256] = crc32_table();
static CRC64_TABLE: [u64; 256] = crc64_table();

/// CRC32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC32_TABLE[usize::from((c as u8) ^ b)] ^ (c >> 8);
    }
    !c
}

/// CRC64 of `data`.
pub fn crc64(data: &[u8]) -> u64 {
    let mut c = !0u64;
    for &b in data {
        c = CRC64_TABLE[usize::from((c as u8) ^ b)] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values() {
        // The standard "123456789" check values of both CRCs.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc64(b"123456789"), 0x995D_C9BB_DF19_39FA);
        assert_eq!(crc32(b""), 0);
    }
}
