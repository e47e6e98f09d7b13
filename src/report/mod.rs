//! Reports: `report.json` (the contract of docs/design.md, "Results on disk"), `report.md`
//! (through the Tera template in `templates/`), `report.html`, `report.junit.xml` and, for a
//! traced sweep, `trace.json` and `trace_report.md`, all built from a results directory alone,
//! so that `driftsweep report DIR` re-renders them without running anything.
//!
//! One typed view ([`ReportJson`], in [`schema`]) built by [`aggregate`]; renderers in one
//! list ([`RENDERERS`]), each turning the view into one file; one write sequence
//! ([`render`]). A new format is a renderer module and a row in that list.

use std::path::PathBuf;

use crate::error::Result;
use crate::store::Store;
use crate::verdict::GlobalVerdict;

mod aggregate;
pub mod html;
pub mod junit;
pub mod kl;
mod markdown;
pub mod paths;
mod plots;
pub mod schema;
mod template;
pub mod trace;

#[cfg(test)]
mod tests;

pub(crate) use crate::verdict::fmt_num;
pub use aggregate::{build, sample, setting_label};
pub(crate) use aggregate::{compared, mean};
pub(crate) use markdown::{PathSection, axes, path_sections, secs};
pub use markdown::{REPORT_TEMPLATE, check_render, describe_injection, render_markdown};
pub use schema::{Counts, DriftGroup, PairJson, PerfGroup, ReportJson, RunJson, SweepIdentity};
pub use template::{
    CUSTOM_REPORT_TEMPLATE, CUSTOM_TRACE_TEMPLATE, MAX_RENDER_BYTES, RENDER_LIMIT, check_template,
};
pub(crate) use template::{error_chain, render_template, template_for};

/// What rendering produced.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The results directory.
    pub dir: PathBuf,
    /// The report's content.
    pub report: ReportJson,
}

impl Rendered {
    /// The global verdict.
    pub fn verdict(&self) -> GlobalVerdict {
        self.report.verdict
    }
}

/// What every renderer reads: the report's typed view, the results directory (custom
/// templates, traces) and, for a traced sweep, trace.json's content.
pub struct Inputs<'a> {
    /// The results directory.
    pub store: &'a Store,
    /// report.json's content.
    pub report: &'a ReportJson,
    /// trace.json's content, when the sweep traces.
    pub trace: Option<&'a trace::TraceJson>,
}

/// One file of the report: its name in the results directory and how it is rendered.
#[derive(Clone, Copy)]
pub struct Renderer {
    /// The file's name, at the top of the results directory.
    pub file: &'static str,
    /// Its bytes; `None` when this sweep has no such file (trace.json of an untraced sweep).
    pub render: fn(&Inputs) -> Result<Option<Vec<u8>>>,
}

/// report.json.
pub const REPORT_JSON: &str = "report.json";
/// report.md.
pub const REPORT_MD: &str = "report.md";
/// report.html.
pub const REPORT_HTML: &str = "report.html";
/// report.junit.xml.
pub const REPORT_JUNIT: &str = "report.junit.xml";
/// trace.json.
pub const TRACE_JSON: &str = "trace.json";
/// trace_report.md.
pub const TRACE_MD: &str = "trace_report.md";

/// Every renderer, in the order their files are written.
pub const RENDERERS: &[Renderer] = &[
    Renderer {
        file: TRACE_JSON,
        render: trace::render_json,
    },
    Renderer {
        file: TRACE_MD,
        render: trace::render_markdown,
    },
    Renderer {
        file: REPORT_JSON,
        render: |i| pretty_json(i.store, REPORT_JSON, i.report).map(Some),
    },
    Renderer {
        file: REPORT_MD,
        render: markdown::render_file,
    },
    Renderer {
        file: REPORT_HTML,
        render: html::render_file,
    },
    Renderer {
        file: REPORT_JUNIT,
        render: junit::render_file,
    },
];

/// The names of every file the report writes ([`RENDERERS`]' files, in their order).
pub const FILES: [&str; RENDERERS.len()] = {
    let mut out = [""; RENDERERS.len()];
    let mut i = 0;
    while i < RENDERERS.len() {
        out[i] = RENDERERS[i].file;
        i += 1;
    }
    out
};

/// `value` as the pretty JSON a results directory keeps (as [`Store::write_json`] writes).
fn pretty_json<T: serde::Serialize>(store: &Store, file: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| crate::Error::store(store.root().join(file), e))
}

/// Builds the report and writes every file of [`RENDERERS`] into the results directory.
///
/// Every file is rendered before the first is written: a custom template that fails to
/// render must not leave a fresh report.json saying PASS beside a stale report.md.
pub fn render(store: &Store) -> Result<Rendered> {
    let mut report = build(store)?;
    let trace = trace::analyse(store, &report)?;
    report.trace = trace.as_ref().map(trace::TraceJson::summary);
    let inputs = Inputs {
        store,
        report: &report,
        trace: trace.as_ref(),
    };
    let mut files = Vec::with_capacity(RENDERERS.len());
    for r in RENDERERS {
        if let Some(bytes) = (r.render)(&inputs)? {
            files.push((r.file, bytes));
        }
    }
    for (file, bytes) in files {
        store.write_bytes(file, &bytes)?;
    }
    Ok(Rendered {
        dir: store.root().to_path_buf(),
        report,
    })
}
