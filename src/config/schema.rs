//! The sweep file's YAML schema, exactly as a user writes it. Serde reads it with unknown keys
//! refused; what the fields mean after checking is in [`super::LoadedConfig`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use crate::dtype::RunDtype;
use crate::engine::{Engine, WeightFormat};
use crate::limits::ThresholdsOverride;
use crate::path::RunPath;

/// A sweep file, as written by the user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// Name of the sweep; the default results directory is `results/<name>`.
    pub name: String,
    /// Which model to run. A file with `models:` leaves it out; loading then sets it to the
    /// first of `models` (nothing downstream sees a sweep without a model), and each model's
    /// sub-sweep gets its own (`LoadedConfig::model_sweeps`).
    #[serde(default = "absent_model")]
    pub model: ModelConfig,
    /// Several models, each under an id, instead of `model`: the run makes one sub-sweep
    /// per model (docs/sweep-file.md, "Several models").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<ModelMap>,
    /// `cpu`, `cuda`, `cuda:N`, `metal`, `metal:N` or `auto`.
    #[serde(default)]
    pub device: DeviceSpec,
    /// The prompts, each with a unique id.
    pub prompts: Vec<PromptConfig>,
    /// How the span tokens after the prompt are chosen.
    #[serde(default)]
    pub continuation: ContinuationMode,
    /// The lists whose cartesian product makes the pairs.
    pub sweep: SweepAxes,
    /// Partial matches: a pair matching every key of one entry is dropped.
    #[serde(default)]
    pub exclude: Vec<ExcludeRule>,
    /// Per-dtype overrides of the kv_aligned=true tolerances (keys: f32, bf16, f16; kept as
    /// strings so that error paths can name them).
    #[serde(default, deserialize_with = "unique_map")]
    pub tolerances: BTreeMap<String, ThresholdsOverride>,
    /// Per-dtype overrides of the kv_aligned=false drift budgets.
    #[serde(default, deserialize_with = "unique_map")]
    pub drift_budget: BTreeMap<String, ThresholdsOverride>,
    /// Results directory (relative to the working directory); `--out` overrides it.
    #[serde(default)]
    pub output: Option<PathBuf>,
    /// Keep every run's span logits on disk as safetensors (f32).
    #[serde(default)]
    pub keep_logits: bool,
    /// Layer traces (docs/design.md, "Layer traces").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceConfig>,
    /// A deliberate fault in the decode path: the tool's negative control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject: Option<InjectConfig>,
    /// Custom report templates (Tera), relative to the sweep file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<TemplatesConfig>,
    /// Which span positions are compared, and how the first divergent one is found
    /// (`super::positions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions: Option<super::positions::PositionsConfig>,
    /// What both engine paths are also held against (`super::reference`); absent: the own
    /// decoder's f32 prefill, as the yardstick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<super::reference::ReferenceConfig>,
}

/// `templates:` section: replacements for the compiled-in report templates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplatesConfig {
    /// Replaces `templates/report.md.tera`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<PathBuf>,
    /// Replaces `templates/trace_report.md.tera`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_report: Option<PathBuf>,
}

/// `all`, or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllOr<T> {
    /// Everything.
    All,
    /// These.
    List(Vec<T>),
}

impl<T: Serialize> Serialize for AllOr<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AllOr::All => s.serialize_str("all"),
            AllOr::List(v) => v.serialize(s),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for AllOr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = AllOr<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`all` or a list")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AllOr<T>, E> {
                if v == "all" {
                    Ok(AllOr::All)
                } else {
                    Err(E::custom(format!("expected `all` or a list, found `{v}`")))
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<AllOr<T>, A::Error> {
                Vec::<T>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(AllOr::List)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Which positions a trace records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TracePositions {
    /// Every span position.
    Span,
    /// The last position of the sequence.
    Last,
    /// These absolute positions.
    List(Vec<usize>),
}

impl Serialize for TracePositions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TracePositions::Span => s.serialize_str("span"),
            TracePositions::Last => s.serialize_str("last"),
            TracePositions::List(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for TracePositions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TracePositions;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`span`, `last` or a list of absolute positions")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TracePositions, E> {
                match v {
                    "span" => Ok(TracePositions::Span),
                    "last" => Ok(TracePositions::Last),
                    _ => Err(E::custom(format!(
                        "expected `span`, `last` or a list of positions, found `{v}`"
                    ))),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<TracePositions, A::Error> {
                Vec::<usize>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(TracePositions::List)
            }
        }
        d.deserialize_any(V)
    }
}

/// When pairs are traced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceOn {
    /// Every pair, during its runs.
    #[default]
    Always,
    /// Only pairs whose logits verdict failed, re-run with tracing.
    Failing,
}

/// `trace:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceConfig {
    /// Layers to record.
    pub layers: AllOr<usize>,
    /// Tensors to record.
    pub tensors: AllOr<crate::trace::TensorName>,
    /// Positions to record.
    pub positions: TracePositions,
    /// Which pairs.
    #[serde(default)]
    pub on: TraceOn,
    /// Per-dtype overrides of the NMSE threshold (keys f32, bf16, f16).
    #[serde(default, deserialize_with = "unique_map")]
    pub nmse_threshold: BTreeMap<String, f64>,
}

/// `inject:` section: at least one of a scale fault or a position shift.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectConfig {
    /// Tensor to scale by (1 + epsilon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensor: Option<crate::trace::TensorName>,
    /// Its layer (required for layer tensors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    /// Relative perturbation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// Decode steps believe they are this many positions further along.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_shift: Option<usize>,
    /// Decode steps' sliding-window layers see this many keys more than the window (a
    /// window one key too wide in one path); only for models with a sliding window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_shift: Option<usize>,
    /// Chunked paths: every chunk after the first (a multi-token forward at an offset > 0)
    /// believes it starts this many positions further along; single-token steps and
    /// forwards from an empty cache are untouched, so only chunked prefill can show it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_position_shift: Option<usize>,
    /// Batched paths: row 0 of every batched forward reads row 1's cached K/V at the
    /// newest position before the forward's own (a batch row reading another row's cache
    /// slot); a forward of one sequence is untouched.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cross_row_cache: bool,
    /// Decode runs at this span raise an error instead of running: the control for failure
    /// handling (their pairs must come out INCOMPLETE and the sweep must go on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_span: Option<usize>,
    /// With `models:`: the ids of the models whose sweeps get this fault (the negative
    /// controls); the others run without it. Every model's when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Vec<String>>,
}

impl InjectConfig {
    /// The validated fault.
    pub fn injection(&self) -> crate::trace::Injection {
        crate::trace::Injection {
            scale: match (self.tensor, self.epsilon) {
                (Some(tensor), Some(epsilon)) => Some(crate::trace::ScaleFault {
                    layer: self.layer.unwrap_or(0),
                    tensor,
                    epsilon,
                }),
                _ => None,
            },
            position_shift: self.position_shift.unwrap_or(0),
            window_shift: self.window_shift.unwrap_or(0),
            chunk_position_shift: self.chunk_position_shift.unwrap_or(0),
            cross_row_cache: self.cross_row_cache,
            fail_span: self.fail_span,
        }
    }
}

/// The `device:` of a sweep file. Whether the device exists is decided when the sweep runs
/// (an absent or unbuilt device makes pairs SKIPPED); its spelling is checked here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceSpec {
    /// CUDA, then Metal, then CPU.
    Auto,
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA device N.
    Cuda(usize),
    /// Metal device N.
    Metal(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, ordinal) = match s.split_once(':') {
            Some((k, n)) => match n.parse::<usize>() {
                Ok(n) if k == "cuda" || k == "metal" => (k, n),
                _ => {
                    return Err(format!(
                        "`{s}`: use cpu, auto, cuda, cuda:N, metal or metal:N"
                    ));
                }
            },
            None => (s, 0),
        };
        match kind {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(ordinal)),
            "metal" => Ok(DeviceSpec::Metal(ordinal)),
            _ => Err(format!(
                "unknown device `{s}`: use cpu, auto, cuda, cuda:N, metal or metal:N"
            )),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `model:` section: `{source: ...}`, the source string alone, or `{synthetic: SPEC}` (a
/// checkpoint driftsweep makes, see docs/models.md, "Synthetic checkpoints").
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// `builtin:<name>`, a `.gguf` file, a Hugging Face directory or `hf:<org>/<name>`; for a
    /// synthetic model `synthetic:<architecture>` (a name for messages; the sweep resolves
    /// the spec).
    pub source: String,
    /// The synthetic checkpoint's recipe, when the model is one.
    pub synthetic: Option<super::synthetic::SynthSpec>,
}

impl ModelConfig {
    /// The built-in model: code, with no checkpoint another engine could read.
    pub fn is_builtin(&self) -> bool {
        self.synthetic.is_none() && self.source.starts_with("builtin:")
    }
}

impl SweepConfig {
    /// Every model the file names: `models:`'s, else `model:`.
    pub fn all_models(&self) -> Vec<&ModelConfig> {
        match &self.models {
            Some(map) => map.0.iter().map(|(_, m)| m).collect(),
            None => vec![&self.model],
        }
    }
}

impl Serialize for ModelConfig {
    /// As written: `{source}` or `{synthetic}`, so that the manifest's settings read back.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        match &self.synthetic {
            Some(spec) => m.serialize_entry("synthetic", spec)?,
            None => m.serialize_entry("source", &self.source)?,
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            source: Option<String>,
            synthetic: Option<super::synthetic::SynthSpec>,
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ModelConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a model source string or a map with `source` or `synthetic`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ModelConfig, E> {
                Ok(ModelConfig {
                    source: v.to_string(),
                    synthetic: None,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ModelConfig, A::Error> {
                let full = Full::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                match (full.source, full.synthetic) {
                    (Some(source), None) => Ok(ModelConfig {
                        source,
                        synthetic: None,
                    }),
                    (None, Some(spec)) => Ok(ModelConfig {
                        source: format!("synthetic:{}", spec.architecture),
                        synthetic: Some(spec),
                    }),
                    _ => Err(serde::de::Error::custom(
                        "give exactly one of `source` (a model to load) or `synthetic` (a \
                         checkpoint to make)",
                    )),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `model:` as left out of a file with `models:`: the empty source, which loading replaces
/// (or refuses, when `models:` is missing too) before anything reads it.
fn absent_model() -> ModelConfig {
    // The bare-string form every `ModelConfig` accepts; a string cannot fail it.
    ModelConfig::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(""))
        .expect("a bare source string is a ModelConfig")
}

/// `models:`: model ids (letters, digits, `_`, `-`, `.`) to what `model:` accepts, in file
/// order (the order the sub-sweeps run in). An id given twice is refused.
#[derive(Debug, Clone, Default)]
pub struct ModelMap(pub Vec<(String, ModelConfig)>);

impl ModelMap {
    /// The model of `id`.
    pub fn get(&self, id: &str) -> Option<&ModelConfig> {
        self.0.iter().find(|(i, _)| i == id).map(|(_, m)| m)
    }

    /// Whether `id` names a model.
    pub fn contains(&self, id: &str) -> bool {
        self.get(id).is_some()
    }
}

impl Serialize for ModelMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (id, model) in &self.0 {
            m.serialize_entry(id, model)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for ModelMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ModelMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of model ids to models")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ModelMap, A::Error> {
                let mut out: Vec<(String, ModelConfig)> = Vec::new();
                while let Some(id) = map.next_key::<String>()? {
                    if out.iter().any(|(i, _)| *i == id) {
                        return Err(serde::de::Error::custom(format!(
                            "duplicate model id `{id}`: give each id once"
                        )));
                    }
                    let model = map.next_value()?;
                    out.push((id, model));
                }
                Ok(ModelMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// One prompt: exactly one of `text`, `file` or `random_tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptConfig {
    /// Unique, used in run ids.
    pub id: String,
    /// Text, tokenized by the model's tokenizer. For a `file` prompt, the file's text once
    /// loaded (so the resolved config in the manifest holds what was run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A UTF-8 text file holding the prompt, relative to the sweep file's directory (it may
    /// not leave that directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// A count of seeded uniformly random token ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_tokens: Option<usize>,
}

/// How the S span tokens are chosen (docs/design.md, "Vocabulary"). Always fixed by the seed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContinuationMode {
    /// Sampled (temperature 1) from the model's own f32 distribution.
    #[default]
    Sample,
    /// Argmax of the model's own f32 distribution.
    Greedy,
    /// Uniformly random token ids.
    Random,
}

impl fmt::Display for ContinuationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContinuationMode::Sample => "sample",
            ContinuationMode::Greedy => "greedy",
            ContinuationMode::Random => "random",
        })
    }
}

/// `sweep:` section. Every list must be non-empty.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepAxes {
    /// Span lengths S.
    pub span: Vec<usize>,
    /// Run dtypes.
    pub dtype: Vec<RunDtype>,
    /// kv_aligned values; `true`/`false` and `1`/`0` are accepted.
    #[serde(deserialize_with = "bool_list")]
    pub kv_aligned: Vec<bool>,
    /// Seeds.
    pub seed: Vec<u64>,
    /// Prompt ids to use; all prompts when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Vec<String>>,
    /// Implementations under test; the own decoder alone when absent.
    #[serde(default = "default_engines")]
    pub engine: Vec<Engine>,
    /// Weight formats; dequantized alone when absent.
    #[serde(default = "default_weights")]
    pub weights: Vec<WeightFormat>,
    /// Paths of the run under test (`decode`, `chunked:C`, `batched:B`,
    /// `batched_prefill:B`); decode alone when absent.
    #[serde(default = "default_paths")]
    pub path: Vec<RunPath>,
    /// Model ids to run, of a file with `models:`; every model when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Vec<String>>,
}

fn default_paths() -> Vec<RunPath> {
    vec![RunPath::default()]
}

fn default_engines() -> Vec<Engine> {
    vec![Engine::default()]
}

fn default_weights() -> Vec<WeightFormat> {
    vec![WeightFormat::default()]
}

/// One `exclude` entry: every key given must match for the pair to be dropped.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExcludeRule {
    /// Prompt id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Span length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<usize>,
    /// Dtype.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<RunDtype>,
    /// kv_aligned.
    #[serde(
        default,
        deserialize_with = "opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub kv_aligned: Option<bool>,
    /// Seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
    /// Weight format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<WeightFormat>,
    /// Path of the run under test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<RunPath>,
    /// Model id (a file with `models:`): the rule applies to that model's sub-sweep only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// A YAML boolean that also accepts 0 and 1 (the old tool's kv_aligned=0/1).
#[derive(Deserialize)]
#[serde(untagged)]
enum BoolOrInt {
    Bool(bool),
    Int(i64),
}

impl BoolOrInt {
    fn into_bool<E: serde::de::Error>(self) -> Result<bool, E> {
        match self {
            BoolOrInt::Bool(b) => Ok(b),
            BoolOrInt::Int(0) => Ok(false),
            BoolOrInt::Int(1) => Ok(true),
            BoolOrInt::Int(n) => Err(E::custom(format!(
                "expected true, false, 0 or 1, found {n}"
            ))),
        }
    }
}

fn bool_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<bool>, D::Error> {
    let raw: Vec<serde_yaml::Value> = Vec::deserialize(d)?;
    raw.into_iter().map(value_to_bool::<D::Error>).collect()
}

fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let raw = serde_yaml::Value::deserialize(d)?;
    value_to_bool::<D::Error>(raw).map(Some)
}

fn value_to_bool<E: serde::de::Error>(v: serde_yaml::Value) -> Result<bool, E> {
    match serde_yaml::from_value::<BoolOrInt>(v.clone()) {
        Ok(b) => b.into_bool(),
        Err(_) => Err(E::custom(format!(
            "expected true, false, 0 or 1, found {}",
            serde_yaml::to_string(&v).unwrap_or_default().trim()
        ))),
    }
}

/// A map whose keys are all different: YAML lets a key repeat and the last value win, which
/// would hide a loosened limit behind the one a reader sees first.
fn unique_map<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Unique<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Unique<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!(
                        "duplicate key `{key}`: give each key once"
                    )));
                }
                let value = map.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique(std::marker::PhantomData))
}
