//! Generated job scripts, sizes and result files under hostile input (issue 34, items 3–5 and
//! 7): every value written into a Slurm script is quoted for its context or refused naming its
//! option (and the script, run with a stand-in binary, runs exactly one command with exactly
//! the arguments given); chunk and batch sizes near 2^64 or past the memory are refused at plan
//! time with exit 2, never a panic or an abort; a result file that is a FIFO or gigabytes long
//! is refused unread; messages name what the user wrote.

use std::path::{Path, PathBuf};
use std::process::Command;

use driftsweep::exit;

mod common;
use common::{code, run, stderr, text};

const SWEEP: &str = r#"
name: limits
model: builtin:tiny-llama
prompts:
  - id: r8
    random_tokens: 8
  - id: r9
    random_tokens: 9
sweep:
  span: [4]
  dtype: [f32]
  kv_aligned: [true, false]
  seed: [0]
"#;

fn setup(sweep: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = common::write(tmp.path(), "sweep.yaml", sweep);
    (tmp, cfg)
}

/// `slurm CFG --shards 2 --out OUT` plus `extra`.
fn slurm(cfg: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "slurm",
        cfg.to_str().unwrap(),
        "--shards",
        "2",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

fn scripts_dir(out: &Path) -> PathBuf {
    PathBuf::from(format!("{}.shards/slurm", out.display()))
}

/// A refusal: exit 2, the option named, and no script written.
fn assert_refused(o: &std::process::Output, option: &str, out: &Path) {
    assert_eq!(code(o), exit::BAD_INPUT, "{}", text(o));
    assert!(stderr(o).contains(&format!("`{option}`")), "{}", text(o));
    assert!(
        !scripts_dir(out).exists(),
        "a refused value left scripts behind"
    );
}

#[test]
fn a_newline_in_a_slurm_option_is_refused_naming_it() {
    let (tmp, cfg) = setup(SWEEP);
    let out = tmp.path().join("out");
    for (option, value) in [
        ("--partition", "gpu\necho pwned"),
        ("--gres", "gpu:1\necho pwned"),
        ("--time", "04:00:00\recho"),
        ("--partition", "a\"b"),
    ] {
        let o = slurm(&cfg, &out, &[option, value]);
        assert_refused(&o, option, &out);
    }
    let o = slurm(&cfg, &out, &["--sbatch-arg", "--comment=x\necho pwned"]);
    assert_refused(&o, "--sbatch-arg", &out);
    let o = run(&[
        "slurm",
        cfg.to_str().unwrap(),
        "--shards",
        "2",
        "--out",
        &format!("{}/a\nb", tmp.path().display()),
    ]);
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
    assert!(stderr(&o).contains("`--out`"), "{}", text(&o));
    // Negative control: the same options without the newline are written.
    let o = slurm(&cfg, &out, &["--partition", "gpu", "--time", "04:00:00"]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    let array = std::fs::read_to_string(scripts_dir(&out).join("shards.sbatch")).unwrap();
    assert!(array.contains("#SBATCH --partition=gpu\n"), "{array}");
}

#[test]
fn a_newline_in_the_sweep_files_output_or_name_is_refused() {
    let (tmp, _) = setup(SWEEP);
    let cfg = common::write(
        tmp.path(),
        "out.yaml",
        &format!(
            "{SWEEP}output: \"{}/x\\necho pwned\"\n",
            tmp.path().display()
        ),
    );
    let o = run(&["slurm", cfg.to_str().unwrap(), "--shards", "2"]);
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
    assert!(stderr(&o).contains("`output`"), "{}", text(&o));
    // The sweep file's own path goes into the scripts' comments and commands.
    let named = common::write(tmp.path(), "a\nb.yaml", SWEEP);
    let out = tmp.path().join("named");
    let o = slurm(&named, &out, &[]);
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
    assert!(stderr(&o).contains("the sweep file's path"), "{}", text(&o));
}

/// A stand-in for driftsweep that writes its arguments, one per line, to `log`.
fn stand_in(dir: &Path, log: &Path) -> PathBuf {
    let bin = dir.join("fake driftsweep");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/bash\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> '{}'\n",
            log.display()
        ),
    )
    .unwrap();
    let made = Command::new("chmod").arg("+x").arg(&bin).status().unwrap();
    assert!(made.success());
    bin
}

#[test]
fn quotes_and_spaces_in_paths_stay_one_argument_in_the_scripts() {
    let (tmp, cfg) = setup(SWEEP);
    let out = tmp.path().join("o'x; touch PWNED; 'y z");
    let log = tmp.path().join("args.log");
    let bin = stand_in(tmp.path(), &log);
    let o = slurm(
        &cfg,
        &out,
        &[
            "--bin",
            bin.to_str().unwrap(),
            "--gres",
            "gpu:1 --wrap=x",
            "--device",
            "cpu",
        ],
    );
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    let dir = scripts_dir(&out);
    let array = std::fs::read_to_string(dir.join("shards.sbatch")).unwrap();
    // sbatch splits #SBATCH lines at white space: a value with one is one quoted word.
    assert!(
        array.contains("#SBATCH --gres=\"gpu:1 --wrap=x\"\n"),
        "{array}"
    );
    for script in ["shards.sbatch", "merge.sbatch", "submit.sh"] {
        let checked = Command::new("bash")
            .arg("-n")
            .arg(dir.join(script))
            .status()
            .unwrap();
        assert!(checked.success(), "{script} is not valid bash");
    }
    // Run both job scripts with the stand-in: one command each, the paths whole.
    for script in ["shards.sbatch", "merge.sbatch"] {
        let ran = Command::new("bash")
            .arg(dir.join(script))
            .current_dir(tmp.path())
            .env("SLURM_ARRAY_TASK_ID", "1")
            .status()
            .unwrap();
        assert!(ran.success(), "{script} failed");
    }
    let args = std::fs::read_to_string(&log).unwrap();
    let args: Vec<&str> = args.lines().collect();
    let shards = format!("{}.shards", out.display());
    let mut want = vec!["run", cfg.to_str().unwrap(), "--shard", "1/2", "--out"];
    let shard1 = format!("{shards}/1-of-2");
    want.extend([shard1.as_str(), "--no-progress", "--device", "cpu"]);
    let (s0, s1) = (format!("{shards}/0-of-2"), format!("{shards}/1-of-2"));
    want.extend(["merge", out.to_str().unwrap(), s0.as_str(), s1.as_str()]);
    assert_eq!(args, want);
    for injected in ["PWNED", "PWNED2"] {
        assert!(
            !tmp.path().join(injected).exists(),
            "{injected} was created"
        );
    }
}

#[test]
fn shards_errors_name_the_shards_option() {
    let (tmp, cfg) = setup(SWEEP);
    let o = run(&[
        "slurm",
        cfg.to_str().unwrap(),
        "--shards",
        "1000",
        "--out",
        tmp.path().join("out").to_str().unwrap(),
    ]);
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
    assert!(stderr(&o).contains("`--shards`"), "{}", text(&o));
}

/// The sweep with one path, and the output of `command` on it.
fn with_path(command: &str, path: &str) -> (tempfile::TempDir, std::process::Output) {
    let sweep = SWEEP.replace("  seed: [0]", &format!("  seed: [0]\n  path: [{path}]"));
    let (tmp, cfg) = setup(&sweep);
    let out = tmp.path().join("out");
    let o = run(&[
        command,
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    (tmp, o)
}

#[test]
fn chunk_and_batch_sizes_near_2_64_are_refused_at_plan_time() {
    for (path, says) in [
        ("chunked:18446744073709551615", "context"),
        ("batched:18446744073709551615", "1024"),
        ("batched_prefill:18446744073709551615", "1024"),
        ("batched_prefill:100000", "1024"),
        ("batched:10000", "1024"),
    ] {
        let (_tmp, o) = with_path("run", path);
        assert_eq!(code(&o), exit::BAD_INPUT, "{path}: {}", text(&o));
        let err = stderr(&o);
        assert!(
            err.contains("`sweep.path[0]`") && err.contains(says),
            "{path}: {err}"
        );
    }
    // Negative control: sizes the machine can run are run.
    let (_tmp, o) = with_path("run", "batched_prefill:2");
    assert!([exit::PASS, exit::FAIL].contains(&code(&o)), "{}", text(&o));
}

#[test]
fn a_chunk_longer_than_the_sequences_but_inside_the_context_runs() {
    // Sizes are bounded by what can exist (the context), not by this sweep's sequences.
    let (_tmp, o) = with_path("run", "chunked:2048");
    assert!([exit::PASS, exit::FAIL].contains(&code(&o)), "{}", text(&o));
}

#[test]
fn a_report_json_that_is_a_fifo_or_gigabytes_long_is_refused_unread() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir(&base).unwrap();
    // A sparse file: 4 GiB long, no disk used; its first byte is not JSON.
    let f = std::fs::File::create(base.join("report.json")).unwrap();
    f.set_len(4 << 30).unwrap();
    let fifo_dir = tmp.path().join("fifo");
    std::fs::create_dir(&fifo_dir).unwrap();
    let made = Command::new("mkfifo")
        .arg(fifo_dir.join("report.json"))
        .status()
        .unwrap();
    assert!(made.success());
    let (b, f) = (base.to_str().unwrap(), fifo_dir.to_str().unwrap());
    let o = run(&["diff", b, b]);
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
    assert!(stderr(&o).contains("larger than"), "{}", text(&o));
    let o = run(&["diff", f, f]);
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
    assert!(stderr(&o).contains("named pipe (FIFO)"), "{}", text(&o));
}

#[test]
fn an_oversize_or_fifo_manifest_is_refused_with_its_name() {
    let (tmp, cfg) = setup(SWEEP);
    let out = tmp.path().join("out");
    let o = run(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    assert!([exit::PASS, exit::FAIL].contains(&code(&o)), "{}", text(&o));
    let manifest = out.join("manifest.json");
    std::fs::remove_file(&manifest).unwrap();
    let f = std::fs::File::create(&manifest).unwrap();
    f.set_len(4 << 30).unwrap();
    let o = run(&["report", out.to_str().unwrap()]);
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("manifest.json") && err.contains("larger than"),
        "{err}"
    );
}

#[test]
fn an_oversize_pair_record_is_refused_naming_it_and_an_intact_one_reports() {
    let (tmp, cfg) = setup(SWEEP);
    let out = tmp.path().join("out");
    let dir = out.to_str().unwrap();
    let o = run(&["run", cfg.to_str().unwrap(), "--out", dir, "--no-progress"]);
    assert!([exit::PASS, exit::FAIL].contains(&code(&o)), "{}", text(&o));
    // The control: the records as the sweep wrote them report.
    let o = run(&["report", dir]);
    assert!([exit::PASS, exit::FAIL].contains(&code(&o)), "{}", text(&o));
    // A pair record grown to 4 GiB (sparse: no disk used) is refused before it is read.
    let pairs = out.join("pairs");
    let victim = std::fs::read_dir(&pairs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(".json"))
        .unwrap();
    let f = std::fs::File::create(pairs.join(&victim)).unwrap();
    f.set_len(4 << 30).unwrap();
    let o = run(&["report", dir]);
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("pairs/{victim}")) && err.contains("larger than"),
        "{err}"
    );
}

#[test]
fn a_duplicate_engine_is_named_as_the_sweep_file_spells_it() {
    let sweep = SWEEP.replace(
        "  seed: [0]",
        "  seed: [0]\n  engine: [driftsweep, driftsweep]",
    );
    let (_tmp, cfg) = setup(&sweep);
    let o = run(&["plan", cfg.to_str().unwrap()]);
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
    let err = stderr(&o);
    assert!(err.contains("`driftsweep` is listed twice"), "{err}");
    assert!(!err.contains("Driftsweep"), "an internal name: {err}");
}

#[test]
fn help_names_the_files_each_subcommand_writes() {
    for (command, files) in [
        (
            "run",
            &["manifest.json", "pairs/", "report.json", "report.html"][..],
        ),
        ("merge", &["manifest.json", "report.json"][..]),
        (
            "report",
            &["report.json", "report.md", "report.junit.xml"][..],
        ),
        ("slurm", &["shards.sbatch", "merge.sbatch", "submit.sh"][..]),
        ("verify", &["verify.json"][..]),
        ("plan", &["no file"][..]),
    ] {
        let o = run(&[command, "--help"]);
        let help = String::from_utf8_lossy(&o.stdout);
        for f in files {
            assert!(
                help.contains(f),
                "`{command} --help` does not name {f}: {help}"
            );
        }
    }
}
