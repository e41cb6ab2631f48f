use super::*;
use std::process::Command;

/// Runs `text` with `bash -c` in a clean environment whose `TMPDIR` is
/// `tmp`, from `cwd`, as the local backend does.
fn bash(text: &str, tmp: &std::path::Path, extra: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new("/bin/bash");
    cmd.arg("-c")
        .arg(text)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("TMPDIR", tmp)
        .env("HOME", tmp)
        .env("LANG", "C.UTF-8")
        .current_dir(tmp);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.output().expect("bash runs")
}

fn run(command: &str, tmp: &std::path::Path) -> std::process::Output {
    let text = wrap(
        command,
        "vm-1",
        &ShellConfig::default(),
        Mode::RestoreAndSave,
    )
    .expect("wraps");
    bash(&text, tmp, &[])
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cd_export_and_unset_carry_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path();
    std::fs::create_dir(tmp.join("sub dir")).expect("mkdir");
    let out = run(
        "cd 'sub dir' && export A='x y' B=$'l1\\nl2' && unset LANG",
        tmp,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = run("pwd; printf '%s|' \"$A\" \"$B\" \"${LANG-unset}\"", tmp);
    assert_eq!(
        stdout(&out),
        format!("{}/sub dir\nx y|l1\nl2|unset|", tmp.display())
    );
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn secrets_and_markers_are_not_saved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path();
    run(
        "export MY_API_KEY=k1 gh_token=k2 DbPassword=k3 HECATE_X=m OK=1",
        tmp,
    );
    let out = run("env | sort | grep -E '^(MY_|gh_|Db|HECATE_|OK)'", tmp);
    assert_eq!(stdout(&out), "OK=1\n");
    let state = std::fs::read_dir(tmp)
        .expect("read tmp")
        .filter_map(|e| e.ok())
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(!state.contains("k1") && !state.contains("k2") && !state.contains("k3"));
}

#[test]
fn custom_secret_patterns_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ShellConfig {
        persistent: true,
        secret_patterns: ShellConfig::parse_patterns(" creds , ,PIN").expect("valid"),
    };
    let w = |c: &str| wrap(c, "vm", &config, Mode::RestoreAndSave).expect("wraps");
    bash(&w("export MY_CREDS=1 SIM_PIN=2 API_KEY=3"), dir.path(), &[]);
    let out = bash(
        &w("echo ${MY_CREDS-no} ${SIM_PIN-no} ${API_KEY-no}"),
        dir.path(),
        &[],
    );
    assert_eq!(stdout(&out), "no no 3\n");
}

#[test]
fn bad_patterns_are_config_errors() {
    for bad in ["A-B", "x y", "$(id)", &"K".repeat(65)] {
        let err = ShellConfig::parse_patterns(bad).expect_err(bad);
        assert_eq!(err.kind(), crate::ErrorKind::Config, "{bad}");
        assert!(err.to_string().contains("HECATE_SHELL_SECRET_PATTERNS"));
    }
    let many = vec!["A"; 33].join(",");
    assert!(ShellConfig::parse_patterns(&many).is_err());
    assert_eq!(
        ShellConfig::parse_patterns("").expect("empty"),
        Vec::<String>::new()
    );
}

#[test]
fn exit_codes_output_and_errors_match_the_bare_command() {
    let tricky = [
        "exit 3",
        "echo out; echo err >&2; false",
        "echo a; (",
        "echo \"unterminated",
        "foo_not_found_x\necho $LINENO",
        "cat <<EOF\nheredoc $((1+1))\nEOF\necho after",
        "cat <<'HECATE_EOF_0'\n'quoted' $HOME\nHECATE_EOF_0",
        "cat <<EOF\nunterminated heredoc",
        "echo 'it'\\''s' # trailing comment \\",
        "echo trailing backslash \\",
        "# only a comment",
        "\n\necho blank lines first",
        "set -euo pipefail; echo $UNSET_VAR_X",
        "echo $?; echo $#; echo $0",
        "IFS=:; set -f; echo *",
        "set -o noclobber; echo ok",
        "trap 'echo bye' EXIT; echo hi",
        "f() { echo \"in f $LINENO\"; }\nf",
        "kill -TERM $$",
        "; echo x",
        "&& echo x",
        "exec 1>&-; echo closed",
        "printf '%s\\n' \"$(pwd)\" $SHLVL",
    ];
    for command in tricky {
        let dir = tempfile::tempdir().expect("tempdir");
        let bare = bash(command, dir.path(), &[]);
        let wrapped = run(command, dir.path());
        assert_eq!(wrapped.status.code(), bare.status.code(), "{command:?}");
        // The one difference: bash names a syntax error's source `eval`
        // where a bare `bash -c` says `-c`; message, line and text agree.
        let wrapped_err =
            String::from_utf8_lossy(&wrapped.stderr).replace(": eval: line ", ": -c: line ");
        assert_eq!(
            (stdout(&wrapped), wrapped_err),
            (
                stdout(&bare),
                String::from_utf8_lossy(&bare.stderr).into_owned()
            ),
            "{command:?}"
        );
        // A second time, with the state restored.
        let again = run(command, dir.path());
        assert_eq!(again.status.code(), bare.status.code(), "{command:?}");
        assert_eq!(stdout(&again), stdout(&bare), "{command:?}");
    }
}

#[test]
fn xtrace_shows_one_more_level_of_indirection() {
    // The command runs under `eval`, so `set -x` prints `++` where a bare
    // `bash -c` prints `+`; the trap's save is never traced.
    let dir = tempfile::tempdir().expect("tempdir");
    let bare = bash("set -x; echo traced", dir.path(), &[]);
    let wrapped = run("set -x; echo traced", dir.path());
    assert_eq!(String::from_utf8_lossy(&bare.stderr), "+ echo traced\n");
    assert_eq!(String::from_utf8_lossy(&wrapped.stderr), "++ echo traced\n");
    assert_eq!(stdout(&wrapped), stdout(&bare));
}

#[test]
fn exit_still_saves_and_a_syntax_error_keeps_the_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path();
    std::fs::create_dir(tmp.join("a")).expect("mkdir");
    assert_eq!(run("cd a; export V=1; exit 3", tmp).status.code(), Some(3));
    assert_eq!(
        stdout(&run("pwd; echo $V", tmp)),
        format!("{}/a\n1\n", tmp.display())
    );
    assert_eq!(run("cd /; export V=2; (", tmp).status.code(), Some(2));
    assert_eq!(
        stdout(&run("pwd; echo $V", tmp)),
        format!("{}/a\n1\n", tmp.display())
    );
}

#[test]
fn a_killed_shell_saves_nothing_and_a_torn_slot_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path();
    run("export V=1", tmp);
    assert_eq!(run("export V=2; kill -TERM $$", tmp).status.code(), None);
    assert_eq!(stdout(&run("echo $V", tmp)), "1\n");
    // Cut every slot's last line: neither is complete any more.
    run("export V=3", tmp);
    for entry in std::fs::read_dir(tmp).expect("read tmp") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("slot");
        if let Some(cut) = text.trim_end().rfind('\n') {
            std::fs::write(&path, &text[..cut]).expect("write");
        }
    }
    assert_eq!(stdout(&run("echo ${V-none}", tmp)), "none\n");
}

#[test]
fn background_mode_restores_but_never_saves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path();
    run("export V=1", tmp);
    let cfg = ShellConfig::default();
    let bg = wrap("echo $V; export V=9", "vm-1", &cfg, Mode::RestoreOnly).expect("wraps");
    assert_eq!(stdout(&bash(&bg, tmp, &[])), "1\n");
    assert_eq!(stdout(&run("echo $V", tmp)), "1\n");
}

#[test]
fn instances_do_not_share_state_and_the_path_ignores_a_changed_tmpdir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path();
    let cfg = ShellConfig::default();
    let w = |c: &str, id: &str| wrap(c, id, &cfg, Mode::RestoreAndSave).expect("wraps");
    bash(&w("export V=one TMPDIR=/nonexistent", "vm-a"), tmp, &[]);
    assert_eq!(
        stdout(&bash(&w("echo ${V-none}", "vm-b"), tmp, &[])),
        "none\n"
    );
    assert_eq!(
        stdout(&bash(&w("echo $V $TMPDIR", "vm-a"), tmp, &[])),
        "one /nonexistent\n"
    );
}

#[test]
fn too_long_commands_are_refused_with_the_limit() {
    let cfg = ShellConfig::default();
    let max = max_command_bytes(&cfg);
    assert!(max > 120_000, "{max}");
    // The figure README.md states.
    assert_eq!(max, 126_242);
    let fits = "x".repeat(max);
    let text = wrap(&fits, "vm", &cfg, Mode::RestoreAndSave).expect("fits");
    assert!(text.len() <= MAX_WRAPPED_BYTES);
    let err = wrap(&format!("{fits}x"), "vm", &cfg, Mode::RestoreAndSave).expect_err("too long");
    assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
    assert!(err.to_string().contains(&max.to_string()), "{err}");
}
