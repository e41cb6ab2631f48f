//! `hecate gc`: find and stop instances a crashed runtime left behind —
//! MorphCloud VMs tagged by Hecate ([`gc`]), or local instance directories
//! whose runtime process is gone ([`gc_local`]).
//!
//! A runtime that crashed (or was killed) cannot stop its VMs; they live on
//! until their server-side TTL. This module owns finding such instances by
//! their tags (`created_by=hecate`, optionally one `hecate_runtime_id`),
//! sparing young ones if asked, and stopping them — or, by default, only
//! listing them (a dry run). [`gc`] is the library call; [`GcArgs`] and
//! [`run_cli`] are the command-line front end. Like every MorphCloud call,
//! they must run inside an actix system (awc needs its arbiter).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::MorphConfig;
use crate::error::Result;
use crate::provider::morph::MorphProvider;
use crate::provider::tags;

/// What [`gc`] should do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcOptions {
    /// Only list what would be stopped.
    pub dry_run: bool,
    /// Spare instances younger than this (by their `created` time). An
    /// instance whose creation time is unknown is spared too.
    pub older_than: Option<Duration>,
    /// Only instances of this runtime (`hecate_runtime_id` tag).
    pub runtime_id: Option<String>,
}

/// What [`gc`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// The instances selected (tagged, and old enough if `older_than` was
    /// given).
    pub found: Vec<GcInstance>,
    /// Ids of the instances stopped (empty in a dry run). An instance that
    /// was already gone counts as stopped.
    pub stopped: Vec<String>,
    /// Instances that could not be stopped, with the reason.
    pub failed: Vec<(String, String)>,
}

/// One instance found by [`gc`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GcInstance {
    /// The MorphCloud instance id.
    pub id: String,
    /// Its `hecate_task_id` tag.
    pub task_id: Option<String>,
    /// Its `hecate_runtime_id` tag.
    pub runtime_id: Option<String>,
    /// Creation time, Unix seconds (0 if the server did not say).
    pub created: i64,
    /// Its status as the server reported it.
    pub status: String,
}

/// Lists the instances tagged `created_by=hecate` (and
/// `hecate_runtime_id=…` if given), keeps those older than
/// `opts.older_than`, and stops them unless `opts.dry_run`.
///
/// Fails only if the instances cannot be listed; failures to stop single
/// instances are reported in [`GcReport::failed`].
pub async fn gc(config: &MorphConfig, opts: GcOptions) -> Result<GcReport> {
    let provider = MorphProvider::for_cleanup(config)?;
    let mut tags = vec![(tags::CREATED_BY, tags::CREATED_BY_VALUE)];
    if let Some(runtime) = &opts.runtime_id {
        tags.push((tags::RUNTIME_ID, runtime.as_str()));
    }
    let listed = provider.list_tagged(&tags).await?;
    let now = unix_now();
    let mut found = Vec::new();
    for info in listed {
        if let Some(min_age) = opts.older_than {
            let old_enough = info
                .created
                .is_some_and(|created| now.saturating_sub(created) >= min_age.as_secs() as i64);
            if !old_enough {
                log::debug!("gc: vm={} spared (younger than {min_age:?})", info.id);
                continue;
            }
        }
        found.push(GcInstance {
            task_id: info.metadata.get(tags::TASK_ID).cloned(),
            runtime_id: info.metadata.get(tags::RUNTIME_ID).cloned(),
            created: info.created.unwrap_or(0),
            status: info.status.to_string(),
            id: info.id,
        });
    }
    let mut report = GcReport {
        found,
        ..GcReport::default()
    };
    if opts.dry_run {
        return Ok(report);
    }
    let ids: Vec<String> = report.found.iter().map(|i| i.id.clone()).collect();
    let (stopped, failed) = provider.stop_instances(&ids).await;
    for id in &stopped {
        log::info!("gc: vm={id} stopped");
    }
    report.stopped = stopped;
    report.failed = failed
        .into_iter()
        .map(|(id, err)| (id, err.to_string()))
        .collect();
    Ok(report)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Arguments of `hecate gc`.
#[cfg(feature = "cli")]
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GcArgs {
    /// Stop the instances found (without it, only list them: a dry run).
    #[arg(long)]
    pub yes: bool,
    /// Spare instances younger than this, e.g. `90s`, `30m`, `2h`, `1d`
    /// (a bare number is seconds).
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub older_than: Option<Duration>,
    /// Only instances started by this runtime id.
    #[arg(long, value_name = "ID")]
    pub runtime_id: Option<String>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Parses an age like `90s`, `30m`, `2h`, `1d` or `45` (seconds).
pub fn parse_age(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not an age like 90s, 30m, 2h or 1d"))?;
    let unit_secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1,
        "m" | "min" | "mins" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use s, m, h or d)"
            ))
        }
    };
    n.checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Finds local instances whose runtime process is gone (see
/// [`LocalProvider::abandoned`](crate::provider::local::LocalProvider::abandoned)),
/// keeps those matching `opts`, and unless `opts.dry_run` ends them: their
/// leftover launchers, then every leftover launcher cgroup of a dead
/// launcher ([`crate::launcher::remove_leftover_cgroups`]), then whatever
/// still carries their marker; and removes their directories.
///
/// Task ids and runtime ids come from files the instances' commands can
/// write: they select nothing but the `runtime_id` filter, and callers
/// printing them must escape them (as [`run_cli`] does).
pub async fn gc_local(config: &crate::Config, opts: GcOptions) -> Result<GcReport> {
    let provider = crate::provider::local::LocalProvider::for_cleanup(config)?;
    let now = unix_now();
    let found: Vec<GcInstance> = provider
        .abandoned()
        .into_iter()
        .filter(|a| opts.runtime_id.is_none() || a.runtime_id == opts.runtime_id)
        .filter(|a| {
            opts.older_than.is_none_or(|min| {
                a.created > 0 && now.saturating_sub(a.created) >= min.as_secs() as i64
            })
        })
        .map(|a| GcInstance {
            id: a.id,
            task_id: a.task_id,
            runtime_id: a.runtime_id,
            created: a.created,
            status: "abandoned".to_string(),
        })
        .collect();
    let mut report = GcReport {
        found,
        ..GcReport::default()
    };
    if opts.dry_run {
        return Ok(report);
    }
    let mut failed = std::collections::BTreeMap::new();
    for inst in &report.found {
        if let Err(err) = provider.end_launcher(&inst.id).await {
            failed.insert(inst.id.clone(), err.to_string());
        }
    }
    // With their launchers gone, the instances' cgroups are leftovers.
    let cgroups = crate::launcher::remove_leftover_cgroups(false);
    for dir in &cgroups.removed {
        log::info!("gc: leftover cgroup {} removed", dir.display());
    }
    for (dir, why) in &cgroups.failed {
        log::warn!("gc: leftover cgroup {} not removed: {why}", dir.display());
    }
    for inst in &report.found {
        if let Some(why) = failed.remove(&inst.id) {
            report.failed.push((inst.id.clone(), why));
            continue;
        }
        match provider.remove_abandoned(&inst.id).await {
            Ok(()) => report.stopped.push(inst.id.clone()),
            Err(err) => report.failed.push((inst.id.clone(), err.to_string())),
        }
    }
    Ok(report)
}

/// `text` safe to print on a terminal: control characters (C0, DEL, C1,
/// which start escape sequences) and bidirectional overrides are shown as
/// `\u{..}` escapes, backslashes doubled. Fields of instances (task ids,
/// paths) are written by tasks.
pub fn escape_for_terminal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if needs_escape(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A JSON line safe for a terminal: serde_json escapes C0 controls, this
/// also escapes DEL, C1 controls and bidirectional overrides (as JSON
/// `\uXXXX`, so the line still parses to the same value).
#[cfg(feature = "cli")]
pub fn json_for_terminal(value: &serde_json::Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        if needs_escape(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `hecate gc` on the configured backend and prints the result to stdout:
/// a table, or with `--json` one JSON object per instance (with an
/// `action` of `would_stop`, `stopped` or `failed`). Returns the report;
/// the caller decides the exit code (for example non-zero if any failed).
#[cfg(feature = "cli")]
pub async fn run_cli(args: GcArgs, config: &crate::Config) -> Result<GcReport> {
    let opts = GcOptions {
        dry_run: !args.yes,
        older_than: args.older_than,
        runtime_id: args.runtime_id.clone(),
    };
    let report = match config.backend {
        crate::BackendKind::Morph => gc(&config.morph, opts).await?,
        // Sandboxed instances live in the same directories, with the same
        // launchers and cgroups.
        crate::BackendKind::Local | crate::BackendKind::Sandbox | crate::BackendKind::Auto => {
            gc_local(config, opts).await?
        }
    };
    let now = unix_now();
    let action = |id: &str| -> (&'static str, Option<&str>) {
        if let Some((_, why)) = report.failed.iter().find(|(f, _)| f == id) {
            ("failed", Some(why.as_str()))
        } else if report.stopped.iter().any(|s| s == id) {
            ("stopped", None)
        } else {
            ("would_stop", None)
        }
    };
    if args.json {
        for inst in &report.found {
            let (act, error) = action(&inst.id);
            outln!("{}", json_line(inst, act, error));
        }
        return Ok(report);
    }
    outln!(
        "{:<24} {:<24} {:<24} {:>8} {:<10} ACTION",
        "ID",
        "TASK",
        "RUNTIME",
        "AGE",
        "STATUS"
    );
    for inst in &report.found {
        let (act, error) = action(&inst.id);
        let age = if inst.created > 0 {
            format_age(now.saturating_sub(inst.created))
        } else {
            "?".to_string()
        };
        outln!("{}", table_row(inst, &age, act, error));
    }
    if args.yes {
        outln!(
            "{} found, {} stopped, {} failed",
            report.found.len(),
            report.stopped.len(),
            report.failed.len()
        );
    } else {
        outln!(
            "{} found (dry run: nothing stopped; pass --yes to stop them)",
            report.found.len()
        );
    }
    Ok(report)
}

/// One `--json` line: the instance and what happened to it. Every string
/// comes from a task or a server, so it goes through [`json_for_terminal`]:
/// the line decodes to the same strings and reaches a terminal inert.
#[cfg(feature = "cli")]
pub fn json_line(inst: &GcInstance, action: &str, error: Option<&str>) -> String {
    json_for_terminal(&serde_json::json!({
        "id": inst.id,
        "task_id": inst.task_id,
        "runtime_id": inst.runtime_id,
        "created": inst.created,
        "status": inst.status,
        "action": action,
        "error": error,
    }))
}

/// One row of the table, every task- or server-written field escaped with
/// [`escape_for_terminal`].
#[cfg(feature = "cli")]
pub fn table_row(inst: &GcInstance, age: &str, action: &str, error: Option<&str>) -> String {
    format!(
        "{:<24} {:<24} {:<24} {:>8} {:<10} {}{}",
        escape_for_terminal(&inst.id),
        escape_for_terminal(inst.task_id.as_deref().unwrap_or("-")),
        escape_for_terminal(inst.runtime_id.as_deref().unwrap_or("-")),
        age,
        escape_for_terminal(&inst.status),
        action,
        error.map_or(String::new(), |e| format!(": {}", escape_for_terminal(e)))
    )
}

#[cfg(feature = "cli")]
fn format_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_with_units() {
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_age("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_age("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_age("45"), Ok(Duration::from_secs(45)));
        for bad in ["", "m", "5x", "-3m", "1.5h", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn terminal_escapes_are_shown_not_sent() {
        let nasty = "t\x1b]0;owned\x07\x1b[2J\u{9b}31m\u{7f}\u{202e}x\\y\n";
        let shown = escape_for_terminal(nasty);
        assert!(!shown.chars().any(needs_escape), "{shown}");
        assert_eq!(
            shown,
            "t\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\u{9b}31m\\u{7f}\\u{202e}x\\\\y\\u{a}"
        );
        assert_eq!(escape_for_terminal("local-1-2-ab"), "local-1-2-ab");
    }

    #[cfg(feature = "cli")]
    #[test]
    fn json_lines_keep_their_value_but_no_raw_controls() {
        let v = serde_json::json!({ "task_id": "a\u{9b}b\u{1b}c\u{202e}" });
        let line = json_for_terminal(&v);
        assert!(!line.chars().any(needs_escape), "{line}");
        let back: serde_json::Value = serde_json::from_str(&line).expect("still JSON");
        assert_eq!(back, v);
    }

    #[cfg(feature = "cli")]
    fn hostile() -> GcInstance {
        GcInstance {
            id: "local-1\u{1b}]0;owned\u{7}".into(),
            task_id: Some("t\u{1b}[2J\r\nFAKE ROW\u{9b}31m".into()),
            runtime_id: Some("rt\u{7f}".into()),
            created: 0,
            status: "abandoned".into(),
        }
    }

    #[cfg(feature = "cli")]
    #[test]
    fn table_rows_escape_control_characters() {
        let row = table_row(
            &hostile(),
            "?",
            "failed",
            Some("rm /tmp/\u{1b}[31mx: denied"),
        );
        assert!(!row.chars().any(char::is_control), "{row:?}");
        assert!(
            row.contains("t\\u{1b}[2J\\u{d}\\u{a}FAKE ROW\\u{9b}31m"),
            "{row}"
        );
        assert!(row.contains("/tmp/\\u{1b}[31mx"), "{row}");
    }

    #[cfg(feature = "cli")]
    #[test]
    fn json_lines_escape_control_characters_and_decode_to_the_same_text() {
        let inst = hostile();
        let line = json_line(&inst, "failed", Some("\u{9b}2J"));
        assert!(!line.chars().any(char::is_control), "{line:?}");
        let back: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(back["task_id"], inst.task_id.expect("set").as_str());
        assert_eq!(back["id"], inst.id.as_str());
        assert_eq!(back["runtime_id"], "rt\u{7f}");
        assert_eq!(back["error"], "\u{9b}2J");
    }

    #[cfg(feature = "cli")]
    #[test]
    fn ages_print_compactly() {
        assert_eq!(format_age(59), "59s");
        assert_eq!(format_age(600), "10m");
        assert_eq!(format_age(3 * 3600), "3h");
        assert_eq!(format_age(3 * 86_400), "3d");
    }
}
