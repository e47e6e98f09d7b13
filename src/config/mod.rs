//! The sweep file: its schema ([`schema`]), reading it ([`load`]), the checks that need no model
//! ([`validate`]), and the resolved, checked value everything downstream uses
//! ([`loaded`], [`LoadedConfig`]).

mod load;
mod loaded;
mod multi;
pub mod positions;
pub mod reference;
pub mod schema;
pub mod synthetic;
mod validate;

pub use load::{
    DEFAULT_MAX_PAIRS, LoadLimits, MAX_INCLUDED_BYTES, MAX_NESTING, MAX_SWEEP_FILE_BYTES, load,
    load_with, parse, parse_with,
};
pub use loaded::{CustomTemplates, LoadedConfig, ModelSweep, Prompt, PromptSource};
pub use positions::{FirstDivergence, PositionsConfig};
pub use reference::{ReferenceConfig, ReferenceDtype, ReferenceEngine};
pub use schema::*;
pub use synthetic::{SynthFormat, SynthSpec};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::RunDtype;
    use crate::error::Result;
    use std::path::Path;

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
