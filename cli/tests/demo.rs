//! Runs the built `herdcache` binary's demo with small settings and checks its report.

use std::process::Command;

fn herdcache(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_herdcache")).args(args).output().expect("herdcache runs")
}

/// Runs the demo with small settings plus `extra` flags; checks it exits 0 and prints every
/// table, with one load per key and no error in phase 1; returns its stdout.
fn run_small_demo(nodes: u32, extra: &[&str]) -> String {
    let nodes_flag = nodes.to_string();
    let mut args = vec![
        "demo",
        "--keys",
        "500",
        "--duration",
        "2",
        "--nodes",
        &nodes_flag,
        "--failover-duration",
        "1",
        "--concurrency",
        "16",
    ];
    args.extend_from_slice(extra);
    let output = herdcache(&args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {:?}\n{stdout}\n{stderr}", output.status);

    // The tables are there, as markdown.
    let phase1_title = format!("## Phase 1: {nodes} node(s)");
    for expected in [
        phase1_title.as_str(),
        "| metric ",
        "| requests ",
        "| path ",
        "| LocalHit",
        "| PeerFetch",
        "| Load",
        "| node ",
        " runtime |",
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
    stdout
}

#[test]
fn demo_runs_and_loads_each_key_once() {
    let stdout = run_small_demo(3, &[]);
    let nodes = stdout.lines().find(|line| line.starts_with("Nodes: ")).unwrap_or_default();
    assert_eq!(nodes.matches(" (tokio)").count(), 3, "{nodes}");
}

#[test]
fn demo_mixes_runtimes_and_any_node_leaves() {
    // Nodes 0 and 2 on tokio, 1 and 3 on mio: the node that leaves in phase 2 (the last) is a
    // mio node, and the survivors are of both runtimes.
    let stdout = run_small_demo(4, &["--runtimes", "tokio,mio"]);
    let nodes = stdout.lines().find(|line| line.starts_with("Nodes: ")).unwrap_or_default();
    assert_eq!(nodes.matches(" (tokio)").count(), 2, "{nodes}");
    assert_eq!(nodes.matches(" (mio)").count(), 2, "{nodes}");
    assert!(stdout.contains("(herdcache-tokio × 2, herdcache-mio × 2)"), "{stdout}");
    let (phase1, phase2) = stdout.split_once("## Phase 2").unwrap_or_default();
    for runtime in ["tokio |", "mio |"] {
        let per_node = phase1.rsplit("### Per node").next().unwrap_or_default();
        assert_eq!(per_node.matches(runtime).count(), 2, "{runtime:?} in:\n{per_node}");
    }
    assert!(phase2.starts_with(": node 127.0.0.1:") && phase2.contains("(mio) left"), "{phase2}");
    assert!(phase2.contains("every get was answered: 0 errors"), "{phase2}");
}

#[test]
fn demo_mixes_all_three_runtimes() {
    // Nodes 0 and 3 on tokio, 1 and 4 on async-std, 2 on mio: `run_small_demo` checks one
    // load per key in the whole cluster in phase 1 and every get answered there; the last
    // node (async-std) leaves in phase 2, mid load, and every get must still be answered by
    // the survivors, of all three runtimes.
    let stdout = run_small_demo(5, &["--runtimes", "tokio,async-std,mio"]);
    let nodes = stdout.lines().find(|line| line.starts_with("Nodes: ")).unwrap_or_default();
    assert_eq!(nodes.matches(" (tokio)").count(), 2, "{nodes}");
    assert_eq!(nodes.matches(" (async-std)").count(), 2, "{nodes}");
    assert_eq!(nodes.matches(" (mio)").count(), 1, "{nodes}");
    assert!(
        stdout.contains("(herdcache-tokio × 2, herdcache-async-std × 2, herdcache-mio × 1)"),
        "{stdout}"
    );
    let (phase1, phase2) = stdout.split_once("## Phase 2").unwrap_or_default();
    let per_node = phase1.rsplit("### Per node").next().unwrap_or_default();
    for (runtime, count) in [(" tokio |", 2), (" async-std |", 2), (" mio |", 1)] {
        assert_eq!(per_node.matches(runtime).count(), count, "{runtime:?} in:\n{per_node}");
    }
    assert!(phase2.contains("(async-std) left"), "{phase2}");
    assert!(phase2.contains("every get was answered: 0 errors"), "{phase2}");
}

#[test]
fn help_documents_the_flags() {
    let output = herdcache(&["demo", "--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--nodes",
        "--runtimes",
        "--keys",
        "--skew",
        "--duration",
        "--concurrency",
        "--source-delay-ms",
    ] {
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
        &["demo", "--runtimes", "tokio,nosuch"],
        &["demo", "--runtimes", ""],
        &["demo", "--duration", "soon"],
        &["no-such-command"],
    ] {
        let output = herdcache(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty(), "{args:?}: an explanation on stderr");
    }
}
