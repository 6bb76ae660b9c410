//! From prompt text to CLIP token chunks with per-token weights.
//!
//! The syntax is ComfyUI's: `(text:1.3)` multiplies the weight of `text` by
//! 1.3, bare `(text)` by 1.1, parentheses nest and multiply, and `\(` `\)`
//! are literal parentheses. Long prompts become several 77-token chunks
//! (start token, 75 tokens, end token, padding), each encoded on its own and
//! concatenated, as ComfyUI and A1111 do.

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

/// One encoder input: 77 ids and their weights (1 for special tokens).
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    pub ids: Vec<u32>,
    pub weights: Vec<f64>,
}

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

    fn chunk(&self, body: &[(u32, f64)]) -> Chunk {
        let mut ids = Vec::with_capacity(CHUNK);
        let mut weights = Vec::with_capacity(CHUNK);
        ids.push(self.start);
        weights.push(1.0);
        for &(id, w) in body {
            ids.push(id);
            weights.push(w);
        }
        ids.push(self.end);
        weights.push(1.0);
        ids.resize(CHUNK, self.pad);
        weights.resize(CHUNK, 1.0);
        Chunk { ids, weights }
    }
}

/// The chunks for `prompt`: at least one (an empty prompt is start, end
/// and padding), then one per 75 tokens.
pub fn chunks(tokenizer: &Tokenizer, framing: Framing, prompt: &str) -> Vec<Chunk> {
    let mut tokens: Vec<(u32, f64)> = Vec::new();
    let mut buf: Vec<Token> = Vec::new();
    for seg in parse_weights(prompt) {
        buf.clear();
        tokenizer.encode(&seg.text, &mut buf);
        tokens.extend(buf.iter().map(|t| (t.to_u16() as u32, seg.weight)));
    }
    if tokens.is_empty() {
        return vec![framing.chunk(&[])];
    }
    tokens.chunks(BODY).map(|c| framing.chunk(c)).collect()
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
}
