//! `hecate sim`: runs a simulator in the foreground until Ctrl-C or SIGTERM,
//! after printing the environment a client needs to use it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::{ExecMode, FaultConfig, SimConfig, SimServer};
use crate::error::{Error, Result};

/// Arguments of `hecate sim`.
#[derive(Clone, clap::Args)]
pub struct SimArgs {
    /// Port to listen on, on 127.0.0.1 (0 picks a free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Milliseconds an instance stays `pending` before it is `ready`.
    #[arg(long, default_value_t = 0)]
    pub boot_ms: u64,
    /// Overall fault rate (0.0..=1.0), spread evenly over all fault kinds
    /// (5xx, 429, dropped connections, slow answers, boot errors, vanishing
    /// instances).
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Seconds sent in `Retry-After` with simulated 429 and 503 answers.
    #[arg(long, default_value_t = 1)]
    pub retry_after: u64,
    /// Milliseconds a simulated slow exec waits.
    #[arg(long, default_value_t = 2000)]
    pub slow_ms: u64,
    /// Seed of the fault generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run no commands: every exec succeeds and echoes its command text.
    #[arg(long)]
    pub echo: bool,
    /// The streaming exec's event form: `json` (what the official SDK
    /// reads) or `documented` (named `stdout`/`stderr`/`exit` events).
    #[arg(long, default_value = "json", value_parser = ["json", "documented"])]
    pub sse_format: String,
    /// The API key clients must send (a made-up one; never a real key).
    /// Without it a random key is made for this run and printed: the
    /// simulator runs commands as the user who started it, so a key other
    /// local users can guess would let them do the same.
    #[arg(long, env = "HECATE_SIM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Directory for the instances' private directories (default: the
    /// system's temporary directory).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// HTTP worker threads.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
}

impl fmt::Debug for SimArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimArgs")
            .field("port", &self.port)
            .field("boot_ms", &self.boot_ms)
            .field("fault_rate", &self.fault_rate)
            .field("retry_after", &self.retry_after)
            .field("slow_ms", &self.slow_ms)
            .field("seed", &self.seed)
            .field("echo", &self.echo)
            .field("sse_format", &self.sse_format)
            .field("api_key", &"[redacted]")
            .field("root", &self.root)
            .field("workers", &self.workers)
            .finish()
    }
}

impl SimArgs {
    /// The simulator configuration these arguments describe.
    pub fn to_config(&self) -> Result<SimConfig> {
        if !(0.0..=1.0).contains(&self.fault_rate) {
            return Err(Error::config(format!(
                "--fault-rate {} is not within 0.0..=1.0",
                self.fault_rate
            )));
        }
        let api_key = match &self.api_key {
            Some(key) if key.trim().is_empty() => {
                return Err(Error::config("--api-key must not be empty"))
            }
            Some(key) => key.clone(),
            None => super::random_api_key()?,
        };
        if self.workers == 0 {
            return Err(Error::config("--workers must be at least 1"));
        }
        let faults = FaultConfig {
            retry_after_secs: self.retry_after,
            slow_by: Duration::from_millis(self.slow_ms),
            seed: self.seed,
            ..FaultConfig::default()
        }
        .spread(self.fault_rate);
        Ok(SimConfig {
            api_key,
            boot_time: Duration::from_millis(self.boot_ms),
            exec_mode: if self.echo {
                ExecMode::Echo
            } else {
                ExecMode::Bash
            },
            root: self.root.clone().unwrap_or_else(std::env::temp_dir),
            faults,
            port: self.port,
            workers: self.workers,
            sse_format: if self.sse_format == "documented" {
                super::SseFormat::Documented
            } else {
                super::SseFormat::Json
            },
        })
    }
}

/// Runs `hecate sim`: starts a simulator, prints `MORPH_BASE_URL=…` and
/// `MORPH_API_KEY=…` on stdout (a random key unless one was given) and how
/// to use them on stderr, and serves until `until` ends (the binary passes
/// its first SIGINT or SIGTERM, listened for from its start), then stops it
/// (killing the instances' processes and removing their directories).
pub async fn run_cli(args: SimArgs, until: impl std::future::Future<Output = ()>) -> Result<()> {
    let config = args.to_config()?;
    let server = SimServer::start(config)
        .await
        .map_err(|err| Error::internal(format!("cannot start the simulator: {err}")))?;
    // The key is the simulator's own (random, or made up by the user);
    // printing it is the point: it is what a client must send.
    outln!("MORPH_BASE_URL={}", server.base_url());
    outln!("MORPH_API_KEY={}", server.api_key());
    let origin = if args.api_key.is_some() {
        "the key you gave"
    } else {
        "a random key made for this run; give --api-key or HECATE_SIM_API_KEY for a fixed one"
    };
    eprintln!(
        "hecate sim: serving on {} with {origin}.\n\
         Use it from another shell: export the two lines above, then \
         HECATE_BACKEND=morph hecate exec -- echo hi",
        server.base_url()
    );
    until.await;
    server.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn fault_rate_is_spread_over_all_kinds() {
        let cli = Cli::parse_from(["sim", "--fault-rate", "0.9", "--boot-ms", "250", "--echo"]);
        let config = cli.sim.to_config().expect("valid");
        assert!((config.faults.error_503 - 0.1).abs() < 1e-9);
        assert!((config.faults.vanish - 0.1).abs() < 1e-9);
        assert_eq!(config.boot_time, Duration::from_millis(250));
        assert_eq!(config.exec_mode, ExecMode::Echo);
    }

    #[test]
    fn without_a_key_each_run_gets_a_random_one() {
        let cli = Cli::parse_from(["sim"]);
        let a = cli.sim.to_config().expect("valid").api_key;
        let b = cli.sim.to_config().expect("valid").api_key;
        assert_ne!(a, "test-key");
        assert_ne!(a, b, "a fresh key per run");
        assert!(a.len() >= 32, "{} characters", a.len());
        let cli = Cli::parse_from(["sim", "--api-key", "fixed"]);
        assert_eq!(cli.sim.to_config().expect("valid").api_key, "fixed");
    }

    #[test]
    fn fault_rate_above_one_is_a_config_error() {
        let cli = Cli::parse_from(["sim", "--fault-rate", "1.5"]);
        let err = cli.sim.to_config().expect_err("invalid");
        assert_eq!(err.kind(), crate::ErrorKind::Config);
    }

    #[test]
    fn debug_hides_the_api_key() {
        let cli = Cli::parse_from(["sim", "--api-key", "s3cret"]);
        assert!(!format!("{:?}", cli.sim).contains("s3cret"));
        let config = cli.sim.to_config().expect("valid");
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
