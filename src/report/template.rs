//! Tera plumbing: the custom templates a results directory keeps, their checks, and
//! rendering with a time limit and an output cap.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::Store;

/// Where a results directory keeps a sweep's custom templates, so that `driftsweep report`
/// re-renders with them.
pub const CUSTOM_REPORT_TEMPLATE: &str = crate::store::owner::SAVED_TEMPLATES[0];
/// See [`CUSTOM_REPORT_TEMPLATE`].
pub const CUSTOM_TRACE_TEMPLATE: &str = crate::store::owner::SAVED_TEMPLATES[1];

/// The largest custom template read: a sweep file and what it includes are bounded at a few
/// MiB, so a saved template larger than this was not saved by driftsweep.
pub const MAX_TEMPLATE_BYTES: u64 = 4 << 20;

/// The template `rel` saved in the results directory, or the compiled-in `default`.
pub(crate) fn template_for(store: &Store, rel: &str, default: &str) -> Result<String> {
    let path = store.root().join(rel);
    if path.is_file() {
        let bytes = crate::fsutil::read_regular(&path, MAX_TEMPLATE_BYTES)
            .map_err(|e| Error::store(&path, format!("cannot read the custom template: {e}")))?;
        String::from_utf8(bytes)
            .map_err(|e| Error::store(&path, format!("cannot read the custom template: {e}")))
    } else {
        Ok(default.to_string())
    }
}

/// Checks that `text` parses as a Tera template; the error carries Tera's explanation.
pub fn check_template(text: &str) -> std::result::Result<(), String> {
    let mut tera = tera::Tera::new();
    tera.add_raw_template("custom", text)
        .map(|_| ())
        .map_err(|e| error_chain(&e))
}

pub(crate) fn error_chain(e: &tera::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

/// How long a template may take to render: the built-in ones take milliseconds, and a
/// custom one whose loops never end must not hold the results directory forever.
pub const RENDER_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Renders a Markdown template (no HTML escaping) with `ctx`; errors carry Tera's causes.
pub(crate) fn render_template<T: Serialize>(name: &str, template: &str, ctx: &T) -> Result<String> {
    render_within(name, template, ctx, RENDER_LIMIT)
}

/// The most bytes a rendering may write: far above any real report (a 20,000-pair
/// report.md is a few MB), far below what would exhaust memory. Tera itself caps `range()`
/// at 100,000 elements; with this and the time limit a template's output is bounded.
pub const MAX_RENDER_BYTES: usize = 64 << 20;

/// A rendering's output, refusing to grow past [`MAX_RENDER_BYTES`].
#[derive(Default)]
struct CappedOutput(Vec<u8>);

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_RENDER_BYTES {
            return Err(std::io::Error::other(format!(
                "the rendering grew past {} MiB (a loop that writes without end?)",
                MAX_RENDER_BYTES >> 20
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// [`render_template`] with a time limit: the rendering runs on its own thread, abandoned
/// (it ends with the process) when it takes longer than `limit`.
pub(crate) fn render_within<T: Serialize>(
    name: &str,
    template: &str,
    ctx: &T,
    limit: std::time::Duration,
) -> Result<String> {
    let terr = |e: tera::Error| Error::Template {
        name: name.into(),
        message: error_chain(&e),
    };
    let mut tera = tera::Tera::new();
    tera.autoescape_on(Vec::<&str>::new());
    tera.add_raw_template(name, template).map_err(terr)?;
    let ctx = tera::Context::from_serialize(ctx).map_err(terr)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = name.to_string();
    std::thread::Builder::new()
        .name("render".into())
        .spawn(move || {
            let mut out = CappedOutput::default();
            let rendered = tera
                .render_to(&owned, &ctx, &mut out)
                .map(|()| String::from_utf8_lossy(&out.0).into_owned());
            let _ = tx.send(rendered);
        })
        .map_err(|e| Error::internal(format!("cannot start the renderer: {e}")))?;
    match rx.recv_timeout(limit) {
        Ok(rendered) => rendered.map_err(terr),
        Err(_) => Err(Error::Template {
            name: name.into(),
            message: format!(
                "rendering took longer than {} s (a loop that does not end?)",
                limit.as_secs_f64()
            ),
        }),
    }
}
