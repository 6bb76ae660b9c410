//! Node schemas, with the same vocabulary and builders as weft's own.

/// weft's edge types (ComfyUI's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    Int,
    Float,
    Bool,
    String,
    Image,
    Latent,
    Conditioning,
    Noise,
    Sigmas,
    Mask,
    Model,
    Clip,
    Vae,
    ControlNet,
    Guider,
    Sampler,
    Classifier,
}

impl ValueType {
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Int => "INT",
            ValueType::Float => "FLOAT",
            ValueType::Bool => "BOOLEAN",
            ValueType::String => "STRING",
            ValueType::Image => "IMAGE",
            ValueType::Latent => "LATENT",
            ValueType::Conditioning => "CONDITIONING",
            ValueType::Noise => "NOISE",
            ValueType::Sigmas => "SIGMAS",
            ValueType::Mask => "MASK",
            ValueType::Model => "MODEL",
            ValueType::Clip => "CLIP",
            ValueType::Vae => "VAE",
            ValueType::ControlNet => "CONTROL_NET",
            ValueType::Guider => "GUIDER",
            ValueType::Sampler => "SAMPLER",
            ValueType::Classifier => "CLASSIFIER",
        }
    }
}

/// A scalar default.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Literal {
    Int(i64),
    Float(f64),
    Bool(bool),
    String(String),
}

impl From<i64> for Literal {
    fn from(v: i64) -> Self {
        Literal::Int(v)
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

#[derive(Clone, Debug)]
pub struct InputSpec {
    pub(crate) name: String,
    pub(crate) ty: ValueType,
    pub(crate) required: bool,
    pub(crate) default: Option<Literal>,
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
    pub(crate) step: Option<f64>,
    pub(crate) choices: Vec<String>,
    pub(crate) doc: String,
}

impl InputSpec {
    pub fn of(name: &str, ty: ValueType) -> Self {
        InputSpec {
            name: name.into(),
            ty,
            required: true,
            default: None,
            min: None,
            max: None,
            step: None,
            choices: Vec::new(),
            doc: String::new(),
        }
    }
    pub fn int(name: &str) -> Self {
        Self::of(name, ValueType::Int)
    }
    pub fn float(name: &str) -> Self {
        Self::of(name, ValueType::Float)
    }
    pub fn bool(name: &str) -> Self {
        Self::of(name, ValueType::Bool)
    }
    pub fn string(name: &str) -> Self {
        Self::of(name, ValueType::String)
    }
    /// A string restricted to `choices`; the first is the default.
    pub fn choice(name: &str, choices: &[&str]) -> Self {
        let mut spec = Self::string(name);
        spec.choices = choices.iter().map(|c| c.to_string()).collect();
        spec.default = choices.first().map(|c| Literal::from(*c));
        spec.required = false;
        spec
    }
    /// Sets a default, which also makes the input optional. Ints given to a
    /// FLOAT input become floats.
    #[allow(private_bounds)]
    pub fn default(mut self, value: impl Into<Literal>) -> Self {
        let value = match (value.into(), self.ty) {
            (Literal::Int(i), ValueType::Float) => Literal::Float(i as f64),
            (v, _) => v,
        };
        self.default = Some(value);
        self.required = false;
        self
    }
    /// Optional with no default: the node sees it as absent.
    pub fn optional(mut self) -> Self {
        self.required = false;
        self
    }
    pub fn min(mut self, min: f64) -> Self {
        self.min = Some(min);
        self
    }
    pub fn max(mut self, max: f64) -> Self {
        self.max = Some(max);
        self
    }
    pub fn range(self, min: f64, max: f64) -> Self {
        self.min(min).max(max)
    }
    pub fn step(mut self, step: f64) -> Self {
        self.step = Some(step);
        self
    }
    pub fn doc(mut self, doc: &str) -> Self {
        self.doc = doc.into();
        self
    }
}

#[derive(Clone, Debug)]
pub(crate) struct OutputSpec {
    pub(crate) name: String,
    pub(crate) ty: ValueType,
    pub(crate) doc: String,
}

/// What a node type accepts and produces; weft checks it at load time like
/// a built-in's and lists it in `weft nodes`.
#[derive(Clone, Debug)]
pub struct NodeSchema {
    pub(crate) type_name: String,
    pub(crate) category: String,
    pub(crate) doc: String,
    pub(crate) inputs: Vec<InputSpec>,
    pub(crate) outputs: Vec<OutputSpec>,
    pub(crate) output_node: bool,
    pub(crate) deterministic: bool,
    pub(crate) heavy: bool,
}

impl NodeSchema {
    pub fn new(type_name: &str, category: &str, doc: &str) -> Self {
        NodeSchema {
            type_name: type_name.into(),
            category: category.into(),
            doc: doc.into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            output_node: false,
            deterministic: true,
            heavy: false,
        }
    }
    pub fn input(mut self, spec: InputSpec) -> Self {
        self.inputs.push(spec);
        self
    }
    pub fn output(mut self, name: &str, ty: ValueType, doc: &str) -> Self {
        self.outputs.push(OutputSpec {
            name: name.into(),
            ty,
            doc: doc.into(),
        });
        self
    }
    /// Marks a node with side effects, which runs target.
    pub fn output_node(mut self) -> Self {
        self.output_node = true;
        self
    }
    /// Marks a node whose result changes from run to run (never cached).
    pub fn nondeterministic(mut self) -> Self {
        self.deterministic = false;
        self
    }
    /// Marks a node that uses all the threads it is given.
    pub fn heavy(mut self) -> Self {
        self.heavy = true;
        self
    }
    pub fn type_name(&self) -> &str {
        &self.type_name
    }
    pub(crate) fn input_index(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|i| i.name == name)
    }
}
