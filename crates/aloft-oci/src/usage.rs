//! Sizes for `images list` / `image show`: per image, its blobs and its unpacked layers; for a
//! set of images, the disk they use together, with shared layers counted once. Read from the
//! prepared records (`crate::prepared`), no layer is walked.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::prepared::PreparedImage;

/// The sizes of one image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageUsage {
    pub digest: Digest,
    /// Manifest + config + compressed layers.
    pub blob_bytes: u64,
    /// Its layers once unpacked.
    pub unpacked_bytes: u64,
}

/// The sizes of a set of images.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreUsage {
    pub images: Vec<ImageUsage>,
    /// Blobs of all of them, each blob once.
    pub blob_bytes: u64,
    /// Unpacked layers of all of them, each layer once.
    pub unpacked_bytes: u64,
}

/// Adds up `images`' sizes, counting a shared blob or layer once in the totals.
pub fn usage(images: &[PreparedImage]) -> StoreUsage {
    let mut out = StoreUsage::default();
    let mut seen_blobs: HashSet<&Digest> = HashSet::new();
    let mut seen_layers: HashSet<&Digest> = HashSet::new();
    for img in images {
        out.images.push(ImageUsage {
            digest: img.manifest_digest.clone(),
            blob_bytes: img.size_bytes,
            unpacked_bytes: img.unpacked_bytes(),
        });
        let own = img.size_bytes - img.layers.iter().map(|l| l.size).sum::<u64>();
        if seen_blobs.insert(&img.manifest_digest) {
            out.blob_bytes += own;
        }
        for l in &img.layers {
            if seen_blobs.insert(&l.digest) {
                out.blob_bytes += l.size;
            }
            if seen_layers.insert(&l.diff_id) {
                out.unpacked_bytes += l.unpacked_size;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepared::{ImageProcessConfig, PreparedLayer};

    fn layer(c: char, size: u64, unpacked: u64) -> PreparedLayer {
        let d = Digest::from_hex(&c.to_string().repeat(64)).unwrap();
        PreparedLayer {
            digest: d.clone(),
            size,
            media_type: String::new(),
            diff_id: d,
            unpacked_size: unpacked,
        }
    }

    fn img(m: char, layers: Vec<PreparedLayer>) -> PreparedImage {
        let d = Digest::from_hex(&m.to_string().repeat(64)).unwrap();
        PreparedImage {
            size_bytes: 10 + layers.iter().map(|l| l.size).sum::<u64>(),
            manifest_digest: d.clone(),
            config_digest: d,
            layer_dirs: vec![],
            layers,
            config: ImageProcessConfig::default(),
            exposed_ports: vec![],
        }
    }

    #[test]
    fn shared_layers_count_once_in_the_total() {
        let a = img('a', vec![layer('1', 100, 300), layer('2', 5, 7)]);
        let b = img('b', vec![layer('1', 100, 300), layer('3', 6, 8)]);
        let u = usage(&[a, b]);
        assert_eq!(u.images[0].blob_bytes, 115);
        assert_eq!(u.images[0].unpacked_bytes, 307);
        assert_eq!(u.images[1].blob_bytes, 116);
        assert_eq!(u.blob_bytes, 10 + 10 + 100 + 5 + 6);
        assert_eq!(u.unpacked_bytes, 300 + 7 + 8);
    }
}
