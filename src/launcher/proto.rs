//! The control protocol between the runtime and its launcher: the request
//! and event messages and their framing (a 4-byte big-endian length, then
//! that many bytes of JSON) on a Unix stream socket. Descriptors travel
//! beside the bytes (`SCM_RIGHTS`, attached to the first byte of the frame
//! that uses them), so a command's output never flows through the launcher.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The largest frame either side accepts (a spawn request carries a command
/// of at most [`crate::provider::MAX_COMMAND_BYTES`] plus its environment).
pub const MAX_FRAME: usize = 4 << 20;

/// How many descriptors one frame may carry (a spawn passes at most two).
pub const MAX_FDS_PER_FRAME: usize = 4;

/// A request from the runtime to its launcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start a command; answered by `Spawned` or `SpawnFailed`, later
    /// `Exited` when its main process ends.
    Spawn(SpawnRequest),
    /// Send `signal` to every process the command started (all of them,
    /// wherever they went); answered by `Killed`.
    Kill {
        /// The command.
        id: u64,
        /// The signal (`SIGKILL` takes the thorough path: freeze, kill,
        /// repeat until nothing is left).
        signal: i32,
    },
    /// Send `signal` to every process of every command; answered by
    /// `KilledAll`. The launcher keeps running.
    KillAll {
        /// The signal.
        signal: i32,
    },
    /// Kill everything, remove the instance's cgroups, answer `Stopped`
    /// and exit.
    Stop,
}

/// Where a command's stdout or stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdioSpec {
    /// `/dev/null`.
    Null,
    /// The next descriptor passed with the frame (stdout's before stderr's).
    Fd,
}

/// What the launcher needs to start one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnRequest {
    /// The runtime's id for the command, unique per launcher.
    pub id: u64,
    /// The program: a path, or a name looked up in the command's `PATH`.
    pub program: String,
    /// The whole argument vector, `argv[0]` included.
    pub argv: Vec<String>,
    /// The command's whole environment (the launcher adds the markers).
    pub env: Vec<(String, String)>,
    /// The working directory (the launcher's, `/`, when absent).
    pub cwd: Option<String>,
    /// Where stdout goes.
    pub stdout: StdioSpec,
    /// Where stderr goes.
    pub stderr: StdioSpec,
    /// Restore the instance's persistent shell state into the command (its
    /// working directory and exported variables) and, with `save`, keep
    /// what its bash leaves ([`crate::shell::native`]). `argv` must then be
    /// `[bash, -c, command]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<crate::shell::native::ShellOp>,
}

/// An event from the launcher to the runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// The launcher is up; `cgroups` names the mechanisms it tracks
    /// commands with (`v2:<dir>`, `v1:<dir>`), empty when it has none.
    Ready {
        /// The launcher's pid.
        pid: i32,
        /// The instance cgroups in use.
        cgroups: Vec<String>,
        /// What the sandbox applied, when the launcher runs in one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sandbox: Option<super::sandbox::SandboxReport>,
    },
    /// The command's main process runs.
    Spawned {
        /// The command.
        id: u64,
        /// Its main process.
        pid: i32,
    },
    /// The command could not be started.
    SpawnFailed {
        /// The command.
        id: u64,
        /// The OS error.
        errno: i32,
        /// The step that failed (`exec`, `chdir`, `cgroup`, `fork`, ...).
        stage: String,
    },
    /// The command's main process ended (its other processes may live on
    /// until a `Kill`).
    Exited {
        /// The command.
        id: u64,
        /// The raw wait status.
        status: i32,
    },
    /// Answer to `Kill`.
    Killed {
        /// The command.
        id: u64,
        /// Processes of the command still alive afterwards (0 is the goal).
        remaining: u32,
    },
    /// Answer to `KillAll`.
    KilledAll {
        /// Processes still alive afterwards.
        remaining: u32,
    },
    /// Answer to `Stop`, the launcher's last message.
    Stopped {
        /// Processes still alive afterwards.
        remaining: u32,
    },
    /// A request the launcher could not parse or accept.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// A framing or decoding failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame announced more than [`MAX_FRAME`] bytes.
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// A frame's body is not the expected JSON.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// One frame: the length prefix and the JSON body of `msg`.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; 4];
    serde_json::to_writer(&mut out, msg).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = out.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let prefix = u32::try_from(len).expect("MAX_FRAME fits in u32");
    out[..4].copy_from_slice(&prefix.to_be_bytes());
    Ok(out)
}

/// Bytes received so far, cut into frames as they complete.
#[derive(Debug, Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
    start: usize,
}

impl FrameBuf {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `None` until one has fully arrived. An
    /// error poisons the stream: the caller should drop the connection.
    pub fn next_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let pending = &self.buf[self.start..];
        let Some(prefix) = pending.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(prefix.try_into().expect("slice of 4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        let Some(body) = pending.get(4..4 + len) else {
            return Ok(None);
        };
        let msg = serde_json::from_slice(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
        self.start += 4 + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(msg))
    }

    /// Whether bytes of an incomplete frame are buffered.
    pub fn has_partial(&self) -> bool {
        self.start < self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn_req() -> Request {
        Request::Spawn(SpawnRequest {
            id: 7,
            program: "/bin/sh".into(),
            argv: vec!["sh".into(), "-c".into(), "echo \"hi\"\n".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: Some("/tmp".into()),
            stdout: StdioSpec::Fd,
            stderr: StdioSpec::Null,
            shell: None,
        })
    }

    #[test]
    fn frames_round_trip_whole_and_byte_by_byte() {
        let msgs = vec![
            spawn_req(),
            Request::Kill { id: 7, signal: 9 },
            Request::KillAll { signal: 15 },
            Request::Stop,
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            wire.extend(encode(m).expect("encode"));
        }
        let mut whole = FrameBuf::default();
        whole.push(&wire);
        for m in &msgs {
            assert_eq!(
                whole.next_frame::<Request>().expect("decode").as_ref(),
                Some(m)
            );
        }
        assert_eq!(whole.next_frame::<Request>().expect("empty"), None);
        assert!(!whole.has_partial());

        let mut dribble = FrameBuf::default();
        let mut got = Vec::new();
        for b in &wire {
            dribble.push(std::slice::from_ref(b));
            while let Some(m) = dribble.next_frame::<Request>().expect("decode") {
                got.push(m);
            }
        }
        assert_eq!(got, msgs);
    }

    #[test]
    fn length_prefix_is_big_endian_body_length() {
        let frame = encode(&Event::Stopped { remaining: 0 }).expect("encode");
        let len = u32::from_be_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
        assert_eq!(len, frame.len() - 4);
        assert_eq!(&frame[4..], br#"{"ev":"stopped","remaining":0}"#);
    }

    #[test]
    fn oversized_frame_is_refused_before_its_body_arrives() {
        let mut buf = FrameBuf::default();
        buf.push(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert_eq!(
            buf.next_frame::<Request>(),
            Err(FrameError::TooLarge(MAX_FRAME + 1))
        );
    }

    #[test]
    fn malformed_body_is_an_error_not_a_panic() {
        let mut buf = FrameBuf::default();
        buf.push(&3u32.to_be_bytes());
        buf.push(b"{x}");
        assert!(matches!(
            buf.next_frame::<Request>(),
            Err(FrameError::Malformed(_))
        ));
        let mut unknown = FrameBuf::default();
        let body = br#"{"op":"reboot"}"#;
        unknown.push(&(body.len() as u32).to_be_bytes());
        unknown.push(body);
        assert!(matches!(
            unknown.next_frame::<Request>(),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn partial_frame_waits_for_the_rest() {
        let frame = encode(&Event::Spawned { id: 1, pid: 42 }).expect("encode");
        let mut buf = FrameBuf::default();
        buf.push(&frame[..frame.len() - 1]);
        assert_eq!(buf.next_frame::<Event>().expect("partial"), None);
        assert!(buf.has_partial());
        buf.push(&frame[frame.len() - 1..]);
        assert_eq!(
            buf.next_frame::<Event>().expect("complete"),
            Some(Event::Spawned { id: 1, pid: 42 })
        );
    }
}
