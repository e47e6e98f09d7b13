//! Reports: `report.json` (the contract of docs/design.md, "Results on disk"), `report.md`
//! (through the Tera template in `templates/`), `report.html`, `report.junit.xml` and, for a
//! traced sweep, `trace.json` and `trace_report.md`, all built from a results directory alone,
//! so that `driftsweep report DIR` re-renders them without running anything.
//!
//! One typed view ([`ReportJson`], in [`schema`]) built by `aggregate`; renderers in one
//! list ([`RENDERERS`]), each turning the view into one file; one write sequence
//! ([`render`]). A new format is a renderer module and a row in that list. The files below
//! import only their siblings, never this one: `files.rs` holds the file names and what
//! renderers read, `schema.rs` every type of the view.

use std::path::PathBuf;

use crate::error::Result;
use crate::store::Store;
use crate::verdict::GlobalVerdict;

mod aggregate;
mod files;
pub mod html;
mod json;
pub mod junit;
pub mod kl;
mod markdown;
mod numbers;
pub mod paths;
mod plots;
mod reference;
pub mod schema;
mod template;
pub mod trace;

#[cfg(test)]
mod tests;

pub use aggregate::{build, sample, setting_label};
pub use files::{
    Inputs, REPORT_HTML, REPORT_JSON, REPORT_JUNIT, REPORT_MD, Renderer, TRACE_JSON, TRACE_MD,
};
pub use markdown::{REPORT_TEMPLATE, check_render, describe_injection, render_markdown};
pub use schema::{Counts, DriftGroup, PairJson, PerfGroup, ReportJson, RunJson, SweepIdentity};
pub use template::{
    CUSTOM_REPORT_TEMPLATE, CUSTOM_TRACE_TEMPLATE, MAX_RENDER_BYTES, RENDER_LIMIT, check_template,
};

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
        render: json::render,
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

/// Builds the report and writes every file of [`RENDERERS`] into the results directory.
///
/// Every file is rendered (into a temporary beside it) before the first is put in place: a
/// custom template that fails to render must not leave a fresh report.json saying PASS
/// beside a stale report.md. Each file streams to disk, so memory holds one renderer's
/// state at a time, not every file's bytes.
pub fn render(store: &Store) -> Result<Rendered> {
    let mut report = build(store)?;
    let trace = trace::analyse(store, &report)?;
    report.trace = trace.as_ref().map(schema::TraceJson::summary);
    let manifest = store.manifest()?;
    let json_head = json::head(&mut report)?;
    let shown = markdown::summarised(&mut report);
    let inputs = Inputs {
        store,
        manifest: &manifest,
        report: &report,
        shown: &shown,
        json_head: &json_head,
        trace: trace.as_ref(),
    };
    let mut files = Vec::with_capacity(RENDERERS.len());
    for r in RENDERERS {
        let mut f = crate::fsutil::PendingFile::create(&store.path(r.file)?)?;
        if (r.render)(&inputs, f.writer())? {
            files.push(f);
        }
    }
    for f in files {
        f.commit()?;
    }
    Ok(Rendered {
        dir: store.root().to_path_buf(),
        report,
    })
}
