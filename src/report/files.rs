//! The report's files: their names in the results directory, what every renderer reads and
//! how a renderer is listed. Apart from `mod.rs` (which lists the renderers) so that each
//! renderer reads these without importing the list that names it.

use std::io::Write;

use super::schema::{ReportJson, TraceJson};
use crate::error::Result;
use crate::store::{Manifest, Store};

/// What every renderer reads: the report's typed view, the results directory (custom
/// templates, traces, the records of the pairs drawn) and, for a traced sweep, trace.json's
/// content.
pub struct Inputs<'a> {
    /// The results directory.
    pub store: &'a Store,
    /// Its manifest (the limits a pair read again is judged by).
    pub manifest: &'a Manifest,
    /// report.json's content, its pairs without their per-position series.
    pub report: &'a ReportJson,
    /// The same with the pairs the tables of report.md and report.html list: every pair up
    /// to a bound, else those with the least headroom.
    pub shown: &'a ReportJson,
    /// report.json's text without its pairs, which are written from the records.
    pub json_head: &'a str,
    /// trace.json's content, when the sweep traces.
    pub trace: Option<&'a TraceJson>,
}

/// One file of the report: its name in the results directory and how it is rendered.
#[derive(Clone, Copy)]
pub struct Renderer {
    /// The file's name, at the top of the results directory.
    pub file: &'static str,
    /// Writes its bytes into the writer; false when this sweep has no such file (trace.json
    /// of an untraced sweep). Streamed: report.json of 100,000 pairs is never one buffer.
    pub render: fn(&Inputs, &mut dyn Write) -> Result<bool>,
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

/// Writes `value` as the pretty JSON a results directory keeps (as [`Store::write_json`]
/// writes), streaming.
pub(crate) fn pretty_json<T: serde::Serialize>(
    store: &Store,
    file: &str,
    value: &T,
    w: &mut dyn Write,
) -> Result<bool> {
    serde_json::to_writer_pretty(w, value)
        .map_err(|e| crate::Error::store(store.root().join(file), e))?;
    Ok(true)
}

/// Writes a rendered text, naming `file` on error.
pub(crate) fn write_text(store: &Store, file: &str, text: &str, w: &mut dyn Write) -> Result<bool> {
    w.write_all(text.as_bytes())
        .map_err(|e| crate::Error::store(store.root().join(file), format!("cannot write: {e}")))?;
    Ok(true)
}
