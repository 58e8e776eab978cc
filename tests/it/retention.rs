//! Retention over a synthetic calendar: 40 daily sets imported from documented
//! `altcraft-YYYY-MM-DD.tar.gz` archives (so each set is dated by its name, midnight UTC), then
//! `forget --dry-run --json --now ...` with `--keep-daily/--keep-weekly`, `--keep-within` and
//! the `[retention]` section, each checked against dates worked out by hand; finally a real
//! `forget --prune` that shrinks the repository directory while the kept sets still verify and
//! restore.
//!
//! The calendar is 2024-01-31 .. 2024-03-10 (2024 is a leap year: 1 + 29 + 10 = 40 days) and
//! 2024-03-10 is a Sunday, the last day of ISO week 10. Every day's tree holds a 64 KiB random
//! file of its own, so each dropped set frees data that prune can reclaim. Commands run with
//! `TZ=UTC` so day and week boundaries are those of the set times.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use jiff::civil::Date;
use serde_json::Value;

use crate::support::{
    Sandbox, assert_exit, assert_trees_equal, copy_tree, dir_size, parse_json, random_bytes,
    set_old_mtimes, write_file,
};

/// The first day of the calendar.
const FIRST: &str = "2024-01-31";

/// How many consecutive daily sets.
const DAYS: i64 = 40;

/// The moment the rules are applied at: noon of the last day.
const NOW: &str = "2024-03-10T12:00:00Z";

/// Bytes of the file unique to each day.
const DAILY_BYTES: usize = 64 * 1024;

/// `path` as a `&str` argument.
fn arg(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// The calendar's dates, oldest first.
fn calendar() -> Vec<Date> {
    let first: Date = FIRST.parse().expect("a date");
    (0..DAYS)
        .map(|i| {
            first
                .checked_add(jiff::Span::new().days(i))
                .expect("in range")
        })
        .collect()
}

/// `akbackup ARGS` in the sandbox with `TZ=UTC`, asserting exit 0.
fn run_ok(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    let out = sb
        .cmd(args)
        .env("TZ", "UTC")
        .output()
        .expect("spawn akbackup");
    assert_exit(&out, 0, &format!("akbackup {}", args.join(" ")));
    out
}

/// Where the tree of `date` is kept for comparing restores.
fn day_copy(sb: &Sandbox, date: Date) -> PathBuf {
    sb.root().join("days").join(date.to_string())
}

/// Writes the source tree of `date` (a shared config, the day's stamp and its unique random
/// file), keeps a copy of it and packs it the way the documented procedure does
/// (`tar -czf altcraft-DATE.tar.gz /opt/altcraft`, here the sandbox's source path).
fn make_archive(sb: &Sandbox, date: Date, seed: u64) -> PathBuf {
    let src = sb.source();
    let _ = std::fs::remove_dir_all(&src);
    write_file(&src.join("etc/main.conf"), b"listen = 127.0.0.1:8080\n");
    write_file(&src.join("stamp.txt"), format!("{date}\n").as_bytes());
    write_file(&src.join("data/day.bin"), &random_bytes(seed, DAILY_BYTES));
    set_old_mtimes(&src);
    let keep = day_copy(sb, date);
    std::fs::create_dir_all(keep.parent().expect("parent")).expect("mkdir days");
    copy_tree(&src, &keep);
    let archive = sb
        .root()
        .join("archives")
        .join(format!("altcraft-{date}.tar.gz"));
    std::fs::create_dir_all(archive.parent().expect("parent")).expect("mkdir archives");
    let tar = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg(&src)
        .output()
        .expect("run tar");
    assert!(
        tar.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&tar.stderr)
    );
    archive
}

/// A sandbox whose repository holds one imported set per calendar day; returns it with the
/// set id of each date.
fn calendar_sandbox(retention: &str) -> (Sandbox, Vec<(Date, String)>) {
    let sb = Sandbox::new();
    sb.write_config(&format!("{}\n{retention}", sb.default_config()));
    sb.init();
    let archives: Vec<PathBuf> = calendar()
        .into_iter()
        .zip(1..)
        .map(|(date, seed)| make_archive(&sb, date, seed))
        .collect();
    let mut args = vec!["--json", "import"];
    args.extend(archives.iter().map(|a| arg(a)));
    let imported = parse_json(&run_ok(&sb, &args));
    assert_eq!(
        imported.as_array().map(Vec::len),
        Some(calendar().len()),
        "{imported:#}"
    );
    let listed = parse_json(&run_ok(&sb, &["--json", "snapshots"]));
    let mut ids: Vec<(Date, String)> = listed
        .as_array()
        .expect("snapshots is an array")
        .iter()
        .map(|s| {
            assert_eq!(s["status"], "complete", "{s:#}");
            (date_of(s), s["id"].as_str().expect("id").to_string())
        })
        .collect();
    ids.sort();
    let dates: Vec<Date> = ids.iter().map(|(d, _)| *d).collect();
    assert_eq!(
        dates,
        calendar(),
        "one set per day, dated by the archive name"
    );
    (sb, ids)
}

/// The UTC date of a set's `time`.
fn date_of(set: &Value) -> Date {
    let time: jiff::Timestamp = set["time"]
        .as_str()
        .unwrap_or_else(|| panic!("no time: {set:#}"))
        .parse()
        .expect("RFC 3339 time");
    time.to_zoned(jiff::tz::TimeZone::UTC).date()
}

/// The dates `forget --json` keeps, and checks it decides on every set.
fn kept_dates(forget: &Value) -> BTreeSet<Date> {
    let sets = forget["sets"]
        .as_array()
        .unwrap_or_else(|| panic!("forget --json has no sets: {forget:#}"));
    assert_eq!(sets.len(), calendar().len(), "{forget:#}");
    sets.iter()
        .filter(|s| s["keep"] == true)
        .map(date_of)
        .collect()
}

/// Dates from `YYYY-MM-DD` strings.
fn dates(list: &[&str]) -> BTreeSet<Date> {
    list.iter().map(|d| d.parse().expect("a date")).collect()
}

/// `forget --dry-run --json --now NOW EXTRA`.
fn dry_run(sb: &Sandbox, extra: &[&str]) -> Value {
    let mut args = vec!["--json", "forget", "--dry-run", "--now", NOW];
    args.extend_from_slice(extra);
    let out = parse_json(&run_ok(sb, &args));
    assert_eq!(out["dry_run"], true, "{out:#}");
    out
}

/// The policies keep exactly the dates worked out by hand, a dry run changes nothing, and a
/// real `forget --prune --delete-after 0h` (both phases of prune at once) drops the other
/// sets, shrinks the repository by about their unique data, and leaves sets that verify and
/// restore to their day's tree.
#[test]
fn calendar_policies_keep_the_expected_days() {
    let (sb, ids) = calendar_sandbox("[retention]\nkeep-daily = 3\nkeep-weekly = 2\n");

    // --keep-daily 7: the last set of each of the 7 newest days, 03-04 .. 03-10.
    // --keep-weekly 4: the last set of each of the 4 newest ISO weeks (Monday..Sunday):
    // 03-10 (week 10), 03-03 (week 9), 02-25 (week 8), 02-18 (week 7). 03-10 counts for
    // both rules; 10 sets in all.
    let daily_weekly = dates(&[
        "2024-02-18",
        "2024-02-25",
        "2024-03-03",
        "2024-03-04",
        "2024-03-05",
        "2024-03-06",
        "2024-03-07",
        "2024-03-08",
        "2024-03-09",
        "2024-03-10",
    ]);
    let plan = dry_run(&sb, &["--keep-daily", "7", "--keep-weekly", "4"]);
    assert_eq!(kept_dates(&plan), daily_weekly, "{plan:#}");
    for set in plan["sets"].as_array().expect("sets") {
        let reasons: Vec<&str> = set["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        match date_of(set).to_string().as_str() {
            "2024-03-10" => assert_eq!(reasons, ["daily", "weekly"], "{set:#}"),
            "2024-03-03" | "2024-02-25" | "2024-02-18" => {
                assert_eq!(reasons, ["weekly"], "{set:#}");
            }
            _ if set["keep"] == true => assert_eq!(reasons, ["daily"], "{set:#}"),
            _ => assert!(reasons.is_empty(), "{set:#}"),
        }
    }

    // --keep-within 10d at noon of 03-10: everything younger than 10 days, i.e. taken after
    // 02-29 12:00, so the midnight sets of 03-01 .. 03-10.
    let plan = dry_run(&sb, &["--keep-within", "10d"]);
    let within: BTreeSet<Date> = calendar()
        .into_iter()
        .filter(|d| *d >= "2024-03-01".parse::<Date>().expect("date"))
        .collect();
    assert_eq!(within.len(), 10);
    assert_eq!(kept_dates(&plan), within, "{plan:#}");

    // No flags: [retention] keep-daily = 3, keep-weekly = 2 -> 03-08, 03-09, 03-10 and the
    // last of the week before, 03-03.
    let plan = dry_run(&sb, &[]);
    assert_eq!(
        kept_dates(&plan),
        dates(&["2024-03-03", "2024-03-08", "2024-03-09", "2024-03-10"]),
        "{plan:#}"
    );
    assert_eq!(
        parse_json(&run_ok(&sb, &["--json", "snapshots"]))
            .as_array()
            .map(Vec::len),
        Some(calendar().len()),
        "a dry run removes nothing"
    );

    // The real thing: 30 sets go, each with 64 KiB of data no other set has; no delay, so
    // their data goes in this run (the default marks it and deletes it a day later).
    let before = dir_size(&sb.repo());
    let done = parse_json(&run_ok(
        &sb,
        &[
            "--json",
            "forget",
            "--now",
            NOW,
            "--keep-daily",
            "7",
            "--keep-weekly",
            "4",
            "--prune",
            "--delete-after",
            "0h",
        ],
    ));
    assert_eq!(done["dry_run"], false, "{done:#}");
    assert_eq!(kept_dates(&done), daily_weekly, "{done:#}");
    let after = dir_size(&sb.repo());
    let dropped = (calendar().len() - daily_weekly.len()) as u64;
    eprintln!(
        "calendar_policies_keep_the_expected_days: repository {before} B before, {after} B \
         after forget --prune ({} B freed; {dropped} dropped sets x {DAILY_BYTES} B unique); \
         prune summary {}",
        before - after.min(before),
        done["prune"]
    );
    assert!(
        after + dropped * DAILY_BYTES as u64 * 9 / 10 <= before,
        "prune reclaims the unique data of the {dropped} dropped sets: {before} -> {after} bytes"
    );

    let listed = parse_json(&run_ok(&sb, &["--json", "snapshots"]));
    let left: BTreeSet<Date> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(date_of)
        .collect();
    assert_eq!(left, daily_weekly, "{listed:#}");
    run_ok(&sb, &["verify", "--read-data"]);
    for day in ["2024-02-18", "2024-03-10"] {
        let date: Date = day.parse().expect("date");
        let id = &ids.iter().find(|(d, _)| *d == date).expect("a set").1;
        let target = sb.root().join(format!("restored-{day}"));
        run_ok(&sb, &["restore", id, "--target", arg(&target)]);
        // The whole tree: directory times too, which import keeps since it sets them after
        // unpacking (it once left the time of the import on every directory).
        assert_trees_equal(&day_copy(&sb, date), &target.join("files").join("control"));
    }
}
