//! Readable node ids for `weft convert`.
//!
//! ComfyUI numbers its nodes; a RON graph reads better with names, and
//! `--set sampler.seed=5` beats `--set 3.seed=5`. A node takes its title
//! as its id (lowercased, other characters as `_`) when no other node's
//! title gives the same id; otherwise its class and number
//! (`cliptextencode_6`).

use std::collections::{HashMap, HashSet};

use weft_core::graph::{valid_node_id, InputValue};
use weft_core::GraphDoc;

use crate::prompt::NodeOrigin;

/// Renames the nodes of `doc` (and every link to them) to readable ids.
pub fn readable_ids(doc: &mut GraphDoc, origins: &[NodeOrigin]) {
    let slugs: Vec<Option<String>> = origins
        .iter()
        .map(|o| o.title.as_deref().map(slug).filter(|s| valid_node_id(s)))
        .collect();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for s in slugs.iter().flatten() {
        *count.entry(s.as_str()).or_default() += 1;
    }
    let mut taken: HashSet<String> = HashSet::new();
    let mut renamed: HashMap<String, String> = HashMap::new();
    // Unique titles first, so a fallback never takes a title's id.
    for (origin, s) in origins.iter().zip(&slugs) {
        if let Some(s) = s.as_ref().filter(|s| count[s.as_str()] == 1) {
            taken.insert(s.clone());
            renamed.insert(origin.id.clone(), s.clone());
        }
    }
    for origin in origins {
        if renamed.contains_key(&origin.id) {
            continue;
        }
        let base = format!("{}_{}", slug(&origin.class_type), slug(&origin.id));
        let mut id = base.clone();
        let mut n = 2;
        while !valid_node_id(&id) || taken.contains(&id) {
            id = format!("{base}_{n}");
            n += 1;
        }
        taken.insert(id.clone());
        renamed.insert(origin.id.clone(), id);
    }
    for node in &mut doc.nodes {
        if let Some(id) = renamed.get(&node.id.value) {
            node.id.value = id.clone();
        }
        for input in &mut node.inputs {
            if let InputValue::Link { node: from, .. } = &mut input.value.value {
                if let Some(id) = renamed.get(&from.value) {
                    from.value = id.clone();
                }
            }
        }
    }
}

/// `"CLIP Text Encode (Prompt)"` → `"clip_text_encode_prompt"`.
fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_valid_ids() {
        assert_eq!(slug("CLIP Text Encode (Prompt)"), "clip_text_encode_prompt");
        assert_eq!(slug("  Load--Checkpoint "), "load_checkpoint");
        assert_eq!(slug("10:3"), "10_3");
        assert_eq!(slug("日本"), "");
    }
}
