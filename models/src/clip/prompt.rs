//! From prompt text to CLIP token chunks with per-token weights.
//!
//! The syntax is ComfyUI's: `(text:1.3)` multiplies the weight of `text` by
//! 1.3, bare `(text)` by 1.1, parentheses nest and multiply, and `\(` `\)`
//! are literal parentheses. Long prompts become several 77-token chunks
//! (start token, 75 tokens, end token, padding), each encoded on its own and
//! concatenated, as ComfyUI and A1111 do.

use candle_core::Tensor;
use instant_clip_tokenizer::{Token, Tokenizer};

/// CLIP's context: start + 75 tokens + end.
pub const CHUNK: usize = 77;
const BODY: usize = CHUNK - 2;

/// A piece of prompt text and its weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub text: String,
    pub weight: f64,
}

/// Splits `prompt` into weighted segments. Unbalanced parentheses are taken
/// literally (as ComfyUI does) rather than rejected, so no prompt fails.
pub fn parse_weights(prompt: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    parse_into(prompt, 1.0, &mut segments);
    segments.retain(|s| !s.text.trim().is_empty());
    segments
}

fn push(segments: &mut Vec<Segment>, text: &str, weight: f64) {
    if text.is_empty() {
        return;
    }
    let text = text.replace("\\(", "(").replace("\\)", ")");
    match segments.last_mut() {
        Some(last) if last.weight == weight => last.text.push_str(&text),
        _ => segments.push(Segment { text, weight }),
    }
}

fn parse_into(s: &str, weight: f64, out: &mut Vec<Segment>) {
    let bytes = s.as_bytes();
    let mut plain_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'(' => match matching_paren(bytes, i) {
                Some(close) => {
                    push(out, &s[plain_start..i], weight);
                    let inner = &s[i + 1..close];
                    let (body, factor) = split_weight(inner);
                    parse_into(body, weight * factor, out);
                    i = close + 1;
                    plain_start = i;
                }
                None => i += 1,
            },
            _ => i += 1,
        }
    }
    push(out, &s[plain_start.min(s.len())..], weight);
}

/// The index of the `)` closing the `(` at `open`, skipping escapes.
fn matching_paren(bytes: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// `text:1.3` → (`text`, 1.3); anything else → (inner, 1.1).
fn split_weight(inner: &str) -> (&str, f64) {
    if let Some((body, w)) = inner.rsplit_once(':') {
        if let Ok(w) = w.trim().parse::<f64>() {
            if w.is_finite() {
                return (body, w);
            }
        }
    }
    (inner, 1.1)
}

/// One encoder input: 77 ids and their weights (1 for special tokens),
/// and the embedding vectors `[d]` that replace the inputs at some
/// positions (textual inversion; their ids are placeholders).
#[derive(Clone, Debug)]
pub struct Chunk {
    pub ids: Vec<u32>,
    pub weights: Vec<f64>,
    pub vectors: Vec<(usize, Tensor)>,
}

/// A token of a prompt: a vocabulary id or an embedding's vector `[d]`.
#[derive(Clone, Debug)]
enum Piece {
    Id(u32),
    Vector(Tensor),
}

/// Finds the vectors `[n, d]` of `embedding:name` for one text encoder, or
/// says why not (naming the folders searched).
pub type Lookup<'a> = dyn FnMut(&str) -> Result<Tensor, String> + 'a;

/// ComfyUI's marker of an embedding in a prompt.
pub const EMBEDDING: &str = "embedding:";

/// How a text encoder's tokenizer frames its input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Framing {
    pub start: u32,
    pub end: u32,
    /// SD 1.x pads with the end token; SD 2.x's OpenCLIP pads with 0 (`!`).
    pub pad: u32,
}

impl Framing {
    pub fn clip(tokenizer: &Tokenizer, pad_with_zero: bool) -> Framing {
        let end = tokenizer.end_of_text().to_u16() as u32;
        Framing {
            start: tokenizer.start_of_text().to_u16() as u32,
            end,
            pad: if pad_with_zero { 0 } else { end },
        }
    }

    fn chunk(&self, body: &[(Piece, f64)]) -> Chunk {
        let mut ids = Vec::with_capacity(CHUNK);
        let mut weights = Vec::with_capacity(CHUNK);
        let mut vectors = Vec::new();
        ids.push(self.start);
        weights.push(1.0);
        for (piece, w) in body {
            match piece {
                Piece::Id(id) => ids.push(*id),
                Piece::Vector(v) => {
                    vectors.push((ids.len(), v.clone()));
                    ids.push(0);
                }
            }
            weights.push(*w);
        }
        ids.push(self.end);
        weights.push(1.0);
        ids.resize(CHUNK, self.pad);
        weights.resize(CHUNK, 1.0);
        Chunk {
            ids,
            weights,
            vectors,
        }
    }

    /// The chunk of an empty prompt.
    pub fn empty(&self) -> Chunk {
        self.chunk(&[])
    }
}

/// `embedding:name` with `lookup`; trailing punctuation that is not part
/// of a name found (`embedding:style,`) is returned as text, as ComfyUI.
fn embedding<'w>(word: &'w str, lookup: &mut Lookup) -> Result<(Tensor, &'w str), String> {
    let name = &word[EMBEDDING.len()..];
    match lookup(name) {
        Ok(v) => Ok((v, "")),
        Err(e) => {
            let bare =
                name.trim_end_matches(|c: char| !c.is_alphanumeric() && c != '_' && c != '-');
            if bare.is_empty() || bare.len() == name.len() {
                return Err(e);
            }
            lookup(bare)
                .map(|v| (v, &name[bare.len()..]))
                .map_err(|_| e)
        }
    }
}

/// The chunks for `prompt`: at least one (an empty prompt is start, end
/// and padding), then one per 75 tokens. Words `embedding:name` become
/// the embedding's vectors (found with `lookup`), one token each.
pub fn chunks(
    tokenizer: &Tokenizer,
    framing: Framing,
    prompt: &str,
    lookup: &mut Lookup,
) -> Result<Vec<Chunk>, String> {
    let mut tokens: Vec<(Piece, f64)> = Vec::new();
    let mut buf: Vec<Token> = Vec::new();
    let mut text = |text: &str, weight: f64, tokens: &mut Vec<(Piece, f64)>| {
        buf.clear();
        tokenizer.encode(text, &mut buf);
        tokens.extend(buf.iter().map(|t| (Piece::Id(t.to_u16() as u32), weight)));
    };
    for seg in parse_weights(prompt) {
        let mut plain = String::new();
        for word in seg.text.split(' ') {
            if !word.starts_with(EMBEDDING) {
                plain.push_str(word);
                plain.push(' ');
                continue;
            }
            text(&plain, seg.weight, &mut tokens);
            plain.clear();
            let (vectors, rest) = embedding(word, lookup)?;
            let n = vectors.dim(0).map_err(|e| e.to_string())?;
            for i in 0..n {
                let v = vectors.get(i).map_err(|e| e.to_string())?;
                tokens.push((Piece::Vector(v), seg.weight));
            }
            plain.push_str(rest);
            plain.push(' ');
        }
        text(&plain, seg.weight, &mut tokens);
    }
    if tokens.is_empty() {
        return Ok(vec![framing.empty()]);
    }
    Ok(tokens.chunks(BODY).map(|c| framing.chunk(c)).collect())
}

/// A lookup for prompts with no embeddings folder to search.
pub fn no_embeddings(name: &str) -> Result<Tensor, String> {
    Err(format!(
        "`{EMBEDDING}{name}`: no embeddings folder is configured to look it up in"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(text: &str, weight: f64) -> Segment {
        Segment {
            text: text.into(),
            weight,
        }
    }

    #[test]
    fn weights_follow_comfyui_syntax() {
        assert_eq!(parse_weights("a cat"), vec![seg("a cat", 1.0)]);
        assert_eq!(
            parse_weights("a (red:1.5) cat"),
            vec![seg("a ", 1.0), seg("red", 1.5), seg(" cat", 1.0)]
        );
        let nested = parse_weights("((big)) dog");
        assert_eq!(nested[0].text, "big");
        assert!((nested[0].weight - 1.21).abs() < 1e-12);
        let inner = parse_weights("(a (b:2):0.5)");
        assert_eq!(inner, vec![seg("a ", 0.5), seg("b", 1.0)]);
        assert_eq!(
            parse_weights(r"\(literal\) (x:abc)"),
            vec![seg("(literal) ", 1.0), seg("x:abc", 1.1)]
        );
        // Unbalanced parentheses are text, never an error.
        assert_eq!(parse_weights("smile :) ("), vec![seg("smile :) (", 1.0)]);
    }

    #[test]
    fn chunks_frame_and_pad_like_clip() {
        let tok = Tokenizer::new();
        let sd1 = Framing::clip(&tok, false);
        let chunks = |tok: &Tokenizer, f: Framing, text: &str| {
            chunks(tok, f, text, &mut no_embeddings).unwrap()
        };
        let c = chunks(&tok, sd1, "a photograph of an astronaut riding a horse");
        assert_eq!(c.len(), 1);
        // Known ids of CLIP's vocabulary for this prompt.
        assert_eq!(
            &c[0].ids[..10],
            &[49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
        );
        assert!(c[0].ids[10..].iter().all(|&t| t == 49407));
        let sd2 = Framing::clip(&tok, true);
        let empty = chunks(&tok, sd2, "");
        assert_eq!(&empty[0].ids[..3], &[49406, 49407, 0]);
        assert_eq!(empty[0].ids.len(), CHUNK);

        let long = "horse ".repeat(80);
        let c = chunks(&tok, sd1, &long);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].ids[76], 49407);
        assert_eq!(c[1].ids[..6], [49406, 4558, 4558, 4558, 4558, 4558]);
        assert_eq!(c[1].ids[6], 49407);

        let weighted = chunks(&tok, sd1, "a (horse:1.4)");
        assert_eq!(weighted[0].weights[..4], [1.0, 1.0, 1.4, 1.0]);
    }

    #[test]
    fn embeddings_replace_their_words_with_vectors() {
        let tok = Tokenizer::new();
        let f = Framing::clip(&tok, false);
        let dev = candle_core::Device::Cpu;
        let asked = std::cell::RefCell::new(Vec::new());
        let mut lookup = |name: &str| {
            asked.borrow_mut().push(name.to_string());
            match name {
                "style" => {
                    Tensor::ones((2, 4), candle_core::DType::F32, &dev).map_err(|e| e.to_string())
                }
                _ => Err(format!(
                    "unknown embedding `{name}` (searched /models/embeddings)"
                )),
            }
        };
        let c = chunks(&tok, f, "a (embedding:style,:1.5) cat", &mut lookup).unwrap();
        // start, "a", the two vectors, ",", "cat", end.
        assert_eq!(
            c[0].vectors.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(c[0].weights[1..5], [1.0, 1.5, 1.5, 1.5]);
        assert_eq!(c[0].ids[4], 267, "the trailing comma stays text");
        assert_eq!(c[0].ids[6], 49407);
        assert_eq!(*asked.borrow(), ["style,", "style"]);
        let e = chunks(&tok, f, "embedding:nope", &mut lookup).unwrap_err();
        assert!(
            e.contains("nope") && e.contains("/models/embeddings"),
            "{e}"
        );
        // Without a folder, the word is an error, not silently text.
        assert!(chunks(&tok, f, "embedding:style", &mut no_embeddings).is_err());
    }
}
