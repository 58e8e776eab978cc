//! The benchmark harness of issue 8 (`bench/run`) as a smoke test: the small platform, one
//! run, this build's binary (not a release build), into a temporary directory. It checks that
//! every scenario produced numbers and that every tool restored the data intact, not the
//! speed targets: a debug build on a shared CI machine says nothing about them.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::support::assert_exit;

/// The cells of the first report row that `wanted` accepts, or `None`.
fn find_row(report: &str, wanted: impl Fn(&[&str]) -> bool) -> Option<Vec<&str>> {
    report.lines().find_map(|l| {
        let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
        wanted(&cells).then_some(cells)
    })
}

/// The cells of the report row `| scenario | tool | ...`, or `None` when it is missing.
fn row<'a>(report: &'a str, scenario: &str, tool: &str) -> Option<Vec<&'a str>> {
    find_row(report, |c| c.len() > 2 && c[0] == scenario && c[1] == tool)
}

/// `bench/run --size small --runs 1 --growth` completes and its report has a row with wall,
/// CPU and RSS figures for every scenario and tool, sizes for every repository, no restore
/// that differs from the source, and the growth table with both tools' times on both sizes.
#[test]
fn small_benchmark_smoke_run_reports_every_scenario() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let run = Command::new("python3")
        .arg(root.join("bench/run"))
        .args([
            "--size",
            "small",
            "--runs",
            "1",
            "--growth",
            "--growth-runs",
            "1",
            "--binary",
        ])
        .arg(env!("CARGO_BIN_EXE_akbackup"))
        .arg("--out")
        .arg(out.path())
        .env("BENCH_TMP", out.path())
        .output()
        .expect("spawn python3 bench/run");
    assert_exit(&run, 0, "bench/run --size small --runs 1 --growth");
    println!(
        "bench/run --size small --runs 1 with the debug binary took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let report_path = std::fs::read_dir(out.path())
        .expect("read --out")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("small-"))
                && p.extension().is_some_and(|e| e == "md")
        })
        .expect("bench/run wrote no small-<date>.md");
    let report = std::fs::read_to_string(&report_path).expect("read the report");

    let scenarios = [
        (
            "day 1 backup",
            ["akbackup", "documented tar -czf", "restic"],
        ),
        (
            "day 2 backup",
            ["akbackup", "documented tar -czf", "restic"],
        ),
        ("restore", ["akbackup", "tar -xzf", "restic"]),
    ];
    let mut expected: Vec<(&str, &str)> = scenarios
        .iter()
        .flat_map(|(s, tools)| tools.iter().map(move |t| (*s, *t)))
        .collect();
    expected.extend([
        ("verify --read-data", "akbackup"),
        ("verify --read-data", "sha256sum"),
    ]);
    for (scenario, tool) in expected {
        let cells = row(&report, scenario, tool)
            .unwrap_or_else(|| panic!("no row for {scenario} / {tool} in:\n{report}"));
        // wall min, wall median, CPU min, CPU median, peak RSS
        for cell in &cells[2..7] {
            let n: f64 = cell
                .parse()
                .unwrap_or_else(|_| panic!("{scenario} / {tool}: {cell:?} is not a number"));
            assert!(n >= 0.0, "{scenario} / {tool}: {n}");
        }
        if tool != "akbackup" {
            assert!(
                cells[7].ends_with('x'),
                "{scenario} / {tool}: no ratio: {cells:?}"
            );
        }
    }
    for label in [
        "tar.gz files (both days kept)",
        "akbackup repositories (both)",
        "restic repository",
    ] {
        let cells = find_row(&report, |c| c.len() > 3 && c[0] == label)
            .unwrap_or_else(|| panic!("no size row {label:?} in:\n{report}"));
        for cell in &cells[1..3] {
            assert!(
                cell.parse::<f64>().is_ok_and(|n| n > 0.0),
                "{label}: size {cell:?}"
            );
        }
    }
    assert!(
        report.contains("with identical keys and values")
            && report.contains("every MongoDB `.bson` file byte for byte"),
        "a tool restored data that differs from the source:\n{report}"
    );
    // The growth scenario: both tools' day 1 and day 2 on both platforms, and the growth.
    for tool in ["akbackup", "restic"] {
        // Seven cells with the tool first: only the growth table has such rows.
        let cells = find_row(&report, |c| c.len() == 7 && c[0] == tool)
            .unwrap_or_else(|| panic!("no growth row for {tool} in:\n{report}"));
        for cell in &cells[1..5] {
            assert!(
                cell.parse::<f64>().is_ok_and(|n| n > 0.0),
                "growth {tool}: {cell:?} in {cells:?}"
            );
        }
        assert!(
            cells[5]
                .strip_suffix('x')
                .is_some_and(|g| g.parse::<f64>().is_ok_and(|g| g > 0.0)),
            "growth {tool}: {:?}",
            cells[5]
        );
    }
    assert!(
        report.contains("Target: akbackup's day 2 at x3 the data"),
        "no growth target line in:\n{report}"
    );
}
