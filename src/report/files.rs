//! The report's files: their names in the results directory, what every renderer reads and
//! how a renderer is listed. Apart from `mod.rs` (which lists the renderers) so that each
//! renderer reads these without importing the list that names it.

use super::schema::{ReportJson, TraceJson};
use crate::error::Result;
use crate::store::Store;

/// What every renderer reads: the report's typed view, the results directory (custom
/// templates, traces) and, for a traced sweep, trace.json's content.
pub struct Inputs<'a> {
    /// The results directory.
    pub store: &'a Store,
    /// report.json's content.
    pub report: &'a ReportJson,
    /// trace.json's content, when the sweep traces.
    pub trace: Option<&'a TraceJson>,
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

/// `value` as the pretty JSON a results directory keeps (as [`Store::write_json`] writes).
pub(crate) fn pretty_json<T: serde::Serialize>(
    store: &Store,
    file: &str,
    value: &T,
) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| crate::Error::store(store.root().join(file), e))
}
