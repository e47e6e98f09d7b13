//! The sweep file: its YAML schema, parsing with file/line/key errors, and the checks that need
//! no model (empty lists, duplicate ids, unknown prompt references).
//!
//! Checks that need the model (a span longer than its context) live in [`crate::plan`].

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::verdict::{Thresholds, ThresholdsOverride};

/// A sweep file, as written by the user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// Name of the sweep; the default results directory is `results/<name>`.
    pub name: String,
    /// Which model to run.
    pub model: ModelConfig,
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
    #[serde(default)]
    pub tolerances: BTreeMap<String, ThresholdsOverride>,
    /// Per-dtype overrides of the kv_aligned=false drift budgets.
    #[serde(default)]
    pub drift_budget: BTreeMap<String, ThresholdsOverride>,
    /// Results directory (relative to the working directory); `--out` overrides it.
    #[serde(default)]
    pub output: Option<PathBuf>,
    /// Keep every run's span logits on disk as safetensors (f32).
    #[serde(default)]
    pub keep_logits: bool,
    /// Layer traces (DESIGN.md section 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceConfig>,
    /// A deliberate fault in the decode path: the tool's negative control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject: Option<InjectConfig>,
    /// Custom report templates (Tera), relative to the sweep file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<TemplatesConfig>,
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

/// The text of the custom templates a sweep file names, read and syntax-checked at load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomTemplates {
    /// `templates.report`.
    pub report: Option<String>,
    /// `templates.trace_report`.
    pub trace_report: Option<String>,
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
    #[serde(default)]
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
    /// Decode runs at this span raise an error instead of running: the control for failure
    /// handling (their pairs must come out INCOMPLETE and the sweep must go on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_span: Option<usize>,
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

/// `model:` section: `{source: ...}`, or the source string alone.
#[derive(Debug, Clone, Serialize)]
pub struct ModelConfig {
    /// `builtin:<name>` (more sources come with the real-model loaders).
    pub source: String,
}

impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            source: String,
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ModelConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a model source string or a map with `source`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ModelConfig, E> {
                Ok(ModelConfig {
                    source: v.to_string(),
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ModelConfig, A::Error> {
                let full = Full::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(ModelConfig {
                    source: full.source,
                })
            }
        }
        d.deserialize_any(V)
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

/// What the prompt of a pair is made of, after validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptSource {
    /// Tokenized text.
    Text(String),
    /// `n` random ids drawn with the pair's seed.
    RandomTokens(usize),
}

impl PromptConfig {
    /// The validated source of this prompt.
    pub fn source(&self) -> PromptSource {
        match (&self.text, self.random_tokens) {
            (Some(t), _) => PromptSource::Text(t.clone()),
            (None, Some(n)) => PromptSource::RandomTokens(n),
            // `validate` rejects this case before anything calls `source`.
            (None, None) => PromptSource::RandomTokens(0),
        }
    }
}

/// How the S span tokens are chosen (DESIGN.md section 2). Always fixed by the seed.
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

/// The dtype a run computes in. Metrics are always f32 whatever this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunDtype {
    /// IEEE single precision.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

impl RunDtype {
    /// The candle dtype.
    pub fn candle(self) -> candle_core::DType {
        match self {
            RunDtype::F32 => candle_core::DType::F32,
            RunDtype::Bf16 => candle_core::DType::BF16,
            RunDtype::F16 => candle_core::DType::F16,
        }
    }

    /// Short lowercase name, as in run ids.
    pub fn as_str(self) -> &'static str {
        match self {
            RunDtype::F32 => "f32",
            RunDtype::Bf16 => "bf16",
            RunDtype::F16 => "f16",
        }
    }
}

impl fmt::Display for RunDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

/// A parsed and validated sweep file together with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// Its exact bytes, hashed into the manifest.
    pub text: String,
    /// The parsed config (prompt files already read into `text`).
    pub config: SweepConfig,
    /// Custom report templates, read from the files `templates:` names.
    pub templates: CustomTemplates,
    /// (field, bytes) of every file the sweep file pulls in (prompt files, templates): part
    /// of the sweep's identity, since editing one changes what a resumed sweep would run.
    pub included: Vec<(String, Vec<u8>)>,
}

impl LoadedConfig {
    /// sha256 identity of the sweep: the file's bytes and every file it includes. Results
    /// directories are keyed by it (resume reuses only results of the same identity).
    pub fn sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.text.as_bytes());
        for (field, bytes) in &self.included {
            h.update(b"\0");
            h.update(field.as_bytes());
            h.update(b"\0");
            h.update(bytes);
        }
        crate::store::hex(&h.finalize())
    }

    /// The kv_aligned=true tolerance for `dtype`, defaults merged with the file's overrides.
    pub fn tolerance(&self, dtype: RunDtype) -> Thresholds {
        let base = Thresholds::default_tolerance(dtype);
        match self.config.tolerances.get(dtype.as_str()) {
            Some(o) => base.merged(o),
            None => base,
        }
    }

    /// The kv_aligned=false drift budget for `dtype`, defaults merged with the file's overrides.
    pub fn drift_budget(&self, dtype: RunDtype) -> Thresholds {
        let base = Thresholds::default_drift_budget(dtype);
        match self.config.drift_budget.get(dtype.as_str()) {
            Some(o) => base.merged(o),
            None => base,
        }
    }

    /// The fault injected into decode runs (none by default).
    pub fn injection(&self) -> crate::trace::Injection {
        self.config
            .inject
            .as_ref()
            .map(InjectConfig::injection)
            .unwrap_or_default()
    }

    /// The trace NMSE threshold for `dtype`: the default, or the file's override.
    pub fn nmse_threshold(&self, dtype: RunDtype) -> f64 {
        self.config
            .trace
            .as_ref()
            .and_then(|t| t.nmse_threshold.get(dtype.as_str()).copied())
            .unwrap_or_else(|| crate::trace::default_nmse_threshold(dtype))
    }

    /// The prompts the sweep uses, in file order, filtered by `sweep.prompt` when given.
    pub fn selected_prompts(&self) -> Vec<&PromptConfig> {
        match &self.config.sweep.prompt {
            None => self.config.prompts.iter().collect(),
            Some(ids) => self
                .config
                .prompts
                .iter()
                .filter(|p| ids.contains(&p.id))
                .collect(),
        }
    }
}

/// Reads, parses and validates a sweep file.
pub fn load(path: &Path) -> Result<LoadedConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(path, "", format!("cannot read the sweep file: {e}")))?;
    parse(path, &text)
}

/// Parses and validates sweep-file text; `path` is only used in error messages.
pub fn parse(path: &Path, text: &str) -> Result<LoadedConfig> {
    let de = serde_yaml::Deserializer::from_str(text);
    let config: SweepConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let location = inner
            .location()
            .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
            .unwrap_or_default();
        // serde_yaml appends " at line L column C"; the location is already in front.
        let mut message = inner.to_string();
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        // ... and may start with the parent path ("sweep: unknown field"), named already.
        if let Some((head, rest)) = message.split_once(": ")
            && !head.contains(' ')
            && field.starts_with(head)
        {
            message = rest.to_string();
        }
        Error::Config {
            file: path.to_path_buf(),
            location,
            field: if field == "." { String::new() } else { field },
            message,
        }
    })?;
    validate(path, &config)?;
    let mut loaded = LoadedConfig {
        path: path.to_path_buf(),
        text: text.to_string(),
        config,
        templates: CustomTemplates::default(),
        included: Vec::new(),
    };
    load_included(&mut loaded)?;
    Ok(loaded)
}

/// Reads the prompt files and templates the sweep file names. Each must stay inside the sweep
/// file's directory: a results directory should be reproducible from that directory alone,
/// and a shared sweep file must not read arbitrary files.
fn load_included(cfg: &mut LoadedConfig) -> Result<()> {
    let path = cfg.path.clone();
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let read = |field: &str, rel: &Path| -> Result<(String, Vec<u8>)> {
        let e = |m: String| Error::config(&path, field, m);
        if rel.is_absolute() {
            return Err(e(format!(
                "`{}` is absolute: give a path relative to the sweep file's directory",
                rel.display()
            )));
        }
        let full = base.join(rel);
        let canon_base = base.canonicalize().map_err(|x| {
            e(format!(
                "cannot resolve the sweep file's directory `{}`: {x}",
                base.display()
            ))
        })?;
        let canon = full
            .canonicalize()
            .map_err(|x| e(format!("cannot read `{}`: {x}", full.display())))?;
        if !canon.starts_with(&canon_base) {
            return Err(e(format!(
                "`{}` escapes the sweep file's directory `{}`",
                rel.display(),
                canon_base.display()
            )));
        }
        let bytes = std::fs::read(&canon)
            .map_err(|x| e(format!("cannot read `{}`: {x}", full.display())))?;
        let text = String::from_utf8(bytes.clone())
            .map_err(|_| e(format!("`{}` is not UTF-8 text", full.display())))?;
        Ok((text, bytes))
    };
    for i in 0..cfg.config.prompts.len() {
        let Some(rel) = cfg.config.prompts[i].file.clone() else {
            continue;
        };
        let field = format!("prompts[{i}].file");
        let (text, bytes) = read(&field, &rel)?;
        if text.is_empty() {
            return Err(Error::config(
                &path,
                &field,
                format!("`{}` is empty", rel.display()),
            ));
        }
        cfg.config.prompts[i].text = Some(text);
        cfg.included.push((field, bytes));
    }
    if let Some(t) = cfg.config.templates.clone() {
        for (field, rel, slot) in [
            ("templates.report", t.report, &mut cfg.templates.report),
            (
                "templates.trace_report",
                t.trace_report,
                &mut cfg.templates.trace_report,
            ),
        ] {
            let Some(rel) = rel else { continue };
            let (text, bytes) = read(field, &rel)?;
            crate::report::check_template(&text)
                .map_err(|m| Error::config(&path, field, format!("`{}`: {m}", rel.display())))?;
            *slot = Some(text);
            cfg.included.push((field.to_string(), bytes));
        }
    }
    Ok(())
}

/// The checks that need no model.
fn validate(path: &Path, c: &SweepConfig) -> Result<()> {
    let err = |field: &str, msg: String| Err(Error::config(path, field, msg));
    if c.name.trim().is_empty() {
        return err("name", "must not be empty".into());
    }
    // It names the default results directory: no path tricks like `..`.
    if !c.name.starts_with(|ch: char| ch.is_ascii_alphanumeric())
        || !c
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
    {
        return err(
            "name",
            format!(
                "`{}` may only use letters, digits, `_`, `-` and `.`",
                c.name
            ),
        );
    }
    if c.model.source.trim().is_empty() {
        return err("model.source", "must not be empty".into());
    }
    if c.prompts.is_empty() {
        return err(
            "prompts",
            "the list is empty: give at least one prompt".into(),
        );
    }
    let mut seen = HashSet::new();
    for (i, p) in c.prompts.iter().enumerate() {
        let field = format!("prompts[{i}]");
        if p.id.is_empty()
            || !p
                .id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_-".contains(ch))
        {
            return err(
                &format!("{field}.id"),
                format!(
                    "`{}` must be non-empty and use only letters, digits, `_` and `-` (it names files)",
                    p.id
                ),
            );
        }
        if !seen.insert(p.id.as_str()) {
            return err(
                &format!("{field}.id"),
                format!("duplicate prompt id `{}`", p.id),
            );
        }
        let given = [
            p.text.is_some(),
            p.file.is_some(),
            p.random_tokens.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return err(
                &field,
                "give one of `text`, `file` or `random_tokens`, not several".into(),
            );
        }
        match (&p.text, p.random_tokens) {
            (None, None) if p.file.is_none() => {
                return err(&field, "give `text`, `file` or `random_tokens`".into());
            }
            (Some(t), None) if t.is_empty() => {
                return err(&format!("{field}.text"), "must not be empty".into());
            }
            (None, Some(0)) => {
                return err(
                    &format!("{field}.random_tokens"),
                    "must be at least 1".into(),
                );
            }
            _ => {}
        }
    }
    let s = &c.sweep;
    for (name, len) in [
        ("sweep.span", s.span.len()),
        ("sweep.dtype", s.dtype.len()),
        ("sweep.kv_aligned", s.kv_aligned.len()),
        ("sweep.seed", s.seed.len()),
    ] {
        if len == 0 {
            return err(
                name,
                "the list is empty: the sweep would have no pairs".into(),
            );
        }
    }
    if let Some(i) = s.span.iter().position(|&x| x == 0) {
        return err(
            &format!("sweep.span[{i}]"),
            "a span must be at least 1 token".into(),
        );
    }
    check_unique(path, "sweep.span", &s.span)?;
    check_unique(path, "sweep.dtype", &s.dtype)?;
    check_unique(path, "sweep.kv_aligned", &s.kv_aligned)?;
    check_unique(path, "sweep.seed", &s.seed)?;
    if let Some(ids) = &s.prompt {
        if ids.is_empty() {
            return err(
                "sweep.prompt",
                "the list is empty: leave it out to use every prompt".into(),
            );
        }
        check_unique(path, "sweep.prompt", ids)?;
        for (i, id) in ids.iter().enumerate() {
            if !c.prompts.iter().any(|p| &p.id == id) {
                return err(
                    &format!("sweep.prompt[{i}]"),
                    format!("no prompt has id `{id}`"),
                );
            }
        }
    }
    for (i, rule) in c.exclude.iter().enumerate() {
        let field = format!("exclude[{i}]");
        if rule.prompt.is_none()
            && rule.span.is_none()
            && rule.dtype.is_none()
            && rule.kv_aligned.is_none()
            && rule.seed.is_none()
        {
            return err(&field, "an empty rule would drop every pair".into());
        }
        if let Some(p) = &rule.prompt
            && !c.prompts.iter().any(|q| &q.id == p)
        {
            return err(
                &format!("{field}.prompt"),
                format!("no prompt has id `{p}`"),
            );
        }
    }
    let is_dtype = |k: &str| {
        [RunDtype::F32, RunDtype::Bf16, RunDtype::F16]
            .iter()
            .any(|d| d.as_str() == k)
    };
    if let Some(t) = &c.trace {
        for (k, v) in &t.nmse_threshold {
            if !is_dtype(k) {
                return err(
                    &format!("trace.nmse_threshold.{k}"),
                    format!("unknown dtype `{k}`; expected f32, bf16 or f16"),
                );
            }
            if !(v.is_finite() && *v > 0.0) {
                return err(
                    &format!("trace.nmse_threshold.{k}"),
                    format!("{v} must be a finite number > 0"),
                );
            }
        }
        for (name, empty) in [
            (
                "trace.layers",
                matches!(&t.layers, AllOr::List(v) if v.is_empty()),
            ),
            (
                "trace.tensors",
                matches!(&t.tensors, AllOr::List(v) if v.is_empty()),
            ),
            (
                "trace.positions",
                matches!(&t.positions, TracePositions::List(v) if v.is_empty()),
            ),
        ] {
            if empty {
                return err(name, "the list is empty: nothing would be traced".into());
            }
        }
    }
    if let Some(i) = &c.inject {
        match (i.tensor, i.epsilon) {
            (Some(_), None) => {
                return err("inject.epsilon", "a scaled tensor needs `epsilon`".into());
            }
            (None, Some(_)) => {
                return err(
                    "inject.tensor",
                    "`epsilon` needs the `tensor` to scale".into(),
                );
            }
            (None, None) if i.position_shift.unwrap_or(0) == 0 && i.fail_span.is_none() => {
                return err(
                    "inject",
                    "give `tensor` with `epsilon`, a `position_shift` of at least 1, or a \
                     `fail_span`"
                        .into(),
                );
            }
            _ => {}
        }
        if let Some(f) = i.fail_span
            && !c.sweep.span.contains(&f)
        {
            return err(
                "inject.fail_span",
                format!("{f} is not one of `sweep.span`, so no run would fail"),
            );
        }
        if let Some(e) = i.epsilon
            && !(e.is_finite() && e != 0.0)
        {
            return err(
                "inject.epsilon",
                format!("{e} must be a finite non-zero number"),
            );
        }
        if let Some(t) = i.tensor {
            match (t.in_layer(), i.layer) {
                (true, None) => {
                    return err(
                        "inject.layer",
                        format!("`{t}` is a layer tensor: give its layer"),
                    );
                }
                (false, Some(_)) => return err("inject.layer", format!("`{t}` has no layer")),
                _ => {}
            }
        }
    }
    for (section, map) in [
        ("tolerances", &c.tolerances),
        ("drift_budget", &c.drift_budget),
    ] {
        for (dtype, o) in map {
            if !is_dtype(dtype) {
                return err(
                    &format!("{section}.{dtype}"),
                    format!("unknown dtype `{dtype}`; expected f32, bf16 or f16"),
                );
            }
            o.validate()
                .map_err(|(k, m)| Error::config(path, format!("{section}.{dtype}.{k}"), m))?;
        }
    }
    Ok(())
}

fn check_unique<T: PartialEq + fmt::Debug>(path: &Path, field: &str, xs: &[T]) -> Result<()> {
    for (i, x) in xs.iter().enumerate() {
        if xs[..i].contains(x) {
            return Err(Error::config(
                path,
                format!("{field}[{i}]"),
                format!("{x:?} is listed twice"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: t
model: {source: "builtin:tiny-llama"}
prompts:
  - {id: a, text: "hello"}
  - {id: b, random_tokens: 8}
sweep:
  span: [4, 8]
  dtype: [f32, bf16]
  kv_aligned: [0, true]
  seed: [0, 1]
"#;

    fn parse_str(s: &str) -> Result<LoadedConfig> {
        parse(Path::new("t.yaml"), s)
    }

    fn err_of(s: &str) -> String {
        parse_str(s).unwrap_err().to_string()
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse_str(GOOD).unwrap();
        assert_eq!(c.config.sweep.kv_aligned, vec![false, true]);
        assert_eq!(c.config.continuation, ContinuationMode::Sample);
        assert_eq!(c.config.device, DeviceSpec::Cpu);
        assert_eq!(c.selected_prompts().len(), 2);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = err_of(&GOOD.replace("  seed: [0, 1]", "  seed: [0, 1]\n  sede: [2]"));
        assert!(e.starts_with("t.yaml: line 12"), "{e}");
        assert!(e.contains("unknown field `sede`"), "{e}");
        assert!(e.contains("sweep"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key_path() {
        let e = err_of(&GOOD.replace("span: [4, 8]", "span: [4, eight]"));
        assert!(e.contains("sweep.span[1]"), "{e}");
        assert!(e.contains("line 8"), "{e}");
    }

    #[test]
    fn kv_aligned_rejects_two() {
        let e = err_of(&GOOD.replace("kv_aligned: [0, true]", "kv_aligned: [2]"));
        assert!(e.contains("sweep.kv_aligned"), "{e}");
        assert!(e.contains("true, false, 0 or 1"), "{e}");
    }

    #[test]
    fn unknown_dtype_lists_the_known_ones() {
        let e = err_of(&GOOD.replace("[f32, bf16]", "[f32, fp8]"));
        assert!(e.contains("sweep.dtype[1]") && e.contains("fp8"), "{e}");
        assert!(e.contains("bf16") && e.contains("f16"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let cases = [
            (GOOD.replace("span: [4, 8]", "span: []"), "sweep.span"),
            (GOOD.replace("seed: [0, 1]", "seed: []"), "sweep.seed"),
            (
                GOOD.replace("span: [4, 8]", "span: [4, 0]"),
                "sweep.span[1]",
            ),
            (
                GOOD.replace("span: [4, 8]", "span: [4, 4]"),
                "sweep.span[1]",
            ),
            (GOOD.replace("{id: b,", "{id: a,"), "prompts[1].id"),
            (
                GOOD.replace("random_tokens: 8", "random_tokens: 0"),
                "prompts[1].random_tokens",
            ),
            (
                GOOD.replace("{id: b, random_tokens: 8}", "{id: b}"),
                "prompts[1]",
            ),
            (
                GOOD.replace("  seed: [0, 1]", "  seed: [0, 1]\n  prompt: [zz]"),
                "sweep.prompt[0]",
            ),
            (format!("{GOOD}exclude:\n  - {{}}\n"), "exclude[0]"),
            (
                format!("{GOOD}exclude:\n  - {{prompt: zz}}\n"),
                "exclude[0].prompt",
            ),
            (
                format!("{GOOD}tolerances:\n  bf16: {{max_abs_diff: -1}}\n"),
                "tolerances.bf16.max_abs_diff",
            ),
            (GOOD.replace("name: t", "name: 'a/b'"), "name"),
            (GOOD.replace("name: t", "name: '..'"), "name"),
            (
                format!("{GOOD}tolerances:\n  fp8: {{max_abs_diff: 1}}\n"),
                "tolerances.fp8",
            ),
            (format!("{GOOD}device: tpu\n"), "device"),
            (format!("{GOOD}device: 'cuda:x'\n"), "device"),
        ];
        for (text, field) in cases {
            let e = err_of(&text);
            assert!(e.contains(field), "expected `{field}` in: {e}");
            assert!(e.starts_with("t.yaml"), "{e}");
        }
    }

    #[test]
    fn model_may_be_a_bare_source_string() {
        let c = parse_str(&GOOD.replace(
            r#"model: {source: "builtin:tiny-llama"}"#,
            "model: builtin:tiny-llama",
        ))
        .unwrap();
        assert_eq!(c.config.model.source, "builtin:tiny-llama");
        let e = err_of(&GOOD.replace("source:", "sorce:"));
        assert!(
            e.contains("unknown field `sorce`") && e.contains("model"),
            "{e}"
        );
        let e = err_of(&GOOD.replace(r#"model: {source: "builtin:tiny-llama"}"#, "model: 3"));
        assert!(e.contains("a model source string or a map"), "{e}");
    }

    #[test]
    fn trace_and_inject_sections_parse_and_validate() {
        let t = format!(
            "{GOOD}trace:\n  layers: [0, 2]\n  tensors: all\n  positions: last\n  on: failing\ninject:\n  tensor: mlp_out\n  layer: 2\n  epsilon: 0.01\n"
        );
        let c = parse_str(&t).unwrap();
        let tr = c.config.trace.as_ref().unwrap();
        assert_eq!(tr.layers, AllOr::List(vec![0, 2]));
        assert_eq!(tr.tensors, AllOr::All);
        assert_eq!(tr.positions, TracePositions::Last);
        assert_eq!(tr.on, TraceOn::Failing);
        let inj = c.injection();
        assert_eq!(inj.scale.unwrap().layer, 2);
        assert_eq!(
            c.nmse_threshold(RunDtype::F32),
            crate::trace::default_nmse_threshold(RunDtype::F32)
        );
        let shift = parse_str(&format!("{GOOD}inject: {{position_shift: 1}}\n")).unwrap();
        assert_eq!(shift.injection().position_shift, 1);
        assert!(shift.injection().scale.is_none());
        let cases = [
            (
                format!("{GOOD}trace: {{layers: every, tensors: all, positions: span}}\n"),
                "trace.layers",
            ),
            (
                format!("{GOOD}trace: {{layers: all, tensors: [qq], positions: span}}\n"),
                "trace.tensors[0]",
            ),
            (
                format!("{GOOD}trace: {{layers: all, tensors: all, positions: first}}\n"),
                "trace.positions",
            ),
            (
                format!("{GOOD}trace: {{layers: [], tensors: all, positions: span}}\n"),
                "trace.layers",
            ),
            (
                format!(
                    "{GOOD}trace: {{layers: all, tensors: all, positions: span, nmse_threshold: {{f8: 1}}}}\n"
                ),
                "trace.nmse_threshold.f8",
            ),
            (
                format!("{GOOD}inject: {{tensor: mlp_out, epsilon: 0.1}}\n"),
                "inject.layer",
            ),
            (
                format!("{GOOD}inject: {{tensor: mlp_out, layer: 1}}\n"),
                "inject.epsilon",
            ),
            (format!("{GOOD}inject: {{}}\n"), "inject"),
            (
                format!("{GOOD}inject: {{tensor: logits, layer: 1, epsilon: 0.1}}\n"),
                "inject.layer",
            ),
        ];
        for (text, field) in cases {
            let e = err_of(&text);
            assert!(e.contains(field), "expected `{field}` in: {e}");
        }
    }

    #[test]
    fn threshold_key_errors_name_the_dtype() {
        let e = err_of(&format!("{GOOD}tolerances:\n  bf16: {{max_abs: 1}}\n"));
        assert!(e.contains("tolerances.bf16.max_abs"), "{e}");
        assert!(!e.contains('?'), "{e}");
    }

    #[test]
    fn device_specs_parse() {
        for (s, d) in [
            ("cpu", DeviceSpec::Cpu),
            ("auto", DeviceSpec::Auto),
            ("cuda", DeviceSpec::Cuda(0)),
            ("cuda:1", DeviceSpec::Cuda(1)),
            ("metal:0", DeviceSpec::Metal(0)),
        ] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap(), d);
        }
        assert!("cpu:1".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn missing_required_key_is_named() {
        let e = err_of(&GOOD.replace("name: t\n", ""));
        assert!(e.contains("missing field `name`"), "{e}");
    }

    #[test]
    fn yaml_syntax_error_has_a_line() {
        let e = err_of("name: [unclosed\n");
        assert!(e.starts_with("t.yaml: line"), "{e}");
    }
}
