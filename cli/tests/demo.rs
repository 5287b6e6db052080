//! Runs the built `herdcache` binary's demo with small settings and checks its report.

use std::process::Command;

fn herdcache(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_herdcache")).args(args).output().expect("herdcache runs")
}

#[test]
fn demo_runs_and_loads_each_key_once() {
    let output = herdcache(&[
        "demo",
        "--keys",
        "500",
        "--duration",
        "2",
        "--nodes",
        "3",
        "--failover-duration",
        "1",
        "--concurrency",
        "16",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {:?}\n{stdout}\n{stderr}", output.status);

    // The tables are there, as markdown.
    for expected in [
        "## Phase 1: 3 node(s)",
        "| metric ",
        "| requests ",
        "| path ",
        "| LocalHit",
        "| PeerFetch",
        "| Load",
        "| node ",
        "local_loads",
        "## Phase 2:",
        "graceful stop took",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing from:\n{stdout}");
    }
    assert!(stdout.contains("| --"), "a markdown separator row:\n{stdout}");

    // Each key was loaded once in the whole cluster during phase 1.
    let line = stdout
        .lines()
        .find(|line| line.starts_with("loads per key:"))
        .unwrap_or_else(|| panic!("no loads-per-key line in:\n{stdout}"));
    let max: u32 = line
        .trim_start_matches("loads per key: max ")
        .split(',')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("unparsable: {line:?}"));
    assert_eq!(max, 1, "{line}\n{stdout}");
    assert!(line.contains("mean 1.00"), "{line}");

    // Phase 1 answered every get.
    let phase1 = stdout.split("## Phase 2").next().unwrap_or_default();
    assert!(phase1.contains("| errors ") && phase1.contains("none |"), "{phase1}");
}

#[test]
fn help_documents_the_flags() {
    let output = herdcache(&["demo", "--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in ["--nodes", "--keys", "--skew", "--duration", "--concurrency", "--source-delay-ms"]
    {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let top = herdcache(&["--help"]);
    assert!(top.status.success());
    assert!(String::from_utf8_lossy(&top.stdout).contains("demo"));
}

#[test]
fn bad_flags_exit_with_2() {
    for args in [
        &["demo", "--no-such-flag"][..],
        &["demo", "--skew", "-1"],
        &["demo", "--nodes", "0"],
        &["demo", "--duration", "soon"],
        &["no-such-command"],
    ] {
        let output = herdcache(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty(), "{args:?}: an explanation on stderr");
    }
}
