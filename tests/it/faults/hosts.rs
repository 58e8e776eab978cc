//! Two-host campaign: two servers (own host names, configs and work dirs) share one bucket
//! and run `backup`, `forget --keep-last 2 --prune --delete-after 0h` and `copy` to their own
//! off-site repository at seeded offsets, with and without `--wait`. Each trial passes when
//! every run either completed or was refused naming the holder of the lock (exit 2, only
//! without `--wait`), and afterwards no set a backup reported complete is missing unless a
//! forget removed it, and `verify` finds every pack the index lists (every fifth trial and at
//! the end `verify --read-data` reads them all back).

use std::collections::BTreeSet;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use super::{Campaign, Rng, one_line};
use crate::hosts::{Host, two_hosts};
use crate::support::{Sandbox, build_random_tree};

const BUCKET: &str = "akb-two-hosts";

/// What a host runs in one trial.
#[derive(Debug, Clone, Copy)]
enum Op {
    Backup,
    ForgetPrune,
    Copy,
}

impl Op {
    fn args(self, wait: bool) -> Vec<&'static str> {
        let mut args = vec!["--json"];
        if wait {
            args.push("--wait");
        }
        args.extend(match self {
            Self::Backup => vec!["backup"],
            Self::ForgetPrune => {
                vec![
                    "forget",
                    "--keep-last",
                    "2",
                    "--prune",
                    "--delete-after",
                    "0h",
                ]
            }
            Self::Copy => vec!["copy", "--to", "offsite"],
        });
        args
    }
}

fn pick(rng: &mut Rng) -> Op {
    match rng.below(3) {
        0 => Op::Backup,
        1 => Op::ForgetPrune,
        _ => Op::Copy,
    }
}

/// Adds the off-site repository of `host` to its config and initialises it.
fn with_offsite(sb: &Sandbox, host: &Host) {
    let repo = sb.root().join(format!("offsite-{}", host.name));
    let text = std::fs::read_to_string(&host.config).expect("config");
    let section = format!(
        "[repositories.offsite]\npath = {}\npassword-file = {}\n\n",
        crate::support::toml_str(&repo),
        crate::support::toml_str(&sb.password_file())
    );
    let at = text.find("[files.control]").expect("files section");
    std::fs::write(
        &host.config,
        format!("{}{section}{}", &text[..at], &text[at..]),
    )
    .expect("w");
    host.ok(sb, &["--repo", "offsite", "init"]);
}

/// The outcome of one run: `Ok(completed?)`, or `Err` when it neither completed nor was
/// refused by the lock as allowed.
fn judge(host: &Host, op: Op, wait: bool, out: &Output) -> Result<bool, String> {
    match out.status.code() {
        Some(0) => Ok(true),
        Some(2) if !wait => {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("is locked by") && err.contains("pid ") {
                Ok(false)
            } else {
                Err(format!(
                    "{} {op:?} exit 2 without naming a lock holder: {}",
                    host.name,
                    one_line(&out.stderr)
                ))
            }
        }
        other => Err(format!(
            "{} {op:?} (wait={wait}) exited {other:?}: {}",
            host.name,
            one_line(&out.stderr)
        )),
    }
}

/// Two hosts, one bucket, 30 seeded interleavings: no set reported complete is lost, none is
/// damaged.
#[test]
fn two_hosts_on_one_bucket_lose_nothing() {
    let _heavy = crate::support::network_heavy_guard();
    let (_server, sb, a, b) = two_hosts(BUCKET, false, 20_000, (4, 60_000));
    let hosts = [a, b];
    for h in &hosts {
        with_offsite(&sb, h);
        h.ok(&sb, &["backup"]);
    }
    let mut completed: BTreeSet<String> = BTreeSet::new();
    let mut forgotten: BTreeSet<String> = BTreeSet::new();
    let mut refusals = 0;
    let mut c = Campaign::new("two-hosts");
    for seed in Campaign::seeds(30) {
        let mut rng = Rng::new(9100 + seed);
        let ops = [pick(&mut rng), pick(&mut rng)];
        let waits = [rng.below(2) == 1, rng.below(2) == 1];
        let offset = Duration::from_millis(rng.below(1500));
        for (i, h) in hosts.iter().enumerate() {
            build_random_tree(&h.source.join(format!("day-{seed}")), 1, 20_000 + i * 1000);
        }
        let first = hosts[0]
            .cmd(&sb, &ops[0].args(waits[0]))
            .spawn()
            .expect("spawn");
        std::thread::sleep(offset);
        let second = hosts[1]
            .cmd(&sb, &ops[1].args(waits[1]))
            .spawn()
            .expect("spawn");
        let outs = [
            first.wait_with_output().expect("wait"),
            second.wait_with_output().expect("wait"),
        ];
        let outcome = (|| {
            let mut notes = Vec::new();
            for (i, out) in outs.iter().enumerate() {
                let done = judge(&hosts[i], ops[i], waits[i], out)?;
                if !done {
                    refusals += 1;
                    notes.push(format!("{} {:?} refused", hosts[i].name, ops[i]));
                    continue;
                }
                notes.push(format!("{} {:?}", hosts[i].name, ops[i]));
                let json: Value = serde_json::from_slice(&out.stdout)
                    .map_err(|e| format!("{} {:?}: stdout not JSON: {e}", hosts[i].name, ops[i]))?;
                match ops[i] {
                    Op::Backup => {
                        if let Some(id) = json["set"].as_str() {
                            completed.insert(id.to_string());
                        }
                    }
                    Op::ForgetPrune => {
                        for s in json["sets"].as_array().into_iter().flatten() {
                            if s["keep"] == false
                                && let Some(id) = s["id"].as_str()
                            {
                                forgotten.insert(id.to_string());
                            }
                        }
                    }
                    Op::Copy => {}
                }
            }
            let listed: BTreeSet<String> = hosts[0]
                .sets(&sb)
                .iter()
                .filter_map(|s| s["id"].as_str().map(str::to_string))
                .collect();
            let lost: Vec<&String> = completed
                .iter()
                .filter(|id| !listed.contains(*id) && !forgotten.contains(*id))
                .collect();
            if !lost.is_empty() {
                return Err(format!("sets reported complete are gone: {lost:?}"));
            }
            // The structure check finds a pack the index lists but the bucket lost; every
            // fifth trial also reads every pack back.
            let args: &[&str] = if seed % 5 == 4 {
                &["verify", "--read-data"]
            } else {
                &["verify"]
            };
            let verify = hosts[1].run(&sb, args);
            if verify.status.code() != Some(0) {
                return Err(format!("{}: {}", args.join(" "), one_line(&verify.stdout)));
            }
            Ok(format!(
                "{} (offset {} ms, wait {:?}); {} sets",
                notes.join(", "),
                offset.as_millis(),
                waits,
                listed.len()
            ))
        })();
        c.record(&format!("seed {seed}"), outcome);
    }
    let out = hosts[0].run(&sb, &["verify", "--read-data"]);
    c.record(
        "the shared bucket at the end",
        if out.status.code() == Some(0) {
            Ok("verify --read-data passed".to_string())
        } else {
            Err(one_line(&out.stdout))
        },
    );
    for h in &hosts {
        let out = h.run(&sb, &["--repo", "offsite", "verify", "--read-data"]);
        c.record(
            &format!("{}'s off-site copy", h.name),
            if out.status.code() == Some(0) {
                Ok("verify --read-data passed".to_string())
            } else {
                Err(one_line(&out.stdout))
            },
        );
    }
    println!(
        "two-hosts: {refusals} run(s) refused by the lock, {} sets completed",
        completed.len()
    );
    c.finish();
}
