//! The scenarios: each sets up its environment, runs the load, and adds
//! its own figures to the report.

use std::time::{Duration, Instant};

use super::args::Plan;
use super::drive::{drive, finish, needle, report};
use super::env::{base_config, start_runtime, Env};
use super::{
    rss_bytes, BenchArgs, BenchReport, FaultReport, IdleReport, NoopProvider, Percentiles,
};
use crate::config::BackendKind;
use crate::error::{Error, Result};
use crate::runtime::ExecRequest;
use crate::sim::FaultConfig;

pub(super) async fn exec_scenario(args: &BenchArgs, plan: &Plan) -> Result<BenchReport> {
    let mut config = base_config(args, plan)?;
    let env = match (args.backend, args.external) {
        (BackendKind::Local, false) => Env::local(&mut config, false),
        (BackendKind::Sandbox, false) => Env::local(&mut config, true),
        (BackendKind::Auto, false) => {
            let (kind, warning) = crate::provider::resolve_backend(&config);
            if let Some(warning) = warning {
                log::warn!("{warning}");
            }
            Env::local(&mut config, kind == BackendKind::Sandbox)
        }
        (BackendKind::Morph, false) => Env::sim(args, plan, &mut config).await?,
        (_, true) => {
            config.backend = BackendKind::Morph;
            Env::External
        }
    };
    let rt = start_runtime(&env, &config)?;
    let seen = drive(&rt, args, plan, "bench", true).await;
    let mut report = report(args, plan, env.name(), &config, &seen);
    finish(&rt, env, &config, &mut report).await?;
    Ok(report)
}

pub(super) async fn idle_actors(args: &BenchArgs, plan: &Plan) -> Result<BenchReport> {
    let config = base_config(args, plan)?;
    let provider = NoopProvider::new();
    let env = Env::Noop(provider.clone());
    let rt = start_runtime(&env, &config)?;
    // One task first, so the arbiters and their thread-local state exist
    // before the baseline is taken.
    rt.exec("warm-up", ExecRequest::new("true")).await?;
    let before = rss_bytes();
    let seen = drive(&rt, args, plan, "idle", false).await;
    let after = rss_bytes();
    let mut report = report(args, plan, env.name(), &config, &seen);
    report.instance_starts = provider.started().saturating_sub(1);
    report.instance_starts_per_sec = report.instance_starts as f64 / report.wall_secs.max(1e-9);
    let stopping = Instant::now();
    finish(&rt, env, &config, &mut report).await?;
    report.idle = Some(IdleReport {
        rss_before_bytes: before,
        rss_after_bytes: after,
        bytes_per_actor: after.saturating_sub(before) as f64 / plan.tasks as f64,
        spawn_secs: seen.wall.as_secs_f64(),
        shutdown_secs: stopping.elapsed().as_secs_f64(),
    });
    Ok(report)
}

pub(super) async fn boot(args: &BenchArgs, plan: &Plan) -> Result<BenchReport> {
    let mut config = base_config(args, plan)?;
    let env = if args.external {
        config.backend = BackendKind::Morph;
        Env::External
    } else {
        Env::sim(args, plan, &mut config).await?
    };
    let rt = start_runtime(&env, &config)?;
    // One instance alone: its start and first command.
    let probe = Instant::now();
    rt.exec("boot-probe", ExecRequest::new(args.command.clone()))
        .await?;
    let single = probe.elapsed();
    rt.evict("boot-probe").await?;
    let seen = drive(&rt, args, plan, "boot", true).await;
    let mut report = report(args, plan, env.name(), &config, &seen);
    report.single_boot_secs = Some(single.as_secs_f64());
    report.ready_ratio = report
        .all_ready_secs
        .map(|all| all / single.as_secs_f64().max(1e-9));
    finish(&rt, env, &config, &mut report).await?;
    Ok(report)
}

pub(super) async fn faults(args: &BenchArgs, plan: &Plan) -> Result<BenchReport> {
    if args.external {
        return Err(Error::invalid_input(
            "the faults scenario needs the in-process simulator (drop --external)",
        ));
    }
    let mut config = base_config(args, plan)?;
    let env = Env::sim(args, plan, &mut config).await?;
    let rt = start_runtime(&env, &config)?;
    let seen = drive(&rt, args, plan, "faults", true).await;
    let mut report = report(args, plan, env.name(), &config, &seen);
    let Env::Sim(sim) = &env else {
        return Err(Error::internal("the faults scenario runs on the simulator"));
    };
    let stats = sim.stats();
    let f = stats.faults;
    let mut found = FaultReport {
        injected: [
            ("error_500", f.error_500),
            ("error_502", f.error_502),
            ("error_503", f.error_503),
            ("error_429", f.error_429),
            ("drop_before", f.drop_before),
            ("drop_after", f.drop_after),
            ("slow", f.slow),
            ("boot_error", f.boot_error),
            ("vanish", f.vanish),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        sim_execs: stats.execs,
        ..FaultReport::default()
    };
    for task in 0..plan.tasks {
        for index in 0..plan.commands {
            let runs = sim.command_runs_containing(&needle(task, index));
            let ok = seen.ran_ok[task * plan.commands + index];
            found.ran_twice += u64::from(runs > 1);
            found.ok_but_not_run += u64::from(ok && runs == 0);
            found.failed_but_ran += u64::from(!ok && runs > 0);
        }
    }
    report.faults = Some(found);
    if args.calm_teardown {
        sim.set_faults(FaultConfig::none());
    }
    finish(&rt, env, &config, &mut report).await?;
    Ok(report)
}

pub(super) async fn eviction(args: &BenchArgs, plan: &Plan) -> Result<BenchReport> {
    let mut config = base_config(args, plan)?;
    let idle = Duration::from_millis(args.idle_ms);
    config.idle_lifetime = idle;
    let provider = NoopProvider::recording_eviction(idle);
    let env = Env::Noop(provider.clone());
    let rt = start_runtime(&env, &config)?;
    let seen = drive(&rt, args, plan, "evict", true).await;
    let mut report = report(args, plan, env.name(), &config, &seen);
    let deadline = idle * 10 + Duration::from_secs(30);
    if actix::clock::timeout(deadline, provider.wait_stopped(plan.tasks as u64))
        .await
        .is_err()
    {
        return Err(Error::new(
            crate::ErrorKind::Timeout,
            format!(
                "only {} of {} idle instances were evicted within {deadline:?}",
                provider.stopped(),
                plan.tasks
            ),
        ));
    }
    report.eviction_lateness = Percentiles::of(&provider.lateness());
    finish(&rt, env, &config, &mut report).await?;
    Ok(report)
}
