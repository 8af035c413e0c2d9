//! The size an ext4 image's filesystem has, from its superblock (1024 bytes in: block count
//! low/high words and the block size), to tell whether it must grow to fill its image.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Bytes the filesystem of `image` spans, if its superblock can be read.
fn fs_bytes(image: &Path) -> Option<u64> {
    let mut sb = [0u8; 1024];
    let mut f = File::open(image).ok()?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(1024)).ok()?;
    f.read_exact(&mut sb).ok()?;
    parse(&sb)
}

/// Block count × block size of a superblock; `None` when it is not ext2/3/4's.
fn parse(sb: &[u8; 1024]) -> Option<u64> {
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return None;
    }
    let incompat = u32_at(0x60);
    let high = if incompat & 0x80 != 0 {
        u64::from(u32_at(0x150))
    } else {
        0
    };
    let blocks = u64::from(u32_at(0x04)) | (high << 32);
    let block_size = 1024u64 << u32_at(0x18).min(6);
    Some(blocks * block_size)
}

/// Whether the image is at least one block group's worth larger than its filesystem (smaller
/// slack is what `resize2fs` leaves).
pub(super) fn needs_growth(image: &Path) -> bool {
    let Ok(len) = std::fs::metadata(image).map(|m| m.len()) else {
        return false;
    };
    fs_bytes(image).is_some_and(|fs| len >= fs + (32 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_count_and_size_are_read() {
        let mut sb = [0u8; 1024];
        sb[0x38..0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        sb[0x04..0x08].copy_from_slice(&262_144u32.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(parse(&sb), Some(1 << 30));
        sb[0x38] = 0;
        assert_eq!(parse(&sb), None);
    }
}
