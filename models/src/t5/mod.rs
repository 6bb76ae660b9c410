//! T5-XXL, the text encoder SD3 and Flux read long prompts with: the
//! encoder ([`model`]), its SentencePiece tokenizer ([`tokenizer`]), and
//! the two as one encoder of a CLIP value ([`tower`]).

pub mod model;
pub mod tokenizer;
pub mod tower;

pub use model::{T5Config, T5Encoder};
pub use tokenizer::T5Tokenizer;
