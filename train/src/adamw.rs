//! AdamW over a [`VarMap`], with state that can be exported and restored
//! bit for bit.
//!
//! candle_nn's `AdamW` keeps its moments private, so a resumed run would
//! restart them at zero and diverge from an uninterrupted one. This one keeps
//! the step count and both moments as plain `f32` vectors keyed by variable
//! name: exporting them is a copy, and the update is written out in scalar
//! code so its arithmetic (and hence resume) does not depend on how candle
//! fuses or vectorises tensor ops.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;

/// Hyper-parameters that stay fixed over a run (the learning rate is passed
/// per step so the trainer's schedule owns it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        AdamWParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// The optimizer's whole mutable state.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct AdamWState {
    /// Updates applied so far (the bias corrections depend on it).
    pub step: u64,
    /// First moments, by variable name.
    pub m: BTreeMap<String, Vec<f32>>,
    /// Second moments, by variable name.
    pub v: BTreeMap<String, Vec<f32>>,
}

pub struct AdamW {
    /// Sorted by name so iteration order never depends on `HashMap` hashing.
    vars: Vec<(String, Var)>,
    params: AdamWParams,
    state: AdamWState,
}

fn err(e: candle_core::Error) -> String {
    e.to_string()
}

impl AdamW {
    pub fn new(varmap: &VarMap, params: AdamWParams) -> Result<Self, String> {
        let mut vars: Vec<(String, Var)> = varmap
            .data()
            .lock()
            .map_err(|_| "variable map lock poisoned".to_string())?
            .iter()
            .filter(|(_, v)| v.dtype().is_float())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut state = AdamWState::default();
        for (name, var) in &vars {
            let n = var.elem_count();
            state.m.insert(name.clone(), vec![0.0; n]);
            state.v.insert(name.clone(), vec![0.0; n]);
        }
        Ok(AdamW {
            vars,
            params,
            state,
        })
    }

    pub fn state(&self) -> &AdamWState {
        &self.state
    }

    /// Replaces the state with a saved one; every variable must be present
    /// with its exact size, so a resume file from another model is refused.
    pub fn restore(&mut self, state: AdamWState) -> Result<(), String> {
        for (name, var) in &self.vars {
            for (which, moments) in [("m", &state.m), ("v", &state.v)] {
                match moments.get(name) {
                    Some(x) if x.len() == var.elem_count() => {}
                    Some(x) => {
                        return Err(format!(
                            "optimizer state {which}.{name} has {} values, the model has {}",
                            x.len(),
                            var.elem_count()
                        ))
                    }
                    None => return Err(format!("optimizer state lacks {which}.{name}")),
                }
            }
        }
        if state.m.len() != self.vars.len() || state.v.len() != self.vars.len() {
            return Err(format!(
                "optimizer state has {} tensors, the model has {}",
                state.m.len(),
                self.vars.len()
            ));
        }
        self.state = state;
        Ok(())
    }

    /// One AdamW update at learning rate `lr`:
    /// θ ← θ − lr·(λ·θ + m̂/(√v̂ + ε)), with the bias-corrected moments m̂, v̂.
    ///
    /// The decay is decoupled from the gradient (Loshchilov & Hutter), and is
    /// applied only to tensors of rank ≥ 2: shrinking biases and norm gains
    /// toward zero regularises nothing useful and hurts small models.
    /// Variables without a gradient keep their value and moments.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<(), String> {
        self.state.step += 1;
        let t = self.state.step as i32;
        let AdamWParams {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.params;
        let (b1, b2) = (beta1 as f32, beta2 as f32);
        let c1 = (1.0 / (1.0 - beta1.powi(t))) as f32;
        let c2 = (1.0 / (1.0 - beta2.powi(t))) as f32;
        let (lr32, eps32) = (lr as f32, eps as f32);
        for (name, var) in &self.vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g: Vec<f32> = g.flatten_all().and_then(|g| g.to_vec1()).map_err(err)?;
            let mut theta: Vec<f32> = var
                .as_tensor()
                .flatten_all()
                .and_then(|x| x.to_vec1())
                .map_err(err)?;
            let decay = if var.rank() >= 2 {
                (1.0 - lr * weight_decay) as f32
            } else {
                1.0
            };
            let m = self.state.m.get_mut(name).expect("moments for every var");
            let v = self.state.v.get_mut(name).expect("moments for every var");
            for i in 0..theta.len() {
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let update = (m[i] * c1) / ((v[i] * c2).sqrt() + eps32);
                theta[i] = theta[i] * decay - lr32 * update;
            }
            let next = Tensor::from_vec(theta, var.shape(), &Device::Cpu).map_err(err)?;
            var.set(&next).map_err(err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_nn::Init;

    #[test]
    fn minimises_a_quadratic_and_decays_only_matrices() {
        let varmap = VarMap::new();
        let w = varmap
            .get((2, 2), "w", Init::Const(3.0), DType::F32, &Device::Cpu)
            .unwrap();
        let b = varmap
            .get(2, "b", Init::Const(3.0), DType::F32, &Device::Cpu)
            .unwrap();
        let mut opt = AdamW::new(
            &varmap,
            AdamWParams {
                weight_decay: 0.5,
                ..Default::default()
            },
        )
        .unwrap();
        // First step: m̂ = g, v̂ = g², so the step is lr·sign(g) (plus decay).
        let loss =
            (w.sqr().unwrap().sum_all().unwrap() + b.sqr().unwrap().sum_all().unwrap()).unwrap();
        opt.step(&loss.backward().unwrap(), 0.1).unwrap();
        let wv: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let bv: Vec<f32> = b.to_vec1().unwrap();
        assert!((wv[0] - (3.0 * 0.95 - 0.1)).abs() < 1e-5, "{wv:?}");
        assert!((bv[0] - (3.0 - 0.1)).abs() < 1e-5, "{bv:?}");
        for _ in 0..300 {
            let loss = (w.sqr().unwrap().sum_all().unwrap() + b.sqr().unwrap().sum_all().unwrap())
                .unwrap();
            opt.step(&loss.backward().unwrap(), 0.05).unwrap();
        }
        let wv: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        assert!(wv.iter().all(|x| x.abs() < 0.1), "{wv:?}");
        assert_eq!(opt.state().step, 301);
    }

    #[test]
    fn restore_checks_shapes() {
        let varmap = VarMap::new();
        varmap
            .get(3, "a", Init::Const(1.0), DType::F32, &Device::Cpu)
            .unwrap();
        let mut opt = AdamW::new(&varmap, AdamWParams::default()).unwrap();
        let mut s = opt.state().clone();
        s.m.insert("a".into(), vec![0.0; 2]);
        assert!(opt.restore(s).unwrap_err().contains("m.a has 2 values"));
        let mut s = opt.state().clone();
        s.v.clear();
        assert!(opt.restore(s).unwrap_err().contains("lacks v.a"));
        let mut s = opt.state().clone();
        s.step = 9;
        opt.restore(s.clone()).unwrap();
        assert_eq!(opt.state(), &s);
    }
}
