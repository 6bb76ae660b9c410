//! The MNIST checkpoints built into weft, so the default graphs run from any
//! folder and after `cargo install`, with no model files around.

/// Name and bytes of each built-in checkpoint (the files in `assets/mnist/`).
const EMBEDDED: [(&str, &[u8]); 5] = [
    (
        "mnist_flow.safetensors",
        include_bytes!("../../../assets/mnist/mnist_flow.safetensors"),
    ),
    (
        "mnist_ddpm.safetensors",
        include_bytes!("../../../assets/mnist/mnist_ddpm.safetensors"),
    ),
    (
        "mnist_unet.safetensors",
        include_bytes!("../../../assets/mnist/mnist_unet.safetensors"),
    ),
    (
        "mnist_classifier.safetensors",
        include_bytes!("../../../assets/mnist/mnist_classifier.safetensors"),
    ),
    (
        "mnist_noisy_classifier.safetensors",
        include_bytes!("../../../assets/mnist/mnist_noisy_classifier.safetensors"),
    ),
];

/// The built-in checkpoint called `name`, if there is one.
pub fn get(name: &str) -> Option<&'static [u8]> {
    EMBEDDED.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// The built-in checkpoints' names.
pub fn names() -> impl Iterator<Item = &'static str> {
    EMBEDDED.iter().map(|(n, _)| *n)
}
