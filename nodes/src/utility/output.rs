use weft_core::atomic::{next_numbered_path, write_atomic};
use weft_core::{InputSpec, Node, NodeContext, NodeError, NodeSchema, Value, ValueType};

/// Shows a value: printed by `weft run`, an `output` event with `--events json`.
pub struct Print {
    schema: NodeSchema,
}

impl Print {
    pub fn new() -> Self {
        let schema = NodeSchema::new("Print", "output", "Shows a value to the user.")
            .input(InputSpec::of("value", ValueType::Any).doc("What to show."))
            .input(
                InputSpec::string("label")
                    .default("")
                    .doc("Shown before the value."),
            )
            .output_node();
        Print { schema }
    }
}

impl Default for Print {
    fn default() -> Self {
        Self::new()
    }
}

impl Node for Print {
    fn schema(&self) -> &NodeSchema {
        &self.schema
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let text = match ctx.inputs.value("value")? {
            Value::String(s) => s.to_string(),
            other => other.summary(),
        };
        let label = ctx.inputs.str("label")?;
        ctx.output(if label.is_empty() {
            text
        } else {
            format!("{label}{text}")
        });
        Ok(vec![])
    }
}

/// Writes text to `{prefix}_{counter:05}_.txt` in the output directory, atomically.
pub struct SaveText {
    schema: NodeSchema,
}

impl SaveText {
    pub fn new() -> Self {
        let schema = NodeSchema::new(
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
        .output_node();
        SaveText { schema }
    }
}

impl Default for SaveText {
    fn default() -> Self {
        Self::new()
    }
}

impl Node for SaveText {
    fn schema(&self) -> &NodeSchema {
        &self.schema
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let prefix = ctx.inputs.str("filename_prefix")?;
        if prefix.split(['/', '\\']).any(|part| part == "..") {
            return Err(NodeError::input(
                "filename_prefix",
                "must stay inside the output directory (no `..`)",
            ));
        }
        let path = next_numbered_path(ctx.out_dir, prefix, "txt");
        write_atomic(&path, ctx.inputs.str("text")?.as_bytes())
            .map_err(|e| NodeError::new(format!("cannot write {}: {e}", path.display())))?;
        ctx.output(format!("saved {}", path.display()));
        Ok(vec![Value::String(path.display().to_string().into())])
    }
}
