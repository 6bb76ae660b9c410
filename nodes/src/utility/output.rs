use weft_core::atomic::{next_numbered_path, write_atomic};
use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};

/// `Print`: shows a value, printed by `weft run`, an `output` event with
/// `--events json`.
pub fn print() -> NodeDef {
    NodeSchema::new("Print", "output", "Shows a value to the user; tensors (latents, images, sigmas) with their mean, std and range.")
        .input(InputSpec::of("value", ValueType::Any).doc("What to show."))
        .input(
            InputSpec::string("label")
                .default("")
                .doc("Shown before the value."),
        )
        .output_node()
        .run(|cx| {
            let value = cx.value("value")?;
            let text = match value {
                Value::String(s) => s.to_string(),
                Value::Image(t) | Value::Mask(t) | Value::Sigmas(t) => {
                    format!("{} {}", value.summary(), stats(t)?)
                }
                Value::Latent(l) => format!("{} {}", value.summary(), stats(&l.samples)?),
                other => other.summary(),
            };
            let label = cx.str("label")?;
            cx.output(if label.is_empty() {
                text
            } else {
                format!("{label}{text}")
            });
            Ok(())
        })
}

/// Mean, standard deviation and range of a tensor, for a quick look at a latent.
fn stats(t: &candle_core::Tensor) -> Result<String, NodeError> {
    let v: Vec<f64> = t
        .flatten_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1()?;
    if v.is_empty() {
        return Ok("(empty)".into());
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let (lo, hi) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(*x), b.max(*x))
        });
    Ok(format!(
        "mean {mean:.4} std {std:.4} min {lo:.4} max {hi:.4}"
    ))
}

/// `SaveText`: writes text to `{prefix}_{counter:05}_.txt` in the output
/// directory, atomically.
pub fn save_text() -> NodeDef {
    NodeSchema::new(
        "SaveText",
        "output",
        "Saves text to a numbered file in the output directory.",
    )
    .input(InputSpec::string("text").doc("The text to save."))
    .input(
        InputSpec::string("filename_prefix")
            .default("weft")
            .doc("File name before the counter; may include subfolders."),
    )
    .output("path", ValueType::String, "Where the file was written.")
    .output_node()
    .run(|cx| {
        let prefix = output_prefix(cx)?;
        let path = next_numbered_path(cx.out_dir, prefix, "txt");
        write_atomic(&path, cx.str("text")?.as_bytes())
            .map_err(|e| NodeError::new(format!("cannot write {}: {e}", path.display())))?;
        cx.output(format!("saved {}", path.display()));
        Ok(Value::String(path.display().to_string().into()))
    })
}

/// An output node's `filename_prefix`: a non-empty name inside the output
/// folder (subfolders allowed), never an absolute path or one with `..`,
/// so no graph (least of all one sent to `weft serve`) writes elsewhere.
pub(crate) fn output_prefix<'a>(cx: &'a weft_core::NodeContext<'_>) -> Result<&'a str, NodeError> {
    let prefix = cx.str("filename_prefix")?;
    let path = std::path::Path::new(prefix);
    if prefix.is_empty()
        || path.is_absolute()
        || path.has_root()
        || prefix.split(['/', '\\']).any(|part| part == "..")
    {
        return Err(NodeError::input(
            "filename_prefix",
            "must be a non-empty name inside the output directory (no absolute path, no `..`)",
        ));
    }
    Ok(prefix)
}
