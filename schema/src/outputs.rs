//! What a node's `run` may return, for any value type (the engine's and the
//! plugin SDK's each add the single-value case for their own `Value`).

/// One value or a tuple of them, in the schema's output order.
pub trait IntoOutputs<V> {
    fn into_outputs(self) -> Vec<V>;
}

impl<V> IntoOutputs<V> for Vec<V> {
    fn into_outputs(self) -> Vec<V> {
        self
    }
}

impl<V> IntoOutputs<V> for () {
    fn into_outputs(self) -> Vec<V> {
        Vec::new()
    }
}

impl<V> IntoOutputs<V> for (V, V) {
    fn into_outputs(self) -> Vec<V> {
        vec![self.0, self.1]
    }
}

impl<V> IntoOutputs<V> for (V, V, V) {
    fn into_outputs(self) -> Vec<V> {
        vec![self.0, self.1, self.2]
    }
}
