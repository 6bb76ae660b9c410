//! The committed MNIST subset in `tests/data/`: the first 512 training
//! images and labels, so the trainer's tests run without the full dataset.

use std::path::{Path, PathBuf};

use weft_train::idx::{read_dataset, write_images, write_labels, Images};

const N: usize = 512;

fn shared_mnist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/mnist")
}

fn subset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn first_n() -> (Images, Vec<u8>) {
    let dir = shared_mnist();
    let full = read_dataset(
        &dir.join("train-images-idx3-ubyte.gz"),
        &dir.join("train-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    let per = full.images.rows * full.images.cols;
    let images = Images {
        count: N,
        rows: full.images.rows,
        cols: full.images.cols,
        pixels: full.images.pixels[..N * per].to_vec(),
    };
    (images, full.labels[..N].to_vec())
}

/// Regenerates the subset: `cargo test -p weft-train --test subset -- --ignored`.
#[test]
#[ignore]
fn generate_subset() {
    let (images, labels) = first_n();
    let dir = subset_dir();
    std::fs::create_dir_all(&dir).unwrap();
    write_images(&dir.join("train-images-idx3-ubyte.gz"), &images).unwrap();
    write_labels(&dir.join("train-labels-idx1-ubyte.gz"), &labels).unwrap();
}

#[test]
fn committed_subset_is_mnist_and_small() {
    let dir = subset_dir();
    let (imgs, lbls) = (
        dir.join("train-images-idx3-ubyte.gz"),
        dir.join("train-labels-idx1-ubyte.gz"),
    );
    let size = std::fs::metadata(&imgs).unwrap().len() + std::fs::metadata(&lbls).unwrap().len();
    assert!(size < 300_000, "subset is {size} bytes");
    let ds = read_dataset(&imgs, &lbls).unwrap();
    assert_eq!((ds.len(), ds.images.rows, ds.images.cols), (N, 28, 28));
    // Every digit appears, and pixels span the full byte range.
    assert!((0..10u8).all(|d| ds.labels.contains(&d)));
    assert_eq!(ds.images.pixels.iter().max(), Some(&255));
    // Where the full dataset is at hand, the subset is exactly its head.
    if shared_mnist().is_dir() {
        let (images, labels) = first_n();
        assert_eq!((ds.images, ds.labels), (images, labels));
    }
}
