//! `driftsweep slurm CONFIG --shards N`: writes a Slurm job array with one task per shard
//! (`driftsweep run CONFIG --shard $SLURM_ARRAY_TASK_ID/N`) and a merge job that runs after
//! every task succeeded (`--dependency=afterok`), and with `--submit` submits both.
//!
//! Written again after a failure, the array lists only the shards that are not finished (a
//! shard is finished when every one of its pairs is, in the sense of resume), so a
//! re-submission reruns those alone, and each of them resumes from its own directory.

use std::path::{Path, PathBuf};

use crate::config::LoadedConfig;
use crate::error::{Error, Result};
use crate::exit;
use crate::shard::{self, Selection, Shard};
use crate::store::Store;

/// What `driftsweep slurm` is asked for (its command-line options).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SlurmOptions {
    /// Number of shards N (array tasks).
    #[arg(long)]
    pub shards: usize,
    /// At most this many tasks at once (`--array=...%K`; default: all).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Merged results directory (default: the file's `output`, else results/<name>); shards
    /// go to `<out>.shards/K-of-N`, the scripts and logs to `<out>.shards/slurm`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Device for the tasks (auto, cpu, cuda, cuda:N, metal, metal:N).
    #[arg(long)]
    pub device: Option<String>,
    /// Generic resources per task, for example gpu:1 (the merge asks for none).
    #[arg(long)]
    pub gres: Option<String>,
    /// Slurm partition of both jobs.
    #[arg(long)]
    pub partition: Option<String>,
    /// Time limit per task (Slurm syntax, for example 04:00:00).
    #[arg(long)]
    pub time: Option<String>,
    /// CPUs per task.
    #[arg(long)]
    pub cpus_per_task: Option<usize>,
    /// Another #SBATCH option for both jobs, as --name=value (repeatable).
    #[arg(long = "sbatch-arg", value_name = "OPTION", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
    /// The driftsweep binary the jobs run (default: this one).
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// Submit the jobs with sbatch after writing them.
    #[arg(long)]
    pub submit: bool,
}

/// What `driftsweep slurm` wrote (and submitted).
#[derive(Debug, Clone)]
pub struct SlurmJobs {
    /// Where the scripts are: `<out>.shards/slurm`.
    pub dir: PathBuf,
    /// The job array script.
    pub array_script: PathBuf,
    /// The merge job script.
    pub merge_script: PathBuf,
    /// The script that submits both.
    pub submit_script: PathBuf,
    /// The shards the array runs (the unfinished ones).
    pub unfinished: Vec<usize>,
    /// The `--array` value, when any shard is unfinished.
    pub array: Option<String>,
    /// What `submit.sh` printed, when `--submit` ran it.
    pub submitted: Option<String>,
}

/// Single-quotes `s` for bash: inside single quotes every character but `'` is literal, and
/// `'` is written as `'\''`, so no value can end the word or start a command.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Why `value` cannot go into a job script as it is: a control character (a newline would end
/// a `#SBATCH` line or a comment and start a command), or a double quote (what an `#SBATCH`
/// value is quoted with). None when it can.
fn unsafe_char(value: &str) -> Option<String> {
    let c = value.chars().find(|c| c.is_control() || *c == '"')?;
    Some(format!(
        "`{}` holds the character {c:?}, which a job script cannot carry safely \
         (a control character would end the line and start a command)",
        value.escape_debug()
    ))
}

/// `--flag=value` for an `#SBATCH` line. sbatch splits these lines at white space and strips
/// double quotes, so a value with white space, `#` or `'` is written in double quotes; one with
/// a control character or a double quote is refused, naming `option` (the sweep file's field or
/// the command-line option it came from).
fn sbatch_line(cfg: &LoadedConfig, option: &str, flag: &str, value: &str) -> Result<String> {
    if let Some(why) = unsafe_char(value) {
        return Err(Error::config(&cfg.path, option, why));
    }
    if value.is_empty() || value.contains(|c: char| c.is_whitespace() || "#'\\".contains(c)) {
        Ok(format!("#SBATCH {flag}=\"{value}\"\n"))
    } else {
        Ok(format!("#SBATCH {flag}={value}\n"))
    }
}

/// A path written into a job script (quoted there): refused, naming `option`, when it holds a
/// character no script can carry safely (it also goes into `#SBATCH` lines and comments).
fn script_path(cfg: &LoadedConfig, option: &str, p: &Path) -> Result<String> {
    let text = p.to_str().ok_or_else(|| {
        Error::config(
            &cfg.path,
            option,
            format!("`{}` is not valid UTF-8", p.display()),
        )
    })?;
    match unsafe_char(text) {
        Some(why) => Err(Error::config(&cfg.path, option, why)),
        None => Ok(text.to_owned()),
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::store(p, format!("cannot make absolute: {e}")))
}

/// `0-3%2`, or `1,3%2` when only some shards are left.
fn array_spec(unfinished: &[usize], n: usize, parallel: usize) -> String {
    let list = if unfinished.len() == n {
        format!("0-{}", n - 1)
    } else {
        unfinished
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    format!("{list}%{parallel}")
}

/// Whether the shard's directory holds every one of its pairs finished. `whole` is the
/// partition computed once for every shard (shard 0's selection); a shard's own record is
/// built from it only for a directory that holds a manifest, so writing N shards costs one
/// partition plus the reading of what is on disk.
fn finished(
    cfg: &LoadedConfig,
    p: &crate::plan::Plan,
    whole: &Selection,
    k: usize,
    dir: &Path,
) -> Result<bool> {
    let Ok(store) = Store::open(dir) else {
        return Ok(false);
    };
    // An unreadable manifest is unfinished: the task's `run` then says what is wrong with it.
    let Ok(m) = store.manifest() else {
        return Ok(false);
    };
    let sel = whole.other(k);
    if m.config_sha256 != cfg.sha256() || m.shard.as_ref() != Some(&sel.info) {
        return Ok(false);
    }
    // Only this shard's pairs are looked up: the whole plan's would make N shards quadratic.
    let own = crate::plan::Plan {
        pairs: sel.pairs(),
        prompts: Default::default(),
        excluded: 0,
        skipped: Default::default(),
        capabilities: Default::default(),
        reference: p.reference,
    };
    let done = crate::sweep::finished_pairs(cfg, &own, &store)?;
    Ok(own.pairs.iter().all(|q| done.contains(&q.id)))
}

/// Writes the job array, the merge job and `submit.sh`; runs `submit.sh` with `submit`.
///
/// Every value is checked before anything is written: a refused one (exit 2, naming its
/// option) leaves no script behind.
pub fn write_jobs(cfg: &LoadedConfig, opts: &SlurmOptions) -> Result<SlurmJobs> {
    let n = opts.shards;
    let parallel = check_options(cfg, opts)?;
    let (_, p) = crate::sweep::prepare(cfg)?;
    let base = absolute(&crate::sweep::output_dir(cfg, opts.out.as_ref()))?;
    let out_option = match (&opts.out, &cfg.config.output) {
        (Some(_), _) => "--out",
        (None, Some(_)) => "output",
        (None, None) => "name",
    };
    script_path(cfg, out_option, &base)?;
    let bin = match &opts.bin {
        Some(b) => absolute(b)?,
        None => std::env::current_exe()
            .map_err(|e| Error::store("driftsweep", format!("cannot find this binary: {e}")))?,
    };
    let root = shard::shards_root(&base);
    let dir = root.join("slurm");
    let jobs = Jobs {
        n,
        bin: quote(&script_path(cfg, "--bin", &bin)?),
        header: header(cfg, n)?,
        common: common_options(cfg, opts)?,
        logs: dir.join("logs"),
    };
    let whole = Selection::for_option(cfg, &p, Shard { index: 0, count: n }, "--shards")?;
    let mut unfinished = Vec::new();
    for k in 0..n {
        let s = Shard { index: k, count: n };
        if !finished(cfg, &p, &whole, k, &shard::shard_dir(&base, s))? {
            unfinished.push(k);
        }
    }
    let array = (!unfinished.is_empty()).then(|| array_spec(&unfinished, n, parallel));
    let array_text = jobs.array_script(cfg, opts, array.as_deref(), &root)?;
    let merge_text = jobs.merge_script(cfg, &base)?;
    std::fs::create_dir_all(&jobs.logs)
        .map_err(|e| Error::store(&jobs.logs, format!("cannot create: {e}")))?;
    let array_script = dir.join("shards.sbatch");
    crate::fsutil::write_atomic(&array_script, array_text.as_bytes())?;
    let merge_script = dir.join("merge.sbatch");
    crate::fsutil::write_atomic(&merge_script, merge_text.as_bytes())?;
    let submit_script = dir.join("submit.sh");
    let text = submit_script_text(&dir, array.is_some());
    crate::fsutil::write_atomic(&submit_script, text.as_bytes())?;
    let submitted = if opts.submit {
        Some(submit(&submit_script)?)
    } else {
        None
    };
    Ok(SlurmJobs {
        dir,
        array_script,
        merge_script,
        submit_script,
        unfinished,
        array,
        submitted,
    })
}

/// Checks the options no sweep file holds; returns the tasks allowed at once.
fn check_options(cfg: &LoadedConfig, opts: &SlurmOptions) -> Result<usize> {
    let n = opts.shards;
    let field = |f: &str, m: String| Error::config(&cfg.path, f, m);
    if n == 0 {
        return Err(field("--shards", "need at least 1 shard".into()));
    }
    let parallel = opts.parallel.unwrap_or(n);
    if parallel == 0 {
        return Err(field("--parallel", "need at least 1 task at a time".into()));
    }
    for a in &opts.sbatch_args {
        let name = a.split_once('=').map_or(a.as_str(), |(name, _)| name);
        let well_formed = name.len() > 2
            && name.starts_with("--")
            && name[2..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !well_formed {
            return Err(field(
                "--sbatch-arg",
                format!(
                    "`{}`: give one sbatch option as --name=value",
                    a.escape_debug()
                ),
            ));
        }
    }
    if let Some(d) = &opts.device
        && let Some(why) = unsafe_char(d)
    {
        return Err(field("--device", why));
    }
    Ok(parallel)
}

/// The first lines of both job scripts: what wrote them, for which sweep.
fn header(cfg: &LoadedConfig, n: usize) -> Result<String> {
    let config = script_path(cfg, "the sweep file's path", &absolute(&cfg.path)?)?;
    Ok(format!(
        "#!/bin/bash\n# Written by `driftsweep slurm` for the sweep `{}` ({config}), {n} shard(s).\n\
         # Run `driftsweep slurm` again after a failure: it lists only the unfinished shards.\n",
        cfg.config.name,
    ))
}

/// The #SBATCH lines both jobs share: working directory, partition, the user's options.
fn common_options(cfg: &LoadedConfig, opts: &SlurmOptions) -> Result<String> {
    let cwd = absolute(Path::new("."))?;
    let cwd = script_path(cfg, "the working directory", &cwd)?;
    let mut common = sbatch_line(cfg, "the working directory", "--chdir", &cwd)?;
    if let Some(v) = &opts.partition {
        common.push_str(&sbatch_line(cfg, "--partition", "--partition", v)?);
    }
    for a in &opts.sbatch_args {
        match a.split_once('=') {
            Some((flag, v)) => common.push_str(&sbatch_line(cfg, "--sbatch-arg", flag, v)?),
            // A flag alone (checked well-formed): nothing else is on the line.
            None => common.push_str(&format!("#SBATCH {a}\n")),
        }
    }
    Ok(common)
}

/// What both job scripts are made of.
struct Jobs {
    /// N, the number of shards.
    n: usize,
    /// The driftsweep binary, quoted for bash.
    bin: String,
    /// [`header`].
    header: String,
    /// [`common_options`].
    common: String,
    /// Where Slurm writes the jobs' output (checked by [`script_path`] with the results
    /// directory it lies in).
    logs: PathBuf,
}

impl Jobs {
    /// `shards.sbatch`: one array task per unfinished shard (`array`, else shard 0).
    fn array_script(
        &self,
        cfg: &LoadedConfig,
        opts: &SlurmOptions,
        array: Option<&str>,
        root: &Path,
    ) -> Result<String> {
        let (n, header, common) = (self.n, &self.header, &self.common);
        let name = &cfg.config.name;
        let config = script_path(cfg, "the sweep file's path", &absolute(&cfg.path)?)?;
        let mut task = String::new();
        if let Some(v) = &opts.gres {
            task.push_str(&sbatch_line(cfg, "--gres", "--gres", v)?);
        }
        if let Some(v) = &opts.time {
            task.push_str(&sbatch_line(cfg, "--time", "--time", v)?);
        }
        if let Some(v) = opts.cpus_per_task {
            task.push_str(&format!("#SBATCH --cpus-per-task={v}\n"));
        }
        let device = opts
            .device
            .as_ref()
            .map_or(String::new(), |d| format!(" --device {}", quote(d)));
        let output = self.logs.join("shard-%a.out");
        let output = sbatch_line(cfg, "--out", "--output", &output.display().to_string())?;
        Ok(format!(
            "{header}#SBATCH --job-name=driftsweep-{name}\n#SBATCH --array={}\n\
             {output}{common}{task}\
             set -u\nk=${{SLURM_ARRAY_TASK_ID:?submit this script with sbatch --array}}\n\
             {} run {} --shard \"$k/{n}\" --out {}/\"$k-of-{n}\" --no-progress{device}\nrc=$?\n\
             # 0 PASS and 1 FAIL: every pair of the shard has its verdict, so the merge may run.\n\
             # Anything else (2 bad input, 3 INCOMPLETE, 130 interrupted) fails the task and\n\
             # holds the merge back until a re-submission finishes the shard.\n\
             case $rc in {} | {}) exit 0 ;; *) exit $rc ;; esac\n",
            array.unwrap_or("0"),
            self.bin,
            quote(&config),
            quote(&root.display().to_string()),
            exit::PASS,
            exit::FAIL,
        ))
    }

    /// `merge.sbatch`: merges every shard's directory into `base`.
    fn merge_script(&self, cfg: &LoadedConfig, base: &Path) -> Result<String> {
        let n = self.n;
        let name = &cfg.config.name;
        // One pass over the shards, each quoted: linear in N.
        let mut shard_dirs = String::new();
        for k in 0..n {
            let dir = shard::shard_dir(base, Shard { index: k, count: n });
            shard_dirs.push(' ');
            shard_dirs.push_str(&quote(&dir.display().to_string()));
        }
        let output = self.logs.join("merge.out");
        let output = sbatch_line(cfg, "--out", "--output", &output.display().to_string())?;
        Ok(format!(
            "{}#SBATCH --job-name=driftsweep-{name}-merge\n{output}\
             {}# Exits with the merged verdict: 0 PASS, 1 FAIL, 3 INCOMPLETE, 2 bad input.\n\
             exec {} merge {}{shard_dirs}\n",
            self.header,
            self.common,
            self.bin,
            quote(&base.display().to_string()),
        ))
    }
}

/// `submit.sh`: submits the array (when any shard is unfinished) and the merge after it.
fn submit_script_text(dir: &Path, any_unfinished: bool) -> String {
    format!(
        "#!/bin/bash\n# Submits the unfinished shards as a job array and the merge after them.\n\
         set -euo pipefail\ncd {}\n{}",
        quote(&dir.display().to_string()),
        if any_unfinished {
            "array=$(sbatch --parsable shards.sbatch)\narray=${array%%;*}\n\
             merge=$(sbatch --parsable --dependency=afterok:\"$array\" merge.sbatch)\n\
             echo \"array job $array\"\necho \"merge job ${merge%%;*}\"\n"
        } else {
            "# Every shard is finished: only the merge is left.\n\
             merge=$(sbatch --parsable merge.sbatch)\necho \"merge job ${merge%%;*}\"\n"
        }
    )
}

/// Runs `submit.sh`; returns what it printed.
fn submit(submit_script: &Path) -> Result<String> {
    let out = std::process::Command::new("bash")
        .arg(submit_script)
        .output()
        .map_err(|e| Error::store(submit_script, format!("cannot run: {e}")))?;
    if !out.status.success() {
        return Err(Error::store(
            submit_script,
            format!(
                "submitting failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_specs_list_only_unfinished_shards() {
        assert_eq!(array_spec(&[0, 1, 2, 3], 4, 2), "0-3%2");
        assert_eq!(array_spec(&[1, 3], 4, 4), "1,3%4");
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
