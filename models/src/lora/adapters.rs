//! The weight change each adapter kind stores — ComfyUI's arithmetic
//! (`comfy/weight_adapter/`), in f32 — and the shape checks that let a file
//! be refused when opened rather than when a weight is patched.

use candle_core::{Result as CResult, Tensor};

/// One factor of a Kronecker product: stored whole or as a low-rank product.
#[derive(Clone, Debug)]
pub(super) enum Factor<T> {
    Full(T),
    Product(T, T),
}

/// The tensors of one adapter.
#[derive(Clone, Debug)]
pub(super) enum Form<T> {
    /// `up [out, r(, 1, 1)] · down [r, in(, kh, kw)]`; with LoCon's Tucker
    /// core `mid [r, r, kh, kw]` (then `down` is `[r, in, 1, 1]`).
    Lora { up: T, down: T, mid: Option<T> },
    /// LoHa: `(w1a·w1b) ⊙ (w2a·w2b)`; with CP cores `t [r, r, kh, kw]`
    /// the `a` factors are stored transposed (`[r, out]`).
    LoHa {
        w1a: T,
        w1b: T,
        w2a: T,
        w2b: T,
        cores: Option<(T, T)>,
    },
    /// LoKr: `w1 ⊗ w2`; a decomposed `w2` may have a Tucker core `t2`
    /// (then `w2a` is stored transposed, `[r, c]`).
    LoKr {
        w1: Factor<T>,
        w2: Factor<T>,
        t2: Option<T>,
    },
    /// The change itself.
    Diff(T),
}

impl<T> Form<T> {
    pub(super) fn try_map<U, E>(
        &self,
        mut f: impl FnMut(&T) -> Result<U, E>,
    ) -> Result<Form<U>, E> {
        let mut factor = |x: &Factor<T>| -> Result<Factor<U>, E> {
            Ok(match x {
                Factor::Full(w) => Factor::Full(f(w)?),
                Factor::Product(a, b) => Factor::Product(f(a)?, f(b)?),
            })
        };
        Ok(match self {
            Form::Lora { up, down, mid } => Form::Lora {
                up: f(up)?,
                down: f(down)?,
                mid: mid.as_ref().map(&mut f).transpose()?,
            },
            Form::LoHa {
                w1a,
                w1b,
                w2a,
                w2b,
                cores,
            } => Form::LoHa {
                w1a: f(w1a)?,
                w1b: f(w1b)?,
                w2a: f(w2a)?,
                w2b: f(w2b)?,
                cores: match cores {
                    Some((t1, t2)) => Some((f(t1)?, f(t2)?)),
                    None => None,
                },
            },
            Form::LoKr { w1, w2, t2 } => {
                let w1 = factor(w1)?;
                let w2 = factor(w2)?;
                Form::LoKr {
                    w1,
                    w2,
                    t2: t2.as_ref().map(f).transpose()?,
                }
            }
            Form::Diff(d) => Form::Diff(f(d)?),
        })
    }
}

type Shape = Vec<usize>;

fn dims2(what: &str, s: &[usize]) -> Result<(usize, usize), String> {
    match s {
        [a, b] => Ok((*a, *b)),
        _ => Err(format!("{what} has shape {s:?}, expected a matrix")),
    }
}

fn core4(what: &str, s: &[usize]) -> Result<[usize; 4], String> {
    <[usize; 4]>::try_from(s)
        .map_err(|_| format!("{what} has shape {s:?}, expected [r, r, kh, kw]"))
}

/// The shape of `tucker(up [o, r], core [r, r', kh, kw], down [r', i])`.
fn tucker_shape(
    o_r: (usize, usize),
    core: [usize; 4],
    r_i: (usize, usize),
) -> Result<Shape, String> {
    if core[0] != o_r.1 || core[1] != r_i.0 {
        return Err(format!(
            "the core {core:?} does not join ranks {} and {}",
            o_r.1, r_i.0
        ));
    }
    Ok(vec![o_r.0, r_i.1, core[2], core[3]])
}

impl Form<Shape> {
    /// The shape of the change and the rank `alpha` is divided by (ComfyUI's
    /// rule: LoRA `down`'s rows, LoHa `w1b`'s; LoKr the rank of `w2` if it
    /// is decomposed, else of `w1` if that is, else none — alpha unused).
    pub(super) fn check(&self) -> Result<(Shape, Option<usize>), String> {
        match self {
            Form::Lora { up, down, mid } => {
                let (out, r_up) = match up.as_slice() {
                    [o, r] | [o, r, 1, 1] => (*o, *r),
                    s => return Err(format!("up has shape {s:?}, expected [out, r(, 1, 1)]")),
                };
                let (r, rest) = match down.as_slice() {
                    [r, rest @ ..] if matches!(rest.len(), 1 | 3) => (*r, rest),
                    s => return Err(format!("down has shape {s:?}, expected [r, in(, kh, kw)]")),
                };
                match mid {
                    None if r_up == r => Ok(([&[out], rest].concat(), Some(r))),
                    None => Err(format!("up {up:?} and down {down:?} disagree on the rank")),
                    Some(mid) => {
                        if rest[1..].iter().any(|&k| k != 1) {
                            return Err(format!("down {down:?} must be 1×1 with a mid core"));
                        }
                        let shape = tucker_shape((out, r_up), core4("mid", mid)?, (r, rest[0]))?;
                        Ok((shape, Some(r)))
                    }
                }
            }
            Form::LoHa {
                w1a,
                w1b,
                w2a,
                w2b,
                cores,
            } => {
                let (a1, b1) = (dims2("hada_w1_a", w1a)?, dims2("hada_w1_b", w1b)?);
                let (a2, b2) = (dims2("hada_w2_a", w2a)?, dims2("hada_w2_b", w2b)?);
                let (m1, m2) = match cores {
                    None => {
                        if a1.1 != b1.0 || a2.1 != b2.0 {
                            return Err(format!(
                                "hada_w1 {w1a:?}·{w1b:?} or hada_w2 {w2a:?}·{w2b:?} disagree on the rank"
                            ));
                        }
                        (vec![a1.0, b1.1], vec![a2.0, b2.1])
                    }
                    Some((t1, t2)) => (
                        tucker_shape((a1.1, a1.0), core4("hada_t1", t1)?, b1)?,
                        tucker_shape((a2.1, a2.0), core4("hada_t2", t2)?, b2)?,
                    ),
                };
                if m1 != m2 {
                    return Err(format!(
                        "the two Hadamard factors differ: {m1:?} and {m2:?}"
                    ));
                }
                Ok((m1, Some(b1.0)))
            }
            Form::LoKr { w1, w2, t2 } => {
                let (w1, r1) = match w1 {
                    Factor::Full(w) => (dims2("lokr_w1", w)?, None),
                    Factor::Product(a, b) => {
                        let (a, b) = (dims2("lokr_w1_a", a)?, dims2("lokr_w1_b", b)?);
                        if a.1 != b.0 {
                            return Err(format!(
                                "lokr_w1_a {a:?} and lokr_w1_b {b:?} disagree on the rank"
                            ));
                        }
                        ((a.0, b.1), Some(b.0))
                    }
                };
                let (w2, r2) = match (w2, t2) {
                    (Factor::Full(w), None) if matches!(w.len(), 2 | 4) => (w.clone(), None),
                    (Factor::Full(w), None) => return Err(format!("lokr_w2 has shape {w:?}")),
                    (Factor::Product(a, b), None) => {
                        let (a, b) = (dims2("lokr_w2_a", a)?, dims2("lokr_w2_b", b)?);
                        if a.1 != b.0 {
                            return Err(format!(
                                "lokr_w2_a {a:?} and lokr_w2_b {b:?} disagree on the rank"
                            ));
                        }
                        (vec![a.0, b.1], Some(b.0))
                    }
                    (Factor::Product(a, b), Some(t)) => {
                        let (a, b) = (dims2("lokr_w2_a", a)?, dims2("lokr_w2_b", b)?);
                        (
                            tucker_shape((a.1, a.0), core4("lokr_t2", t)?, b)?,
                            Some(b.0),
                        )
                    }
                    (Factor::Full(_), Some(_)) => return Err("lokr_t2 without lokr_w2_a/b".into()),
                };
                let mut shape = vec![w1.0 * w2[0], w1.1 * w2[1]];
                shape.extend(&w2[2..]);
                Ok((shape, r2.or(r1)))
            }
            Form::Diff(d) => Ok((d.clone(), None)),
        }
    }
}

/// `t` as a matrix `[dim 0, everything else]`.
fn mat(t: &Tensor) -> CResult<Tensor> {
    t.flatten_from(1)
}

/// `Σ up[o, m] · core[m, n, k, l] · down[n, i]` → `[o, i, k, l]`.
fn tucker(up: &Tensor, core: &Tensor, down: &Tensor) -> CResult<Tensor> {
    let (r, r2, kh, kw) = core.dims4()?;
    let (o, i) = (up.dim(0)?, down.dim(1)?);
    let inner = core
        .permute((0, 2, 3, 1))?
        .contiguous()?
        .reshape((r * kh * kw, r2))?
        .matmul(down)?
        .reshape((r, kh * kw * i))?;
    up.matmul(&inner)?
        .reshape((o, kh, kw, i))?
        .permute((0, 3, 1, 2))?
        .contiguous()
}

/// The Kronecker product of a matrix `[a, b]` and `[c, d, …]`: `[a·c, b·d, …]`.
fn kron(w1: &Tensor, w2: &Tensor) -> CResult<Tensor> {
    let (a, b) = w1.dims2()?;
    let (c, d, rest) = match w2.dims() {
        [c, d, rest @ ..] => (*c, *d, rest.to_vec()),
        _ => return Err(candle_core::Error::Msg("kron of a vector".into())),
    };
    let ones = vec![1; rest.len()];
    let w1 = w1.reshape([&[a, 1, b, 1], ones.as_slice()].concat())?;
    let w2 = w2.reshape([&[1, c, 1, d], rest.as_slice()].concat())?;
    w1.broadcast_mul(&w2)?
        .reshape([&[a * c, b * d], rest.as_slice()].concat())
}

impl Form<Tensor> {
    /// The unscaled change, in the shape [`Form::check`] gives.
    pub(super) fn delta(&self) -> CResult<Tensor> {
        match self {
            Form::Lora {
                up,
                down,
                mid: None,
            } => {
                let shape = [&[up.dim(0)?], &down.dims()[1..]].concat();
                mat(up)?.matmul(&mat(down)?)?.reshape(shape)
            }
            Form::Lora {
                up,
                down,
                mid: Some(mid),
            } => tucker(&mat(up)?, mid, &mat(down)?),
            Form::LoHa {
                w1a,
                w1b,
                w2a,
                w2b,
                cores: None,
            } => w1a.matmul(w1b)? * w2a.matmul(w2b)?,
            Form::LoHa {
                w1a,
                w1b,
                w2a,
                w2b,
                cores: Some((t1, t2)),
            } => tucker(&w1a.t()?, t1, w1b)? * tucker(&w2a.t()?, t2, w2b)?,
            Form::LoKr { w1, w2, t2 } => {
                let w1 = match w1 {
                    Factor::Full(w) => w.clone(),
                    Factor::Product(a, b) => a.matmul(b)?,
                };
                let w2 = match (w2, t2) {
                    (Factor::Full(w), _) => w.clone(),
                    (Factor::Product(a, b), None) => a.matmul(b)?,
                    (Factor::Product(a, b), Some(t)) => tucker(&a.t()?, t, b)?,
                };
                kron(&w1, &w2)
            }
            Form::Diff(d) => Ok(d.clone()),
        }
    }
}
