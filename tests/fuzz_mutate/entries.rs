//! Entry points of the results-directory fuzz targets (issue 34, item 6), shared by cargo-fuzz
//! (`fuzz/fuzz_targets/records.rs`) and the mutation fuzzer (`tests/fuzz_mutate.rs`). Each
//! writes the input as one file of a real results directory (made once by a tiny sweep, whole
//! and as two shards), runs the public reader or writer that takes such a directory, and
//! asserts the property that matters for hostile input beyond "no panic": nothing outside the
//! sandbox's directories appears, disappears or changes (ids that are paths like `../x` must
//! not reach the filesystem). The Slurm entry takes options instead, and asserts that every
//! line of the written scripts is one driftsweep writes (no injected command).
#![allow(dead_code)] // each user calls its own subset

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use driftsweep::config::{LoadedConfig, parse};
use driftsweep::shard::Shard;
use driftsweep::sweep::{Silent, SweepOptions, run_sweep};

/// Two prompts, two pairs each: enough units for two shards, and small enough to run in a
/// second.
const SWEEP: &str = r#"
name: fuzzseed
model: builtin:tiny-llama
prompts:
  - id: r6
    random_tokens: 6
  - id: r7
    random_tokens: 7
sweep:
  span: [3]
  dtype: [f32]
  kv_aligned: [true, false]
  seed: [0]
"#;

/// The seed directories: a whole run and its two shards.
pub struct Seeds {
    _tmp: tempfile::TempDir,
    /// The sweep file, parsed (its path lies in the temporary directory).
    pub cfg: LoadedConfig,
    /// The whole run's results directory.
    pub whole: PathBuf,
    /// Shards 0/2 and 1/2.
    pub shards: [PathBuf; 2],
}

/// The seed directories, made on first use.
pub fn seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sweep.yaml");
        std::fs::write(&path, SWEEP).unwrap();
        let cfg = parse(&path, SWEEP).unwrap();
        let whole = tmp.path().join("whole");
        let run = |out: &Path, shard: Option<Shard>| {
            let opts = SweepOptions {
                out: Some(out.to_path_buf()),
                shard,
                ..Default::default()
            };
            run_sweep(&cfg, &opts, &mut Silent).unwrap();
        };
        run(&whole, None);
        let shards = [0, 1].map(|k| tmp.path().join(format!("{k}-of-2")));
        for (k, dir) in shards.iter().enumerate() {
            run(dir, Some(Shard { index: k, count: 2 }));
        }
        Seeds {
            _tmp: tmp,
            cfg,
            whole,
            shards,
        }
    })
}

/// A temporary directory holding copies of results directories and `outside/keep.txt`, the
/// file a path escaping them would reach first.
pub struct Sandbox {
    tmp: tempfile::TempDir,
    names: Vec<String>,
}

const KEEP: &str = "outside/keep.txt";

impl Sandbox {
    /// Copies each `(name, dir)` to `<sandbox>/<name>`.
    pub fn new(dirs: &[(&str, &Path)]) -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("outside")).unwrap();
        std::fs::write(tmp.path().join(KEEP), "keep").unwrap();
        for (name, dir) in dirs {
            copy_dir(dir, &tmp.path().join(name));
        }
        let names = dirs.iter().map(|(n, _)| n.to_string()).collect();
        Sandbox { tmp, names }
    }

    /// `<sandbox>/<name>`.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Panics when anything outside the copied directories (and `extra`, directories a writer
    /// was told to make) appeared, disappeared or changed.
    pub fn assert_untouched(&self, extra: &[&str], what: &str) {
        let mut allowed: Vec<String> = self.names.clone();
        allowed.extend(extra.iter().map(|s| s.to_string()));
        allowed.push("outside".into());
        for e in std::fs::read_dir(self.tmp.path()).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(allowed.contains(&name), "{what}: wrote `{name}` outside");
        }
        let outside: Vec<_> = std::fs::read_dir(self.dir("outside"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(outside.len(), 1, "{what}: touched outside/");
        let keep = std::fs::read(self.tmp.path().join(KEEP));
        assert_eq!(
            keep.ok().as_deref(),
            Some(&b"keep"[..]),
            "{what}: changed {KEEP}"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// The first file (by name) of `dir/sub`, relative to `dir`.
pub fn first_file(dir: &Path, sub: &str) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(sub))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    format!("{sub}/{}", names[0])
}

fn err<T>(r: Result<T, impl ToString>) -> Option<String> {
    r.err().map(|e| e.to_string())
}

/// `data` as `rel` of a copy of the whole run; then `report` and `diff` against itself.
fn whole_with(rel: &str, data: &[u8]) -> Option<String> {
    let sb = Sandbox::new(&[("run", &seeds().whole)]);
    let dir = sb.dir("run");
    std::fs::write(dir.join(rel), data).unwrap();
    let rendered =
        driftsweep::store::Store::open(&dir).and_then(|s| driftsweep::report::render(&s));
    let diffed = driftsweep::diff::diff(&dir, &dir, Default::default());
    sb.assert_untouched(&[], rel);
    err(rendered).or_else(|| err(diffed))
}

/// report.json: read by `diff` and `--baseline`.
pub fn report_json(data: &[u8]) -> Option<String> {
    let sb = Sandbox::new(&[("run", &seeds().whole)]);
    let dir = sb.dir("run");
    std::fs::write(dir.join("report.json"), data).unwrap();
    let r = driftsweep::diff::diff(&dir, &dir, Default::default());
    // Another output directory and `--by-id`: only the reading of report.json is fuzzed.
    let b = driftsweep::diff::check_baseline(&dir, &dir.join("elsewhere"), "fuzz", true);
    sb.assert_untouched(&[], "report.json");
    err(r).or_else(|| err(b))
}

/// manifest.json, rendered by `report`.
pub fn manifest(data: &[u8]) -> Option<String> {
    whole_with("manifest.json", data)
}

/// The first pair record.
pub fn pair_record(data: &[u8]) -> Option<String> {
    let rel = first_file(&seeds().whole, "pairs");
    whole_with(&rel, data)
}

/// The first run record.
pub fn run_record(data: &[u8]) -> Option<String> {
    let rel = first_file(&seeds().whole, "runs");
    whole_with(&rel, data)
}

/// `file` of shard 0 replaced by `data`, then `merge` of both shards into `merged`.
fn merge_with(file: &str, data: &[u8]) -> Option<String> {
    let s = &seeds().shards;
    let sb = Sandbox::new(&[("s0", &s[0]), ("s1", &s[1])]);
    std::fs::write(sb.dir("s0").join(file), data).unwrap();
    let merged = driftsweep::merge::merge(&sb.dir("merged"), &[sb.dir("s0"), sb.dir("s1")]);
    sb.assert_untouched(&["merged"], file);
    err(merged)
}

/// A shard's manifest (its shard plan: every pair of the sweep with its shard), merged.
pub fn shard_plan(data: &[u8]) -> Option<String> {
    merge_with("manifest.json", data)
}

/// A shard's pair record, merged (`merge` copies records by the ids they hold).
pub fn shard_pair_record(data: &[u8]) -> Option<String> {
    let rel = first_file(&seeds().shards[0], "pairs");
    merge_with(&rel, data)
}

/// The unmutated input of each target here: the seed directories' own file.
pub fn seed_input(target: &str) -> Option<Vec<u8>> {
    let s = seeds();
    let file = match target {
        "report_json" => s.whole.join("report.json"),
        "manifest" => s.whole.join("manifest.json"),
        "pair_record" => s.whole.join(first_file(&s.whole, "pairs")),
        "run_record" => s.whole.join(first_file(&s.whole, "runs")),
        "shard_plan" => s.shards[0].join("manifest.json"),
        "shard_pair_record" => s.shards[0].join(first_file(&s.shards[0], "pairs")),
        "slurm_options" => return Some(b"gpu\0gpu:1\x0004:00:00\0--comment=x\0name".to_vec()),
        _ => return None,
    };
    Some(std::fs::read(file).unwrap())
}

/// Lines driftsweep writes into job scripts, by how they start.
const SCRIPT_LINES: [&str; 11] = [
    "#", "set -", "k=", "'", "rc=", "case ", "exec ", "array=", "merge=", "echo ", "cd ",
];

/// Slurm options from `data` (NUL-separated: partition, gres, time, one --sbatch-arg, a name
/// for --out inside the sandbox); every line of the scripts written must be one of
/// [`SCRIPT_LINES`], and every `#SBATCH` value one sbatch word.
pub fn slurm_options(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0').map(str::to_owned);
    let mut next = || parts.next().filter(|s| !s.is_empty());
    let sb = Sandbox::new(&[]);
    let (partition, gres, time, arg) = (next(), next(), next(), next());
    let name = next().unwrap_or_default().replace('/', "_");
    let opts = driftsweep::slurm::SlurmOptions {
        shards: 2,
        partition,
        gres,
        time,
        sbatch_args: arg.into_iter().collect(),
        out: Some(sb.dir("out").join(format!("o{name}"))),
        bin: Some(PathBuf::from("/bin/true")),
        ..Default::default()
    };
    let r = driftsweep::slurm::write_jobs(&seeds().cfg, &opts);
    if let Ok(jobs) = &r {
        for script in [&jobs.array_script, &jobs.merge_script, &jobs.submit_script] {
            let text = std::fs::read_to_string(script).unwrap();
            for line in text.lines() {
                let known = SCRIPT_LINES.iter().any(|p| line.starts_with(p));
                assert!(known, "an unknown line in {}: {line:?}", script.display());
                if let Some(option) = line.strip_prefix("#SBATCH ") {
                    assert!(one_sbatch_word(option), "{line:?} is not one sbatch word");
                }
            }
        }
    }
    sb.assert_untouched(&["out"], "slurm");
    err(r)
}

/// Whether sbatch reads `s` as one word: no white space outside one pair of double quotes.
fn one_sbatch_word(s: &str) -> bool {
    match s.split_once('"') {
        None => !s.contains(char::is_whitespace),
        Some((head, rest)) => {
            !head.contains(char::is_whitespace) && rest.ends_with('"') && {
                let inner = &rest[..rest.len() - 1];
                !inner.contains('"')
            }
        }
    }
}
