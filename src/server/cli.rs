//! The `hecate serve` front end: settings from the environment and flags,
//! the runtime and the server in this process, a graceful stop on the
//! first signal.

use std::future::Future;
use std::time::Duration;

use super::{ApiServer, ServerConfig};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::runtime::Runtime;

/// `hecate serve`: the HTTP API.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on, `HOST:PORT` or a port (default
    /// HECATE_API_BIND, else 127.0.0.1:8787; port 0 picks a free one and
    /// prints it).
    #[arg(long)]
    pub bind: Option<String>,
    /// HTTP worker threads (default HECATE_API_WORKERS, else the cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// On SIGTERM or SIGINT: how long requests in flight and running
    /// commands get before every instance is stopped.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace_secs: u64,
}

/// Runs the server until `interrupted` resolves, then stops accepting,
/// answers what is in flight and stops every instance. Prints the address
/// (and a generated token, once) on stderr. Returns whether the shutdown
/// stopped everything.
pub async fn run_cli(
    args: ServeArgs,
    config: Config,
    interrupted: impl Future<Output = ()>,
) -> Result<bool> {
    let mut server_config = ServerConfig::from_env()?;
    if let Some(bind) = &args.bind {
        server_config.bind =
            super::config::parse_bind(bind).map_err(|e| Error::config(format!("--bind: {e}")))?;
    }
    if let Some(workers) = args.workers {
        if workers == 0 {
            return Err(Error::config("--workers: must be at least 1"));
        }
        server_config.workers = workers.min(256);
    }
    let grace = Duration::from_secs(args.shutdown_grace_secs.max(1));
    server_config.shutdown_timeout = grace;
    let generated = server_config.token.is_none();
    let rt = Runtime::start(config)?;
    let server = match ApiServer::start(rt.clone(), server_config).await {
        Ok(server) => server,
        Err(err) => {
            let _ = rt.shutdown(grace).await;
            return Err(err);
        }
    };
    eprintln!(
        "hecate serve: listening on {} (backend {})",
        server.url(),
        rt.config().backend.as_str()
    );
    if generated {
        // Printed once, here, and nowhere else (never logged).
        eprintln!(
            "hecate serve: HECATE_API_TOKEN is not set; this run's token: {}",
            server.token().expose()
        );
    }
    interrupted.await;
    eprintln!(
        "hecate serve: stopping (requests in flight get {grace:?}; a second signal exits at once)"
    );
    let report = server.shutdown(grace).await?;
    for failure in &report.failed {
        eprintln!(
            "hecate serve: task {:?}: instance {} was not stopped: {}",
            failure.task_id.as_deref().unwrap_or(""),
            failure.instance_id.as_deref().unwrap_or("-"),
            failure.error
        );
    }
    eprintln!(
        "hecate serve: stopped {} instance(s)",
        report.stopped.len() + report.swept.len()
    );
    Ok(report.is_clean())
}
