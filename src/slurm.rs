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

/// Single-quotes `s` for bash.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
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

/// Whether the shard's directory holds every one of its pairs finished.
fn finished(
    cfg: &LoadedConfig,
    p: &crate::plan::Plan,
    sel: &Selection,
    dir: &Path,
) -> Result<bool> {
    let Ok(store) = Store::open(dir) else {
        return Ok(false);
    };
    // An unreadable manifest is unfinished: the task's `run` then says what is wrong with it.
    let Ok(m) = store.manifest() else {
        return Ok(false);
    };
    if m.config_sha256 != cfg.sha256() || m.shard.as_ref() != Some(&sel.info) {
        return Ok(false);
    }
    let done = crate::sweep::finished_pairs(cfg, p, &store)?;
    Ok(sel.pairs().iter().all(|q| done.contains(&q.id)))
}

/// Writes the job array, the merge job and `submit.sh`; runs `submit.sh` with `submit`.
pub fn write_jobs(cfg: &LoadedConfig, opts: &SlurmOptions) -> Result<SlurmJobs> {
    let n = opts.shards;
    let parallel = check_options(cfg, opts)?;
    let (_, p) = crate::sweep::prepare(cfg)?;
    let base = absolute(&crate::sweep::output_dir(cfg, opts.out.as_ref()))?;
    let mut unfinished = Vec::new();
    for k in 0..n {
        let s = Shard { index: k, count: n };
        let sel = Selection::new(cfg, &p, s)?;
        if !finished(cfg, &p, &sel, &shard::shard_dir(&base, s))? {
            unfinished.push(k);
        }
    }
    let root = shard::shards_root(&base);
    let dir = root.join("slurm");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)
        .map_err(|e| Error::store(&logs, format!("cannot create: {e}")))?;
    let bin = match &opts.bin {
        Some(b) => absolute(b)?,
        None => std::env::current_exe()
            .map_err(|e| Error::store("driftsweep", format!("cannot find this binary: {e}")))?,
    };
    let jobs = Jobs {
        n,
        bin: quote(&bin.display().to_string()),
        header: header(cfg, n)?,
        common: common_options(opts)?,
        logs,
    };
    let array = (!unfinished.is_empty()).then(|| array_spec(&unfinished, n, parallel));
    let array_script = dir.join("shards.sbatch");
    let text = jobs.array_script(cfg, opts, array.as_deref(), &root)?;
    crate::fsutil::write_atomic(&array_script, text.as_bytes())?;
    let merge_script = dir.join("merge.sbatch");
    let text = jobs.merge_script(&cfg.config.name, &base);
    crate::fsutil::write_atomic(&merge_script, text.as_bytes())?;
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
        if !a.starts_with("--") || a.contains('\n') {
            return Err(field(
                "--sbatch-arg",
                format!("`{a}`: give one sbatch option as --name=value"),
            ));
        }
    }
    Ok(parallel)
}

/// The first lines of both job scripts: what wrote them, for which sweep.
fn header(cfg: &LoadedConfig, n: usize) -> Result<String> {
    let config = absolute(&cfg.path)?;
    Ok(format!(
        "#!/bin/bash\n# Written by `driftsweep slurm` for the sweep `{}` ({}), {n} shard(s).\n\
         # Run `driftsweep slurm` again after a failure: it lists only the unfinished shards.\n",
        cfg.config.name,
        config.display()
    ))
}

/// The #SBATCH lines both jobs share: working directory, partition, the user's options.
fn common_options(opts: &SlurmOptions) -> Result<String> {
    let cwd = absolute(Path::new("."))?;
    let mut common = format!("#SBATCH --chdir={}\n", cwd.display());
    if let Some(v) = &opts.partition {
        common.push_str(&format!("#SBATCH --partition={v}\n"));
    }
    for a in &opts.sbatch_args {
        common.push_str(&format!("#SBATCH {a}\n"));
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
    /// Where Slurm writes the jobs' output.
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
        let config = absolute(&cfg.path)?;
        let mut task = String::new();
        if let Some(v) = &opts.gres {
            task.push_str(&format!("#SBATCH --gres={v}\n"));
        }
        if let Some(v) = &opts.time {
            task.push_str(&format!("#SBATCH --time={v}\n"));
        }
        if let Some(v) = opts.cpus_per_task {
            task.push_str(&format!("#SBATCH --cpus-per-task={v}\n"));
        }
        let device = opts
            .device
            .as_ref()
            .map_or(String::new(), |d| format!(" --device {}", quote(d)));
        Ok(format!(
            "{header}#SBATCH --job-name=driftsweep-{name}\n#SBATCH --array={}\n\
             #SBATCH --output={}/shard-%a.out\n{common}{task}\
             set -u\nk=${{SLURM_ARRAY_TASK_ID:?submit this script with sbatch --array}}\n\
             {} run {} --shard \"$k/{n}\" --out {}/\"$k-of-{n}\" --no-progress{device}\nrc=$?\n\
             # 0 PASS and 1 FAIL: every pair of the shard has its verdict, so the merge may run.\n\
             # Anything else (2 bad input, 3 INCOMPLETE, 130 interrupted) fails the task and\n\
             # holds the merge back until a re-submission finishes the shard.\n\
             case $rc in {} | {}) exit 0 ;; *) exit $rc ;; esac\n",
            array.unwrap_or("0"),
            self.logs.display(),
            self.bin,
            quote(&config.display().to_string()),
            quote(&root.display().to_string()),
            exit::PASS,
            exit::FAIL,
        ))
    }

    /// `merge.sbatch`: merges every shard's directory into `base`.
    fn merge_script(&self, name: &str, base: &Path) -> String {
        let n = self.n;
        let shard_dirs: Vec<String> = (0..n)
            .map(|k| {
                let dir = shard::shard_dir(base, Shard { index: k, count: n });
                quote(&dir.display().to_string())
            })
            .collect();
        format!(
            "{}#SBATCH --job-name=driftsweep-{name}-merge\n#SBATCH --output={}/merge.out\n\
             {}# Exits with the merged verdict: 0 PASS, 1 FAIL, 3 INCOMPLETE, 2 bad input.\n\
             exec {} merge {} {}\n",
            self.header,
            self.logs.display(),
            self.common,
            self.bin,
            quote(&base.display().to_string()),
            shard_dirs.join(" ")
        )
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
