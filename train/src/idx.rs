//! The IDX format of MNIST and Fashion-MNIST: a big-endian header (magic,
//! then one u32 per dimension) followed by raw `u8` data, usually gzipped.
//!
//! Only the two layouts the datasets use are read: images (magic 2051,
//! `[count, rows, cols]`) and labels (magic 2049, `[count]`). Every error names
//! the file, since a trainer is pointed at two of them and a bad path or a
//! swapped pair is the common mistake.

use std::io::{Read, Write};
use std::path::Path;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

/// IDX magic for `u8` data with three dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// IDX magic for `u8` data with one dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// A stack of greyscale images, row-major, one byte per pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

impl Images {
    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// Images with their labels, checked to pair up one to one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    pub images: Images,
    pub labels: Vec<u8>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Reads a whole file, gunzipping it when it starts with the gzip magic, so
/// both the distributed `.gz` files and unpacked copies work.
fn read_bytes(path: &Path) -> Result<Vec<u8>, String> {
    let raw = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| format!("{}: corrupt or truncated gzip data: {e}", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Splits off and checks the header; returns the dimensions and the data.
fn parse<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: u32,
    what: &str,
    ndims: usize,
) -> Result<(Vec<usize>, &'a [u8]), String> {
    let name = path.display();
    let header = 4 + 4 * ndims;
    if bytes.len() < 4 {
        return Err(format!(
            "{name}: truncated: {} bytes, too short for an IDX header",
            bytes.len()
        ));
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        let hint = match found {
            IMAGES_MAGIC => " (this is an IDX images file)",
            LABELS_MAGIC => " (this is an IDX labels file)",
            _ => " (not an IDX file of unsigned bytes)",
        };
        return Err(format!(
            "{name}: bad magic number {found} for IDX {what}, expected {magic}{hint}"
        ));
    }
    if bytes.len() < header {
        return Err(format!(
            "{name}: truncated: {} bytes, the IDX {what} header needs {header}",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| be_u32(bytes, 4 + 4 * i) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("{name}: IDX dimensions {dims:?} overflow"))?;
    let data = &bytes[header..];
    if data.len() < expected {
        return Err(format!(
            "{name}: truncated: dimensions {dims:?} need {expected} bytes of data, found {}",
            data.len()
        ));
    }
    if data.len() > expected {
        return Err(format!(
            "{name}: {} bytes after the {expected} that dimensions {dims:?} describe",
            data.len() - expected
        ));
    }
    Ok((dims, data))
}

/// Reads an IDX images file (magic 2051).
pub fn read_images(path: &Path) -> Result<Images, String> {
    let bytes = read_bytes(path)?;
    let (dims, data) = parse(path, &bytes, IMAGES_MAGIC, "images", 3)?;
    if dims[1] == 0 || dims[2] == 0 {
        return Err(format!(
            "{}: images of size {}×{} are empty",
            path.display(),
            dims[1],
            dims[2]
        ));
    }
    Ok(Images {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels: data.to_vec(),
    })
}

/// Reads an IDX labels file (magic 2049).
pub fn read_labels(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = read_bytes(path)?;
    let (_, data) = parse(path, &bytes, LABELS_MAGIC, "labels", 1)?;
    Ok(data.to_vec())
}

/// Reads an images file and its labels file and checks that they pair up.
pub fn read_dataset(images: &Path, labels: &Path) -> Result<Dataset, String> {
    let imgs = read_images(images)?;
    let lbls = read_labels(labels)?;
    if imgs.count != lbls.len() {
        return Err(format!(
            "count mismatch: {} holds {} images but {} holds {} labels",
            images.display(),
            imgs.count,
            labels.display(),
            lbls.len()
        ));
    }
    if imgs.count == 0 {
        return Err(format!("{}: holds no images", images.display()));
    }
    Ok(Dataset {
        images: imgs,
        labels: lbls,
    })
}

fn write_gz(path: &Path, header: &[u32], data: &[u8]) -> Result<(), String> {
    let file = std::fs::File::create(path)
        .map_err(|e| format!("{}: cannot create: {e}", path.display()))?;
    let mut gz = GzEncoder::new(file, Compression::best());
    let mut bytes = Vec::with_capacity(4 * header.len() + data.len());
    for h in header {
        bytes.extend(h.to_be_bytes());
    }
    bytes.extend(data);
    gz.write_all(&bytes)
        .and_then(|_| gz.finish().map(|_| ()))
        .map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

/// Writes images as gzipped IDX (used to cut the committed test subset).
pub fn write_images(path: &Path, images: &Images) -> Result<(), String> {
    let header = [
        IMAGES_MAGIC,
        images.count as u32,
        images.rows as u32,
        images.cols as u32,
    ];
    write_gz(path, &header, &images.pixels)
}

/// Writes labels as gzipped IDX.
pub fn write_labels(path: &Path, labels: &[u8]) -> Result<(), String> {
    write_gz(path, &[LABELS_MAGIC, labels.len() as u32], labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(header: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = header.iter().flat_map(|h| h.to_be_bytes()).collect();
        v.extend(data);
        v
    }

    #[test]
    fn round_trips_gzip_and_reads_raw() {
        let dir = tempfile::tempdir().unwrap();
        let imgs = Images {
            count: 2,
            rows: 2,
            cols: 3,
            pixels: (0..12).collect(),
        };
        let (ip, lp) = (dir.path().join("i.gz"), dir.path().join("l.gz"));
        write_images(&ip, &imgs).unwrap();
        write_labels(&lp, &[7, 1]).unwrap();
        let ds = read_dataset(&ip, &lp).unwrap();
        assert_eq!(ds.images, imgs);
        assert_eq!(ds.labels, vec![7, 1]);
        assert_eq!(ds.images.image(1), &[6, 7, 8, 9, 10, 11]);
        // Uncompressed IDX works too.
        let rp = dir.path().join("raw");
        std::fs::write(&rp, raw(&[LABELS_MAGIC, 3], &[1, 2, 3])).unwrap();
        assert_eq!(read_labels(&rp).unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad-file");
        let check = |bytes: Vec<u8>, images: bool, want: &str| {
            std::fs::write(&p, bytes).unwrap();
            let err = if images {
                read_images(&p).unwrap_err()
            } else {
                read_labels(&p).unwrap_err()
            };
            assert!(err.contains("bad-file") && err.contains(want), "{err}");
        };
        check(raw(&[LABELS_MAGIC, 1], &[0]), true, "bad magic number 2049");
        check(raw(&[IMAGES_MAGIC, 1, 1, 1], &[0]), false, "images file");
        check(raw(&[IMAGES_MAGIC, 2, 2, 2], &[0; 7]), true, "truncated");
        check(raw(&[IMAGES_MAGIC, 2], &[]), true, "truncated");
        check(vec![0, 0], false, "truncated");
        check(raw(&[LABELS_MAGIC, 2], &[0; 3]), false, "1 bytes after");
        check(vec![0x1f, 0x8b, 8, 0, 0], false, "gzip");
        let missing = read_labels(&dir.path().join("nope")).unwrap_err();
        assert!(missing.contains("nope") && missing.contains("cannot read"));
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let (ip, lp) = (dir.path().join("imgs"), dir.path().join("lbls"));
        let imgs = Images {
            count: 3,
            rows: 1,
            cols: 1,
            pixels: vec![0; 3],
        };
        write_images(&ip, &imgs).unwrap();
        write_labels(&lp, &[1, 2]).unwrap();
        let err = read_dataset(&ip, &lp).unwrap_err();
        assert!(
            err.contains("imgs") && err.contains("lbls") && err.contains("3 images"),
            "{err}"
        );
    }
}
