//! What a caller hands the launcher to start ([`CommandSpec`]) and what it
//! gets back ([`Spawned`], whose [`Exit`] resolves to the command's status).

use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitStatus;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::Result;

/// A command to start through the launcher. Nothing is inherited from the
/// runtime: the environment is exactly `env` (plus the two marker
/// variables), stdin is `/dev/null`, and stdout/stderr go to the given
/// descriptors (usually pipe write ends the runtime reads) or `/dev/null`.
#[derive(Debug)]
pub struct CommandSpec {
    /// The program: a path, or a name looked up in `env`'s `PATH`.
    pub program: String,
    /// `argv[0]` (the program when `None`).
    pub arg0: Option<String>,
    /// The arguments after `argv[0]`.
    pub args: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// The working directory (`/` when `None`).
    pub cwd: Option<PathBuf>,
    /// Where stdout goes (`/dev/null` when `None`).
    pub stdout: Option<OwnedFd>,
    /// Where stderr goes (`/dev/null` when `None`).
    pub stderr: Option<OwnedFd>,
    /// The persistent shell: restore the instance's saved state and, with
    /// [`ShellOp::save`](crate::shell::native::ShellOp::save), save the
    /// state the command leaves. Only for [`CommandSpec::shell`] commands.
    pub persist: Option<crate::shell::native::ShellOp>,
}

impl CommandSpec {
    /// A command running `program` with no arguments and no environment.
    pub fn new(program: impl Into<String>) -> Self {
        CommandSpec {
            program: program.into(),
            arg0: None,
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stdout: None,
            stderr: None,
            persist: None,
        }
    }

    /// `/bin/bash -c <script>`.
    pub fn shell(script: impl Into<String>) -> Self {
        CommandSpec::new("/bin/bash").arg("-c").arg(script)
    }

    /// Appends an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds an environment entry.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Restores (and with `op.save` saves) the persistent shell state.
    pub fn persist(mut self, op: crate::shell::native::ShellOp) -> Self {
        self.persist = Some(op);
        self
    }

    /// Sends stdout to `fd`.
    pub fn stdout(mut self, fd: OwnedFd) -> Self {
        self.stdout = Some(fd);
        self
    }

    /// Sends stderr to `fd`.
    pub fn stderr(mut self, fd: OwnedFd) -> Self {
        self.stderr = Some(fd);
        self
    }
}

/// A started command.
#[derive(Debug)]
pub struct Spawned {
    /// The launcher's id for it (for [`Launcher::kill`](super::Launcher::kill)); its processes
    /// carry `HECATE_EXEC_ID=<instance>.<id>`.
    pub id: u64,
    /// Its main process.
    pub pid: u32,
    /// Resolves when the main process ends.
    pub exit: Exit,
}

/// The exit of a command's main process. It fails only if the launcher
/// went away first; it has no deadline of its own (the caller's command
/// timeout decides how long to wait, then kills).
#[derive(Debug)]
pub struct Exit(pub(super) oneshot::Receiver<Result<ExitStatus>>);

impl Future for Exit {
    type Output = Result<ExitStatus>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(super::client::gone())))
    }
}
