//! Execution events: what the CLI renders as progress bars or JSON lines,
//! and what the tests count.

use std::sync::Arc;

use serde::{Serialize, Serializer};

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    GraphStart {
        /// Nodes the requested outputs need.
        nodes: usize,
    },
    /// Nodes whose results came from the cache and will not run.
    Cached {
        nodes: Vec<String>,
    },
    NodeStart {
        node: String,
        #[serde(rename = "type")]
        ty: String,
    },
    Progress {
        node: String,
        value: u64,
        max: u64,
    },
    NodeDone {
        node: String,
        #[serde(rename = "type")]
        ty: String,
        duration_ms: f64,
    },
    NodeFailed {
        node: String,
        #[serde(rename = "type")]
        ty: String,
        message: String,
        /// `(input, value summary)` for every input the node received.
        inputs: Vec<(String, String)>,
    },
    /// A node that could not run because something it needs failed.
    NodeSkipped {
        node: String,
        because: String,
    },
    /// Free-form output from output nodes such as `Print`.
    Output {
        node: String,
        text: String,
    },
    GraphDone {
        executed: usize,
        cached: usize,
        failed: usize,
        duration_ms: f64,
    },
    Interrupted {
        executed: usize,
    },
    /// The graph failed to load or validate (`weft watch` keeps the last good one).
    GraphInvalid {
        errors: Vec<String>,
    },
    /// A picture of a running node's work so far: a sampler's current
    /// denoised estimate after `step` of `max` steps, as a PNG (raw bytes
    /// here, base64 in JSON). Rate-limited by the node that sends it.
    Preview {
        node: String,
        step: u64,
        max: u64,
        width: u32,
        height: u32,
        png: PreviewPng,
    },
}

/// The bytes of a preview PNG: shared, so cloning an event copies no pixels;
/// serialized as standard base64 (RFC 4648, with padding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviewPng(pub Arc<[u8]>);

impl PreviewPng {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for PreviewPng {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64(&self.0))
    }
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | ((*b as u32) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Event {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events serialize")
    }

    /// A `Preview` as ComfyUI's binary websocket frame: the big-endian u32
    /// event type 1 (`PREVIEW_IMAGE`), the u32 image type 2 (PNG), then the
    /// PNG bytes. `None` for every other event.
    pub fn comfy_preview_frame(&self) -> Option<Vec<u8>> {
        let Event::Preview { png, .. } = self else {
            return None;
        };
        let mut frame = Vec::with_capacity(8 + png.0.len());
        frame.extend_from_slice(&1u32.to_be_bytes());
        frame.extend_from_slice(&2u32.to_be_bytes());
        frame.extend_from_slice(&png.0);
        Some(frame)
    }
}

/// Where events go; cheap to clone into worker threads.
#[derive(Clone)]
pub struct EventSink(Arc<dyn Fn(&Event) + Send + Sync>);

impl EventSink {
    pub fn new(f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        EventSink(Arc::new(f))
    }

    pub fn discard() -> Self {
        EventSink::new(|_| {})
    }

    pub fn emit(&self, event: Event) {
        (self.0)(&event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn previews_serialize_tagged_with_base64_png() {
        let event = Event::Preview {
            node: "sample".into(),
            step: 3,
            max: 20,
            width: 2,
            height: 1,
            png: PreviewPng(Arc::from(&b"\x89PNG"[..])),
        };
        assert_eq!(
            event.to_json(),
            r#"{"event":"preview","node":"sample","step":3,"max":20,"width":2,"height":1,"png":"iVBORw=="}"#
        );
        let frame = event.comfy_preview_frame().unwrap();
        assert_eq!(&frame[..8], &[0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(&frame[8..], b"\x89PNG");
        assert_eq!(Event::GraphStart { nodes: 1 }.comfy_preview_frame(), None);
    }
}
