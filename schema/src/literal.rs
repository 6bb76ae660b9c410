//! Scalar values written in graph files and given as defaults.

use std::fmt;

use serde::Serialize;

use crate::ValueType;

/// A scalar a graph file or a schema default can write down.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Literal {
    Int(i64),
    Float(f64),
    Bool(bool),
    String(String),
}

impl Literal {
    pub fn ty(&self) -> ValueType {
        match self {
            Literal::Int(_) => ValueType::Int,
            Literal::Float(_) => ValueType::Float,
            Literal::Bool(_) => ValueType::Bool,
            Literal::String(_) => ValueType::String,
        }
    }

    /// An INT becomes a FLOAT where a FLOAT is expected, so `cfg: 7` works.
    pub fn coerce_to(self, ty: ValueType) -> Literal {
        match (self, ty) {
            (Literal::Int(i), ValueType::Float) => Literal::Float(i as f64),
            (v, _) => v,
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Float(x) => write!(f, "{x:?}"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::String(s) => write!(f, "{s:?}"),
        }
    }
}

impl From<i64> for Literal {
    fn from(v: i64) -> Self {
        Literal::Int(v)
    }
}
impl From<i32> for Literal {
    fn from(v: i32) -> Self {
        Literal::Int(v.into())
    }
}
impl From<f64> for Literal {
    fn from(v: f64) -> Self {
        Literal::Float(v)
    }
}
impl From<bool> for Literal {
    fn from(v: bool) -> Self {
        Literal::Bool(v)
    }
}
impl From<&str> for Literal {
    fn from(v: &str) -> Self {
        Literal::String(v.into())
    }
}
impl From<String> for Literal {
    fn from(v: String) -> Self {
        Literal::String(v)
    }
}
