//! The client against fake workers (`sh` scripts that speak, or break, the protocol): no
//! python needed. The real worker is tested in tests/transformers_reference.rs.

use std::io::Cursor;
use std::process::Command;
use std::time::Duration;

use super::frame::{PayloadLimit, read_frame};
use super::worker::{TransformersWorker, tail_of};
use super::*;

const HELLO: &str =
    r#"echo '{"ok":true,"hello":"driftsweep-transformers-worker","torch":"t","transformers":"x"}'"#;
const LOADED: &str =
    r#"read l; echo '{"ok":true,"handle":0,"vocab":3,"class":"FakeForCausalLM","arch":"fake"}'"#;

fn limits() -> TimeLimits {
    TimeLimits {
        start: Duration::from_secs(60),
        load: Duration::from_secs(60),
        forward_base: Duration::from_secs(60),
        forward_per_token: Duration::ZERO,
    }
}

/// A fake worker running `script` under sh.
fn fake(script: &str, limits: TimeLimits) -> Result<TransformersWorker, ReferenceError> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    TransformersWorker::spawn(cmd, limits)
}

/// A fake that says hello, loads, then runs `then` for the forward.
fn loaded_fake(then: &str) -> (TransformersWorker, Handle) {
    let mut w = fake(&format!("{HELLO}; {LOADED}; {then}"), limits()).unwrap();
    let h = w.load(Path::new("/"), RefDtype::F64).unwrap().handle;
    (w, h)
}

use std::path::Path;

#[test]
fn a_well_formed_forward_answer_becomes_an_f64_tensor() {
    // Two positions of a vocabulary of 3, as f32: 6 values, 24 bytes, from printf's octal.
    let ones = r"\000\000\200\077"; // 1.0f32 little-endian
    let payload = ones.repeat(6);
    let (mut w, h) = loaded_fake(&format!(
        r#"read l; printf '{{"ok":true,"n":2,"vocab":3,"elem":"f32","bytes":24}}\n{payload}'; cat >/dev/null"#
    ));
    assert_eq!(w.versions(), ("t", "x"));
    let t = w.forward(h, &[0, 1]).unwrap();
    assert_eq!(t.dims(), &[2, 3]);
    assert_eq!(t.dtype(), candle_core::DType::F64);
    assert_eq!(t.to_vec2::<f64>().unwrap(), vec![vec![1.0; 3]; 2]);
}

#[test]
fn error_frames_become_their_typed_errors_and_the_worker_lives_on() {
    let mut w = fake(
        &format!(
            r#"{HELLO}; read l; echo '{{"ok":false,"kind":"unsupported","arch":"zeta","message":"no such model"}}';
            read l; echo '{{"ok":false,"kind":"bad_request","message":"token id 9 is outside"}}';
            read l; echo '{{"ok":false,"kind":"error","message":"RuntimeError: x"}}'; cat >/dev/null"#
        ),
        limits(),
    )
    .unwrap();
    let e = w.load(Path::new("/a"), RefDtype::F64).unwrap_err();
    assert_eq!(
        e,
        ReferenceError::Unsupported {
            arch: "zeta".into(),
            msg: "no such model".into()
        }
    );
    assert!(e.is_bad_input());
    let e = w.load(Path::new("/b"), RefDtype::F64).unwrap_err();
    assert!(matches!(e, ReferenceError::BadRequest { .. }), "{e:?}");
    let e = w.load(Path::new("/c"), RefDtype::F64).unwrap_err();
    assert!(matches!(&e, ReferenceError::Worker { msg, .. } if msg == "RuntimeError: x"));
    assert!(!e.is_bad_input());
}

#[test]
fn garbage_kills_the_worker_with_its_stderr_tail() {
    let (mut w, h) =
        loaded_fake("read l; echo 'oops: a traceback' >&2; echo 'not json'; cat >/dev/null");
    let e = w.forward(h, &[0]).unwrap_err();
    let ReferenceError::Worker { msg, stderr_tail } = &e else {
        panic!("{e:?}")
    };
    assert!(
        msg.contains("not a JSON object") && msg.contains("not json"),
        "{msg}"
    );
    assert!(stderr_tail.contains("oops: a traceback"), "{stderr_tail:?}");
    // Every later call fails at once with the first error's words.
    let again = w.forward(h, &[0]).unwrap_err();
    assert!(again.to_string().contains("stopped earlier"), "{again}");
}

#[test]
fn payload_sizes_are_checked_before_they_are_read() {
    // A claim of 1 TB for 1 id × vocabulary 3 (at most 24 bytes): refused unread.
    let (mut w, h) = loaded_fake(
        r#"read l; echo '{"ok":true,"n":1,"vocab":3,"elem":"f64","bytes":1000000000000}'; cat >/dev/null"#,
    );
    let e = w.forward(h, &[0]).unwrap_err().to_string();
    assert!(e.contains("1000000000000 payload bytes"), "{e}");
    // Sizes within the bound that do not match the shape.
    let (mut w, h) = loaded_fake(
        r#"read l; printf '{"ok":true,"n":1,"vocab":2,"elem":"f64","bytes":16}\n0123456789abcdef'; cat >/dev/null"#,
    );
    let e = w.forward(h, &[0]).unwrap_err().to_string();
    assert!(e.contains("shape [Some(1), Some(2)]"), "{e}");
}

#[test]
fn a_silent_worker_times_out_and_is_killed() {
    // It reads the request and never answers: only the limit ends the wait.
    let mut short = limits();
    short.forward_base = Duration::from_millis(200);
    let mut w = fake(
        &format!("{HELLO}; {LOADED}; echo waiting >&2; cat >/dev/null"),
        short,
    )
    .unwrap();
    let h = w.load(Path::new("/"), RefDtype::F32).unwrap().handle;
    let e = w.forward(h, &[1, 2]).unwrap_err();
    let ReferenceError::TimedOut { secs, stderr_tail } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*secs, 0.2);
    assert!(stderr_tail.contains("waiting"), "{stderr_tail:?}");
}

#[test]
fn a_worker_that_dies_gives_its_status_and_stderr() {
    let (mut w, h) = loaded_fake("read l; echo 'Killed: out of memory' >&2; exit 3");
    let e = w.forward(h, &[0]).unwrap_err();
    let ReferenceError::Worker { msg, stderr_tail } = &e else {
        panic!("{e:?}")
    };
    assert!(
        msg.contains("closed its stdout") && msg.contains("exit status: 3"),
        "{msg}"
    );
    assert!(stderr_tail.contains("out of memory"));
}

#[test]
fn a_missing_python_or_stack_is_not_installed_with_the_command() {
    let e = TransformersWorker::start_with(Path::new("/nonexistent/python"), limits()).unwrap_err();
    assert!(
        matches!(&e, ReferenceError::NotInstalled { command, .. } if command == INSTALL_COMMAND)
    );
    let e = fake(
        r#"echo '{"ok":false,"kind":"not_installed","message":"ModuleNotFoundError: torch"}'"#,
        limits(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("bash scripts/peer/setup.sh"), "{e}");
    // A first frame that is not the hello.
    let e = fake(r#"echo '{"ok":true}'"#, limits()).unwrap_err();
    assert!(e.to_string().contains("not its hello"), "{e}");
}

#[test]
fn loads_are_kept_per_path_and_dtype() {
    // The fake answers one load only: a second load of the same (path, dtype) must not ask.
    let (mut w, h) = loaded_fake("cat >/dev/null");
    assert_eq!(w.load(Path::new("/"), RefDtype::F64).unwrap().handle, h);
    assert_eq!(h.vocab(), 3);
}

#[test]
fn frames_refuse_long_cut_and_non_object_headers() {
    let limit = PayloadLimit::default();
    limit.set(4);
    let read = |b: &[u8]| read_frame(&mut Cursor::new(b.to_vec()), &limit);
    assert_eq!(read(b"").unwrap(), None);
    assert!(read(b"[1,2]\n").unwrap_err().contains("not a JSON object"));
    assert!(read(b"{\"ok\":true}").unwrap_err().contains("cut"));
    let long = vec![b' '; frame::MAX_HEADER as usize + 10];
    assert!(read(&long).unwrap_err().contains("longer than"));
    assert!(
        read(b"{\"bytes\":4}\nab")
            .unwrap_err()
            .contains("cut short: 2 of 4")
    );
    assert!(
        read(b"{\"bytes\":-1}\n")
            .unwrap_err()
            .contains("not a count")
    );
    let f = read(b"{\"bytes\":4}\nabcd").unwrap().unwrap();
    assert_eq!(f.payload, b"abcd");
}

#[test]
fn the_stderr_tail_keeps_the_last_bytes() {
    let big = vec![b'a'; STDERR_TAIL];
    let t = tail_of(&[b"first", &big, b"last"]);
    assert_eq!(t.len(), STDERR_TAIL);
    assert!(t.ends_with("last") && !t.contains("first"));
}

#[test]
fn forward_limits_grow_with_tokens() {
    let l = TimeLimits::default();
    assert_eq!(l.forward(0), Duration::from_secs(60));
    assert_eq!(l.forward(512), Duration::from_secs(60 + 256));
}

#[test]
fn the_embedded_worker_is_the_script() {
    assert!(WORKER_SCRIPT.contains("driftsweep-transformers-worker"));
    assert_eq!(RefDtype::F64.to_string(), "f64");
}
