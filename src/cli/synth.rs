//! `driftsweep synth SPEC --out DIR`: writes one synthetic checkpoint for other tools (the
//! same files a sweep's `model: {synthetic: ...}` makes in its cache).

use std::path::PathBuf;

use driftsweep::config::SynthSpec;
use driftsweep::synth::{self, SynthError};
use driftsweep::{Error, exit};

/// Options of `driftsweep synth`.
#[derive(clap::Args)]
pub struct SynthArgs {
    /// The spec: a YAML file of the fields of `model.synthetic` (docs/models.md, "Synthetic
    /// checkpoints").
    spec: PathBuf,
    /// The directory to write: new, empty, or holding a synthetic checkpoint (replaced).
    #[arg(long)]
    out: PathBuf,
}

/// Reads and checks the spec, writes the checkpoint, prints where it is.
pub fn synth(a: SynthArgs) -> Result<i32, Error> {
    let spec = read_spec(&a.spec)?;
    let made = synth::cache::write_into(&spec, &a.out).map_err(|e| match e {
        SynthError::Spec(s) => Error::config(&a.spec, s.field, s.message),
        SynthError::Build(m) => Error::config(&a.spec, "", m),
        SynthError::Io(m) => Error::store(&a.out, m),
    })?;
    outln!(
        "{}: {} ({} files, key {})",
        synth::label(&spec),
        made.model_path.display(),
        made.manifest.files.len() + 1,
        made.manifest.key
    );
    Ok(exit::PASS)
}

/// The spec file parsed; errors name the file, the line and the field.
fn read_spec(path: &std::path::Path) -> Result<SynthSpec, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(path, "", format!("cannot read: {e}")))?;
    let de = serde_yaml::Deserializer::from_str(&text);
    let spec: SynthSpec = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let mut message = inner.to_string();
        // serde_yaml appends " at line L column C"; the location goes in front.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        Error::Config {
            file: path.to_path_buf(),
            location: inner
                .location()
                .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
                .unwrap_or_default(),
            field: if field == "." { String::new() } else { field },
            message,
        }
    })?;
    synth::check::check(&spec).map_err(|s| Error::config(path, s.field, s.message))?;
    Ok(spec)
}
