//! A file's keys grouped by module into adapters.
//!
//! A key is a module name plus a suffix naming the tensor's part
//! (`.lora_up.weight`, `.hada_w1_a`, `.alpha`, …), in the spellings ComfyUI's
//! `load_lora` accepts plus PEFT's `lora_A`/`lora_B`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use super::adapters::{Factor, Form};
use super::patch::{Adapter, Scale, Stored};
use super::Module;
use crate::weights::WeightFile;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Part {
    Up,
    Down,
    Mid,
    Alpha,
    Dora,
    HadaW1A,
    HadaW1B,
    HadaW2A,
    HadaW2B,
    HadaT1,
    HadaT2,
    LokrW1,
    LokrW1A,
    LokrW1B,
    LokrW2,
    LokrW2A,
    LokrW2B,
    LokrT2,
    Diff,
    DiffB,
}

/// Key suffixes; the longest that ends a key wins.
const SUFFIXES: &[(&str, Part)] = &[
    (".lora_up.weight", Part::Up),
    (".lora_down.weight", Part::Down),
    (".lora_mid.weight", Part::Mid),
    (".lora_B.weight", Part::Up),
    (".lora_A.weight", Part::Down),
    (".lora.up.weight", Part::Up),
    (".lora.down.weight", Part::Down),
    // diffusers' attention processors: `…processor.to_q_lora.up.weight`.
    ("_lora.up.weight", Part::Up),
    ("_lora.down.weight", Part::Down),
    (".lora_linear_layer.up.weight", Part::Up),
    (".lora_linear_layer.down.weight", Part::Down),
    (".alpha", Part::Alpha),
    (".dora_scale", Part::Dora),
    (".lora_magnitude_vector", Part::Dora),
    (".hada_w1_a", Part::HadaW1A),
    (".hada_w1_b", Part::HadaW1B),
    (".hada_w2_a", Part::HadaW2A),
    (".hada_w2_b", Part::HadaW2B),
    (".hada_t1", Part::HadaT1),
    (".hada_t2", Part::HadaT2),
    (".lokr_w1", Part::LokrW1),
    (".lokr_w1_a", Part::LokrW1A),
    (".lokr_w1_b", Part::LokrW1B),
    (".lokr_w2", Part::LokrW2),
    (".lokr_w2_a", Part::LokrW2A),
    (".lokr_w2_b", Part::LokrW2B),
    (".lokr_t2", Part::LokrT2),
    (".diff", Part::Diff),
    (".diff_b", Part::DiffB),
    // LyCORIS' norm-layer changes, which ComfyUI applies as diffs.
    (".w_norm", Part::Diff),
    (".b_norm", Part::DiffB),
];

fn split(key: &str) -> Option<(&str, Part)> {
    SUFFIXES
        .iter()
        .filter(|(suffix, _)| key.len() > suffix.len() && key.ends_with(suffix))
        .max_by_key(|(suffix, _)| suffix.len())
        .map(|(suffix, part)| (&key[..key.len() - suffix.len()], *part))
}

/// One module's tensors: part → (key, shape).
type Parts = BTreeMap<Part, Stored>;

/// The adapter form a module's parts make, or why they make none.
fn form(parts: &mut Parts) -> Result<Option<Form<Stored>>, String> {
    use Part::*;
    let mut take = |p: Part| parts.remove(&p);
    let lora = (take(Up), take(Down), take(Mid));
    let hada = [HadaW1A, HadaW1B, HadaW2A, HadaW2B, HadaT1, HadaT2].map(&mut take);
    let lokr = [LokrW1, LokrW1A, LokrW1B, LokrW2, LokrW2A, LokrW2B, LokrT2].map(&mut take);
    let diff = take(Diff);
    let kinds = [
        lora.0.is_some() || lora.1.is_some() || lora.2.is_some(),
        hada.iter().any(Option::is_some),
        lokr.iter().any(Option::is_some),
        diff.is_some(),
    ];
    if kinds.iter().filter(|&&k| k).count() > 1 {
        return Err("mixes adapter kinds".into());
    }
    let missing = |what: &str| format!("has only part of a {what}");
    if kinds[0] {
        let (Some(up), Some(down), mid) = lora else {
            return Err(missing("LoRA (up and down)"));
        };
        return Ok(Some(Form::Lora { up, down, mid }));
    }
    if kinds[1] {
        let [Some(w1a), Some(w1b), Some(w2a), Some(w2b), t1, t2] = hada else {
            return Err(missing("LoHa (hada_w1_a/b, hada_w2_a/b)"));
        };
        let cores = match (t1, t2) {
            (Some(t1), Some(t2)) => Some((t1, t2)),
            (None, None) => None,
            _ => return Err(missing("LoHa (hada_t1 and hada_t2)")),
        };
        return Ok(Some(Form::LoHa {
            w1a,
            w1b,
            w2a,
            w2b,
            cores,
        }));
    }
    if kinds[2] {
        let [w1, w1a, w1b, w2, w2a, w2b, t2] = lokr;
        let factor = |full, a, b, name: &str| match (full, a, b) {
            (Some(w), None, None) => Ok(Factor::Full(w)),
            (None, Some(a), Some(b)) => Ok(Factor::Product(a, b)),
            _ => Err(missing(&format!(
                "LoKr (lokr_{name} or lokr_{name}_a and _b)"
            ))),
        };
        return Ok(Some(Form::LoKr {
            w1: factor(w1, w1a, w1b, "w1")?,
            w2: factor(w2, w2a, w2b, "w2")?,
            t2,
        }));
    }
    Ok(diff.map(Form::Diff))
}

/// diffusers' `lora_adapter_metadata`: PEFT `LoraConfig`s, keyed `unet.r`,
/// `text_encoder.lora_alpha`, … when saved from a pipeline, bare (`r`) when
/// saved from one model.
struct PeftConfigs(serde_json::Map<String, Value>);

impl PeftConfigs {
    fn parse(metadata: &HashMap<String, String>) -> Result<Option<PeftConfigs>, String> {
        let Some(text) = metadata.get("lora_adapter_metadata") else {
            return Ok(None);
        };
        match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Ok(Some(PeftConfigs(map))),
            _ => Err("its lora_adapter_metadata is not a JSON object".into()),
        }
    }

    /// PEFT's scale of `module`: `lora_alpha / r` (`/ √r` with rsLoRA),
    /// with `rank_pattern` / `alpha_pattern` entries matching the module name
    /// or a dotted suffix of it (patterns are taken literally, not as regexes).
    fn scale(&self, module: &str) -> Result<f64, String> {
        let (prefix, inner) = ["unet", "transformer", "text_encoder", "text_encoder_2"]
            .iter()
            .find_map(|c| Some((format!("{c}."), module.strip_prefix(&format!("{c}."))?)))
            .filter(|(p, _)| self.0.keys().any(|k| k.starts_with(p.as_str())))
            .unwrap_or_else(|| (String::new(), module));
        let get = |field: &str| self.0.get(&format!("{prefix}{field}"));
        let pattern = |field: &str| {
            let map = get(field)?.as_object()?;
            map.iter()
                .find(|(k, _)| inner == k.as_str() || inner.ends_with(&format!(".{k}")))
                .and_then(|(_, v)| v.as_f64())
        };
        // PEFT's LoraConfig defaults: r = 8, lora_alpha = 8.
        let r = pattern("rank_pattern")
            .or_else(|| get("r")?.as_f64())
            .unwrap_or(8.0);
        let alpha = pattern("alpha_pattern")
            .or_else(|| get("lora_alpha")?.as_f64())
            .unwrap_or(8.0);
        if r <= 0.0 || !alpha.is_finite() {
            return Err(format!(
                "lora_adapter_metadata gives r = {r}, lora_alpha = {alpha}"
            ));
        }
        let rslora = get("use_rslora").and_then(Value::as_bool) == Some(true);
        Ok(alpha / if rslora { r.sqrt() } else { r })
    }
}

/// The `alpha` scalar at `key`.
fn read_alpha(file: &WeightFile, key: &str) -> Result<f64, String> {
    let values = file
        .load_f32(key)
        .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
        .map_err(|e| format!("`{key}` cannot be read: {e}"))?;
    match values.as_slice() {
        [a] if a.is_finite() => Ok(f64::from(*a)),
        _ => Err(format!("`{key}` is not one finite number")),
    }
}

/// The modules of `file`, sorted by name, and the keys of no known part.
pub(super) fn modules(
    file: &Arc<WeightFile>,
    metadata: &HashMap<String, String>,
) -> Result<(Vec<Module>, Vec<String>), String> {
    let here = file.path.display();
    let peft = PeftConfigs::parse(metadata).map_err(|e| format!("{here}: {e}"))?;
    let mut grouped: BTreeMap<String, (Parts, bool)> = BTreeMap::new();
    let mut unknown = Vec::new();
    let mut problems = Vec::new();
    for (key, shape) in file.shapes() {
        let Some((module, part)) = split(&key) else {
            unknown.push(key);
            continue;
        };
        let (parts, is_peft) = grouped.entry(module.to_string()).or_default();
        *is_peft |= key.ends_with(".lora_A.weight") || key.ends_with(".lora_B.weight");
        if let Some(old) = parts.insert(
            part,
            Stored {
                key: key.clone(),
                shape,
            },
        ) {
            problems.push(format!("`{}` and `{key}` are the same part", old.key));
        }
    }
    let mut modules = Vec::new();
    for (name, (parts, is_peft)) in grouped {
        match module(file, &name, parts, is_peft, peft.as_ref()) {
            Ok(m) => modules.push(m),
            Err(e) => problems.push(format!("`{name}`: {e}")),
        }
    }
    if !problems.is_empty() {
        const SHOWN: usize = 8;
        let more = problems.len().saturating_sub(SHOWN);
        problems.truncate(SHOWN);
        let more = if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        };
        return Err(format!(
            "{here}: not a usable LoRA: {}{more}",
            problems.join("; ")
        ));
    }
    unknown.sort();
    Ok((modules, unknown))
}

fn module(
    file: &Arc<WeightFile>,
    name: &str,
    mut parts: Parts,
    is_peft: bool,
    peft: Option<&PeftConfigs>,
) -> Result<Module, String> {
    let alpha = parts.remove(&Part::Alpha);
    let dora = parts.remove(&Part::Dora);
    let bias = parts.remove(&Part::DiffB);
    let form = form(&mut parts)?;
    if form.is_none() && bias.is_none() {
        return Err("has no adapter, only an alpha or dora_scale".into());
    }
    if form.is_none() && (alpha.is_some() || dora.is_some()) {
        return Err("has an alpha or dora_scale but no adapter for its weight".into());
    }
    let scale = match (alpha, peft) {
        (Some(a), _) => Scale::Alpha(read_alpha(file, &a.key)?),
        (None, Some(peft)) if is_peft => Scale::Fixed(peft.scale(name)?),
        (None, _) => Scale::Fixed(1.0),
    };
    let weight = form
        .map(|f| Adapter::new(file.clone(), name, f, scale, dora))
        .transpose()?;
    let bias = bias
        .map(|b| {
            let key = b.key.clone();
            Adapter::new(file.clone(), name, Form::Diff(b), Scale::Fixed(1.0), None)
                .map(|a| (key, Arc::new(a)))
        })
        .transpose()?;
    Ok(Module {
        name: name.to_string(),
        weight: weight.map(Arc::new),
        bias,
    })
}
