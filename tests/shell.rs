//! The persistent shell through the runtime: the working directory and
//! exported variables carry over between the calls of a task, on the local
//! backend, the sandbox backend (where the launcher keeps the state:
//! `hecate::shell::native`) and on the MorphCloud simulator running real
//! bash (the wrapped text). Every scenario runs on all three
//! (`each_backend`).

use std::time::{Duration, Instant};

use hecate::{ExecRequest, RestartReason};

use crate::helper::backends::{each_backend, Backend};

#[actix_rt::test]
async fn cd_export_and_unset_persist_between_calls() {
    each_backend(
        |_| {},
        async |b: &Backend| {
            let home = b.out("t", "pwd").await;
            b.out("t", "mkdir -p 'a dir/b' && cd 'a dir'").await;
            b.out(
                "t",
                "cd b; export GREETING='hi there' MULTI=$'x\\ny'; unset LANG",
            )
            .await;
            let out = b
                .out("t", "pwd; echo \"$GREETING|$MULTI|${LANG-unset}\"")
                .await;
            assert_eq!(
                out,
                format!("{}/a dir/b\nhi there|x\ny|unset\n", home.trim_end()),
                "{}",
                b.name
            );
            // `export -n` and `unset` of a saved variable carry over too.
            b.out("t", "unset GREETING; export -n MULTI").await;
            assert_eq!(
                b.out("t", "echo ${GREETING-gone} ${MULTI-gone}").await,
                "gone gone\n"
            );
        },
    )
    .await;
}

#[actix_rt::test]
async fn secret_named_exports_are_not_saved() {
    each_backend(|_| {}, async |b: &Backend| {
        b.out(
            "t",
            "export OPENAI_API_KEY=zz1zz GH_TOKEN=zz2zz db_password=zz3zz MySecret=zz4zz KEEP=zz5zz",
        )
        .await;
        let out = b.out("t", "env | grep 'zz[0-9]zz' | sort").await;
        assert_eq!(out, "KEEP=zz5zz\n", "{}", b.name);
        // Nor written anywhere in the instance's temporary directory.
        let found = b
            .out("t", "grep -rl -e sk-1 -e t-2 -e p-3 -e s-4 \"${TMPDIR:-/tmp}\"/.hecate-shell-* || true")
            .await;
        assert_eq!(found, "", "{}", b.name);
    })
    .await;
    // The patterns are configurable.
    each_backend(
        |c| c.shell.secret_patterns = vec!["cred".into()],
        async |b: &Backend| {
            b.out("t", "export MY_CREDS=1 API_KEY=2").await;
            assert_eq!(
                b.out("t", "echo ${MY_CREDS-no} ${API_KEY-no}").await,
                "no 2\n"
            );
        },
    )
    .await;
}

#[actix_rt::test]
async fn a_timed_out_call_leaves_the_state_as_it_was() {
    each_backend(
        |_| {},
        async |b: &Backend| {
            b.out("t", "mkdir -p keep && cd keep && export V=before")
                .await;
            let out = b
                .run(
                    "t",
                    ExecRequest::new("cd / && export V=after && sleep 30")
                        .timeout(Duration::from_millis(500)),
                )
                .await;
            assert!(out.timed_out, "{}: {out:?}", b.name);
            assert_eq!(out.exit_code, 124);
            let out = b.out("t", "basename \"$PWD\"; echo $V").await;
            assert_eq!(out, "keep\nbefore\n", "{}", b.name);
        },
    )
    .await;
}

#[actix_rt::test]
async fn exit_saves_and_keeps_its_code_and_a_syntax_error_keeps_the_state() {
    each_backend(
        |_| {},
        async |b: &Backend| {
            let out = b
                .run(
                    "t",
                    ExecRequest::new("mkdir -p d && cd d; export V=1; exit 3"),
                )
                .await;
            assert_eq!(out.exit_code, 3, "{}", b.name);
            assert_eq!(b.out("t", "basename \"$PWD\"; echo $V").await, "d\n1\n");

            // A syntax error: bash's message, exit code 2, and nothing changed.
            let bad = "cd / && export V=2; echo a; (";
            let wrapped = b.run("t", ExecRequest::new(bad)).await;
            let bare = b
                .run("t", ExecRequest::new(bad).persistent_shell(false))
                .await;
            assert_eq!(wrapped.exit_code, 2, "{}: {wrapped:?}", b.name);
            assert_eq!(bare.exit_code, 2);
            assert!(
                wrapped.stderr.to_text().contains("syntax error"),
                "{wrapped:?}"
            );
            assert_eq!(
                normalize(&wrapped.stderr.to_text()),
                normalize(&bare.stderr.to_text()),
                "{}",
                b.name
            );
            assert_eq!(
                b.out("t", "basename \"$PWD\"; echo $V").await,
                "d\n1\n",
                "{}",
                b.name
            );
        },
    )
    .await;
}

/// Syntax errors name their source `eval` under the wrapper, `-c` (or
/// nothing, for a script file) without it; the rest must agree.
fn normalize(stderr: &str) -> String {
    stderr
        .replace("eval: line ", "line ")
        .replace("-c: line ", "line ")
}

/// Commands whose output and exit code must not change under the wrapper.
const TRICKY: &[&str] = &[
    "echo out; echo err >&2; exit 7",
    "cat <<'HECATE_EOF_0'\n'single' \"double\" $HOME `x`\nHECATE_EOF_0",
    "cat <<HECATE_SHELL_0\nthe wrapper's delimiter $((6*7))\nHECATE_SHELL_0\necho after",
    "cat <<EOF\nnever closed",
    "echo 'it'\\''s' \"a\\\"b\" # comment \\",
    "echo trailing \\",
    "no_such_command_x; echo $?",
    "f() { echo \"line $LINENO\"; return 4; }\nf",
    "echo $# \"$*\" $?",
    "set -euo pipefail; false | true; echo ok; echo $UNSET_X",
    "trap 'echo own trap' EXIT; echo body",
    "printf 'no newline'",
    "echo \"unterminated",
    "if then fi",
    "exec >&-; echo closed",
    "kill -TERM $$",
];

#[actix_rt::test]
async fn output_and_exit_codes_match_the_unwrapped_command() {
    each_backend(
        |_| {},
        async |b: &Backend| {
            for command in TRICKY {
                // MorphCloud's carriage ends a command with a newline, so there
                // a trailing backslash joins an empty line; the wrapper runs the
                // text as `bash -c` would (the local backend's result).
                if b.name == "sim" && *command == "echo trailing \\" {
                    let wrapped = b.run("t", ExecRequest::new(*command)).await;
                    assert_eq!(wrapped.stdout.to_text(), "trailing \\\n");
                    continue;
                }
                let bare = b
                    .run("t", ExecRequest::new(*command).persistent_shell(false))
                    .await;
                // Twice: with no state yet, and with one restored.
                for round in 0..2 {
                    let wrapped = b.run("t", ExecRequest::new(*command)).await;
                    let what = format!("{} round {round}: {command:?}", b.name);
                    assert_eq!(wrapped.exit_code, bare.exit_code, "{what}");
                    assert_eq!(wrapped.stdout.to_text(), bare.stdout.to_text(), "{what}");
                    assert_eq!(
                        normalize(&wrapped.stderr.to_text()),
                        normalize(&bare.stderr.to_text()),
                        "{what}"
                    );
                }
            }
        },
    )
    .await;
}

#[actix_rt::test]
async fn state_is_per_task() {
    each_backend(
        |_| {},
        async |b: &Backend| {
            let home = b.out("other", "pwd").await;
            b.out("mine", "mkdir -p sub && cd sub && export ONLY_MINE=1")
                .await;
            assert_eq!(
                b.out("other", "pwd; echo ${ONLY_MINE-unset}").await,
                format!("{home}unset\n")
            );
            assert!(b.out("mine", "pwd").await.ends_with("/sub\n"), "{}", b.name);
        },
    )
    .await;
}

#[actix_rt::test]
async fn with_the_setting_off_nothing_persists() {
    each_backend(
        |c| c.shell.persistent = false,
        async |b: &Backend| {
            let home = b.out("t", "pwd").await;
            b.out("t", "mkdir -p sub && cd sub && export V=1").await;
            assert_eq!(
                b.out("t", "pwd; echo ${V-unset}").await,
                format!("{home}unset\n"),
                "{}",
                b.name
            );
            // A call can turn it on for itself: it saves, and the next call
            // that asks restores.
            let on = |c: &str| ExecRequest::new(c).persistent_shell(true);
            b.run("t", on("cd sub && export V=2")).await;
            assert_eq!(b.out("t", "echo ${V-unset}").await, "unset\n");
            assert_eq!(
                b.run("t", on("basename $PWD; echo $V"))
                    .await
                    .stdout
                    .to_text(),
                "sub\n2\n"
            );
        },
    )
    .await;
    // With it on, a call can opt out: it neither restores nor saves.
    each_backend(
        |_| {},
        async |b: &Backend| {
            b.out("t", "export V=1").await;
            let off = ExecRequest::new("echo ${V-unset}; export V=2").persistent_shell(false);
            assert_eq!(b.run("t", off).await.stdout.to_text(), "unset\n");
            assert_eq!(b.out("t", "echo $V").await, "1\n", "{}", b.name);
        },
    )
    .await;
}

#[actix_rt::test]
async fn background_jobs_start_in_the_restored_state_and_never_save() {
    each_backend(
        |_| {},
        async |b: &Backend| {
            b.out("t", "mkdir -p job && cd job && export V=restored")
                .await;
            let out = b
                .run(
                    "t",
                    ExecRequest::new("echo \"$(basename $PWD) $V\"; cd /; export V=job")
                        .background(),
                )
                .await;
            let job = out.job.expect("a job");
            let start = Instant::now();
            let log = loop {
                let log = b
                    .out(
                        "t",
                        &format!("test -f {} && cat {}; true", job.exit_file, job.log_file),
                    )
                    .await;
                if !log.is_empty() || start.elapsed() > Duration::from_secs(10) {
                    break log;
                }
            };
            assert_eq!(log, "job restored\n", "{}", b.name);
            assert_eq!(
                b.out("t", "basename $PWD; echo $V").await,
                "job\nrestored\n"
            );
        },
    )
    .await;
}

#[actix_rt::test]
async fn a_replaced_instance_starts_with_a_fresh_shell() {
    each_backend(
        |c| c.vm_ttl = Duration::from_millis(1500),
        async |b: &Backend| {
            let first = b
                .run(
                    "t",
                    ExecRequest::new("mkdir -p sub && cd sub && export V=1"),
                )
                .await;
            // Wait (bounded) for the TTL to stop the instance.
            let start = Instant::now();
            while b
                .rt
                .tasks()
                .await
                .expect("tasks")
                .iter()
                .any(|t| t.task_id == "t")
                && start.elapsed() < Duration::from_secs(20)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let out = b
                .run("t", ExecRequest::new("basename $PWD; echo ${V-unset}"))
                .await;
            assert_ne!(out.instance_id, first.instance_id, "{}", b.name);
            assert_eq!(
                out.instance_restarted,
                Some(RestartReason::Ttl),
                "{}",
                b.name
            );
            assert_ne!(out.stdout.to_text(), "sub\n1\n", "{}", b.name);
            assert!(
                out.stdout.to_text().ends_with("unset\n"),
                "{}: {out:?}",
                b.name
            );
        },
    )
    .await;
}

#[actix_rt::test]
async fn a_huge_export_or_a_removed_directory_never_breaks_the_next_call() {
    each_backend(
        |_| {},
        async |b: &Backend| {
            let home = b.out("t", "pwd").await;
            // Bigger than one environment entry may be (128 KiB): restored
            // into the next call's environment it would make every program
            // that call starts fail (E2BIG), so it is not saved.
            b.out(
                "t",
                "mkdir -p gone && cd gone && export BIG=$(head -c 200000 /dev/zero | tr '\\0' x) SMALL=1",
            )
            .await;
            b.out("t", "rmdir \"$PWD\"").await;
            let out = b.out("t", "pwd; echo $SMALL; /bin/echo external").await;
            assert_eq!(
                out,
                format!("{}\n1\nexternal\n", home.trim_end()),
                "{}",
                b.name
            );
        },
    )
    .await;
}
