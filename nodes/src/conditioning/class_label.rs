use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};

use weft_sampling::Conditioning;

/// `ClassLabel`: class-label conditioning for class-conditional models.
pub fn class_label() -> NodeDef {
    NodeSchema::new("ClassLabel", "conditioning", "Conditions on class labels: a comma-separated list, one per batch item (a single label applies to the whole batch); `none` is the null class ∅ used for unconditional passes.")
        .input(InputSpec::string("labels").default("0").doc("e.g. `7`, `0,1,2` or `none`."))
        .input(InputSpec::int("repeat").default(1).range(1.0, 4096.0).doc("Repeat each label this many times (`0,1` × 3 = `0,0,0,1,1,1`): one grid row per label."))
        .output("CONDITIONING", ValueType::Conditioning, "The labels.")
        .run(|cx| {
            let labels = cx
                .str("labels")?
                .split(',')
                .map(|l| match l.trim() {
                    "none" | "∅" => Ok(None),
                    l => l.parse::<u32>().map(Some).map_err(|_| {
                        NodeError::input("labels", format!("{l:?} is not a class number or `none`"))
                    }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let repeat = cx.int("repeat")? as usize;
            let labels = labels
                .into_iter()
                .flat_map(|l| std::iter::repeat_n(l, repeat))
                .collect();
            Ok(Value::handle(Conditioning::labels(labels)))
        })
}
