//! The nightly workflow only calls breaker-advisor commands and flags that exist.

use clap::CommandFactory;

use breaker_advisor::cli::Cli;

const WORKFLOW: &str = include_str!("../../.github/workflows/nightly-breakers.yml");

/// (subcommand, long flags) of every `breaker-advisor` invocation in the workflow's
/// shell steps (`.../release/breaker-advisor run ... \` continued over lines).
fn invocations() -> Vec<(String, Vec<String>)> {
    let doc: yaml_serde::Value = yaml_serde::from_str(WORKFLOW).unwrap();
    let mut out = Vec::new();
    for job in doc["jobs"].as_mapping().unwrap().values() {
        for step in job["steps"].as_sequence().unwrap() {
            let Some(script) = step["run"].as_str() else {
                continue;
            };
            let joined = script.replace("\\\n", " ");
            // Flags gathered in a bash array (`args+=(--telemetry "$f")`) go to the
            // invocation in the same script.
            let array_flags: Vec<String> = joined
                .match_indices("args+=(--")
                .map(|(i, _)| {
                    joined[i + "args+=(--".len()..]
                        .split(|c: char| c.is_whitespace() || c == ')')
                        .next()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            for line in joined.lines() {
                let Some(at) = line
                    .find("breaker-advisor\"")
                    .or_else(|| line.find("breaker-advisor "))
                else {
                    continue;
                };
                let words: Vec<&str> = line[at..].split_whitespace().skip(1).collect();
                let sub = words[0].to_owned();
                let mut flags: Vec<String> = words
                    .iter()
                    .filter(|w| w.starts_with("--"))
                    .map(|w| {
                        w.trim_start_matches("--")
                            .split('=')
                            .next()
                            .unwrap()
                            .to_owned()
                    })
                    .collect();
                flags.extend(array_flags.iter().cloned());
                out.push((sub, flags));
            }
        }
    }
    out
}

#[test]
fn the_workflow_runs_only_commands_and_flags_we_have() {
    let calls = invocations();
    assert!(
        calls
            .iter()
            .any(|(sub, flags)| sub == "run" && flags.iter().any(|f| f == "telemetry")),
        "the workflow runs the nightly job on the telemetry: {calls:?}"
    );
    // Shard jobs of a matrix, then one merge.
    for flag in ["shard", "merge-shards"] {
        assert!(
            calls
                .iter()
                .any(|(sub, flags)| sub == "run" && flags.iter().any(|f| f == flag)),
            "the workflow runs `run --{flag}`: {calls:?}"
        );
    }
    let cli = Cli::command();
    for (sub, flags) in &calls {
        let cmd = cli
            .find_subcommand(sub)
            .unwrap_or_else(|| panic!("no subcommand {sub:?}"));
        for f in flags {
            let known = cmd
                .get_arguments()
                .chain(cli.get_arguments())
                .any(|a| a.get_long() == Some(f.as_str()));
            assert!(known, "breaker-advisor {sub} has no --{f}");
        }
    }
    // The check itself catches a wrong flag.
    assert!(
        cli.find_subcommand("run")
            .unwrap()
            .get_arguments()
            .all(|a| a.get_long() != Some("no-such-flag"))
    );
}
