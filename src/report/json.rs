//! report.json, streamed: the summary serialized once without its pairs, then each pair
//! read again from its records ([`read_pair`]) and written in report order, so that memory
//! holds one pair's per-position series at a time, never every pair's. The text is the one
//! `serde_json::to_writer_pretty` writes of the whole report.

use std::io::Write;

use super::aggregate::read_pair;
use super::files::{Inputs, REPORT_JSON};
use super::schema::ReportJson;
use crate::error::{Error, Result};

/// Where the pairs go in the summary's text: the top level is indented by two spaces, so
/// no nested `pairs` (of `counts`, of `shard`) matches.
const PAIRS_SLOT: &str = "\n  \"pairs\": []";

/// report.json's text without its pairs (`"pairs": []`). The pairs are taken out for the
/// serialization and put back.
pub(crate) fn head(report: &mut ReportJson) -> Result<String> {
    let pairs = std::mem::take(&mut report.pairs);
    let text = serde_json::to_string_pretty(report);
    report.pairs = pairs;
    text.map_err(|e| Error::store(REPORT_JSON, e))
}

/// Writes report.json: [`head`]'s text with every pair of the report, whole, in its place.
pub(crate) fn render(i: &Inputs, w: &mut dyn Write) -> Result<bool> {
    let path = i.store.root().join(REPORT_JSON);
    let io = |e: std::io::Error| Error::store(&path, format!("cannot write: {e}"));
    let Some(at) = i.json_head.find(PAIRS_SLOT) else {
        return Err(Error::store(&path, "the summary has no top-level `pairs`"));
    };
    let (before, after) = i.json_head.split_at(at + PAIRS_SLOT.len() - 1);
    w.write_all(before.as_bytes()).map_err(io)?;
    for (n, slim) in i.report.pairs.iter().enumerate() {
        let (pair, _, _) = read_pair(i.store, i.manifest, &slim.spec)?;
        if pair.verdict != slim.verdict {
            return Err(Error::store(
                i.store.root().join(format!("pairs/{}.json", slim.spec.id)),
                "changed while the report was written: render the report again",
            ));
        }
        let text = serde_json::to_string_pretty(&pair).map_err(|e| Error::store(&path, e))?;
        // One level deeper than the pretty text of a pair alone; a JSON string holds no
        // raw newline, so every newline is the formatter's.
        let sep = if n == 0 { "\n    " } else { ",\n    " };
        w.write_all(sep.as_bytes()).map_err(io)?;
        w.write_all(text.replace('\n', "\n    ").as_bytes())
            .map_err(io)?;
    }
    if !i.report.pairs.is_empty() {
        w.write_all(b"\n  ").map_err(io)?;
    }
    w.write_all(after.as_bytes()).map_err(io)?;
    Ok(true)
}
