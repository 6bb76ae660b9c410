//! Exponential moving average of the parameters: the weights that ship.
//!
//! The average is a second set of plain `f32` vectors, not `Var`s, so it is
//! never part of the autograd graph and never touched by the optimizer.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

#[derive(Clone, Debug, PartialEq)]
pub struct Ema {
    decay: f64,
    /// Averaged values by variable name, kept in the trainer's own order.
    pub shadow: BTreeMap<String, Vec<f32>>,
}

fn snapshot(varmap: &VarMap) -> Result<BTreeMap<String, Vec<f32>>, String> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| "variable map lock poisoned".to_string())?;
    data.iter()
        .map(|(k, v)| {
            let vals = v
                .as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| format!("{k}: {e}"))?;
            Ok((k.clone(), vals))
        })
        .collect()
}

impl Ema {
    /// Starts the average at the current parameters.
    pub fn new(varmap: &VarMap, decay: f64) -> Result<Self, String> {
        Ok(Ema {
            decay,
            shadow: snapshot(varmap)?,
        })
    }

    /// The decay used after `step` optimizer steps: `min(decay, (1+step)/(10+step))`.
    ///
    /// The warm-up keeps the first few thousand steps from being dominated by
    /// the random initialisation, which matters for short runs (and tests):
    /// with a fixed 0.9999 the average would still be ~the init after 1000 steps.
    pub fn decay_at(&self, step: u64) -> f64 {
        let s = step as f64;
        self.decay.min((1.0 + s) / (10.0 + s))
    }

    /// Folds the current parameters into the average after `step` steps.
    pub fn update(&mut self, varmap: &VarMap, step: u64) -> Result<(), String> {
        let d = self.decay_at(step) as f32;
        let now = snapshot(varmap)?;
        for (name, cur) in now {
            let avg = self
                .shadow
                .get_mut(&name)
                .ok_or_else(|| format!("EMA has no entry for {name}"))?;
            for (a, c) in avg.iter_mut().zip(&cur) {
                *a = d * *a + (1.0 - d) * c;
            }
        }
        Ok(())
    }

    /// Replaces the average with a saved one, checking names and sizes.
    pub fn restore(&mut self, shadow: BTreeMap<String, Vec<f32>>) -> Result<(), String> {
        if shadow.len() != self.shadow.len() {
            return Err(format!(
                "EMA state has {} tensors, the model has {}",
                shadow.len(),
                self.shadow.len()
            ));
        }
        for (name, cur) in &self.shadow {
            match shadow.get(name) {
                Some(s) if s.len() == cur.len() => {}
                _ => return Err(format!("EMA state for {name} is missing or mis-sized")),
            }
        }
        self.shadow = shadow;
        Ok(())
    }

    /// The averaged weights as a `VarMap` shaped like `like`, for
    /// `checkpoint::save` and for building an EMA network.
    pub fn to_varmap(&self, like: &VarMap) -> Result<VarMap, String> {
        let out = VarMap::new();
        {
            let src = like
                .data()
                .lock()
                .map_err(|_| "variable map lock poisoned".to_string())?;
            let mut dst = out
                .data()
                .lock()
                .map_err(|_| "variable map lock poisoned".to_string())?;
            for (name, var) in src.iter() {
                let vals = self
                    .shadow
                    .get(name)
                    .ok_or_else(|| format!("EMA has no entry for {name}"))?;
                let t = Tensor::from_vec(vals.clone(), var.shape(), &Device::Cpu)
                    .and_then(|t| candle_core::Var::from_tensor(&t))
                    .map_err(|e| format!("{name}: {e}"))?;
                dst.insert(name.clone(), t);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_nn::Init;

    #[test]
    fn averages_with_warmup() {
        let vm = VarMap::new();
        let x = vm
            .get(2, "x", Init::Const(0.0), DType::F32, &Device::Cpu)
            .unwrap();
        let mut ema = Ema::new(&vm, 0.99).unwrap();
        assert_eq!(ema.decay_at(0), 0.1);
        assert_eq!(ema.decay_at(10_000), 0.99);
        vm.data()
            .lock()
            .unwrap()
            .get("x")
            .unwrap()
            .set(&Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap())
            .unwrap();
        ema.update(&vm, 0).unwrap();
        assert_eq!(ema.shadow["x"], vec![0.9, 1.8]);
        let copy = ema.to_varmap(&vm).unwrap();
        let t = copy.data().lock().unwrap()["x"]
            .as_tensor()
            .to_vec1::<f32>();
        assert_eq!(t.unwrap(), vec![0.9, 1.8]);
        assert_eq!(x.to_vec1::<f32>().unwrap(), vec![1.0, 2.0]);
    }
}
