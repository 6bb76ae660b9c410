//! CONTROL_NET: the value `ControlNetLoader` makes and the
//! `ControlNetApply*` nodes (in [`crate::conditioning`]) read.

use std::sync::Arc;

use weft_core::Object;
use weft_models::controlnet::ControlNet;

/// CONTROL_NET: a loaded ControlNet.
#[derive(Clone, Debug)]
pub struct ControlNetHandle(pub Arc<ControlNet>);

impl Object for ControlNetHandle {
    fn size_bytes(&self) -> usize {
        self.0.size_bytes()
    }
}

impl weft_core::Handle for ControlNetHandle {
    const TYPE: weft_core::ValueType = weft_core::ValueType::ControlNet;
}
