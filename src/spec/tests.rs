use super::*;

/// Runs `script` with bash in `dir`; returns stdout.
fn bash(dir: &std::path::Path, script: &str) -> String {
    let out = std::process::Command::new("/bin/bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_prelude_exports_any_value_verbatim_on_one_line() {
    let spec = TaskSpec::new()
        .env("A", "it's $HOME `x` \\ \"q\"")
        .env("B", "one\ntwo\r\tthree é")
        .workdir("sub dir");
    let prelude = prelude(&spec);
    assert!(!prelude.contains('\n'), "{prelude}");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("sub dir")).expect("mkdir");
    let out = bash(
        dir.path(),
        &format!("{prelude}printf '%s|%s|' \"$A\" \"$B\"; basename \"$PWD\""),
    );
    assert_eq!(out, "it's $HOME `x` \\ \"q\"|one\ntwo\r\tthree é|sub dir\n");
}

#[test]
fn a_missing_workdir_ends_the_command_with_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new("/bin/bash")
        .arg("-c")
        .arg(format!(
            "{}echo ran",
            prelude(&TaskSpec::new().workdir("nope"))
        ))
        .current_dir(dir.path())
        .output()
        .expect("bash");
    assert_eq!(status.status.code(), Some(1));
    assert!(status.stdout.is_empty());
}

#[test]
fn placement_scripts_write_every_byte_and_split_large_files() {
    let binary: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
    let spec = TaskSpec::new()
        .workdir("w/x")
        .file("a/b/c.txt", "text with 'quotes' %d \\n é\n")
        .file("big.bin", binary.clone())
        .file("empty", Vec::new());
    let scripts = prepare_scripts(&spec);
    assert!(scripts.len() > 2, "{} scripts", scripts.len());
    assert!(scripts.iter().all(|s| s.len() < 100 * 1024));
    let dir = tempfile::tempdir().expect("tempdir");
    for script in &scripts {
        bash(dir.path(), script);
    }
    let w = dir.path().join("w/x");
    assert_eq!(
        std::fs::read(w.join("a/b/c.txt")).expect("read"),
        b"text with 'quotes' %d \\n \xc3\xa9\n"
    );
    assert_eq!(std::fs::read(w.join("big.bin")).expect("read"), binary);
    assert_eq!(std::fs::read(w.join("empty")).expect("read"), b"");
    assert!(prepare_scripts(&TaskSpec::new().env("A", "b")).is_empty());
}

#[test]
fn invalid_utf8_content_is_written_as_is() {
    let content = vec![
        0xff, 0xc3, b'x', 0xe2, 0x82, 0, b'\'', b'\\', 0xf0, 0x9f, 0x98, 0x80,
    ];
    let spec = TaskSpec::new().file("f", content.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    for script in prepare_scripts(&spec) {
        bash(dir.path(), &script);
    }
    assert_eq!(std::fs::read(dir.path().join("f")).expect("read"), content);
}

#[test]
fn validation_names_the_field() {
    let err = |s: TaskSpec| s.validate().expect_err("invalid").to_string();
    assert!(err(TaskSpec::new().env("", "x")).contains("variable name"));
    assert!(err(TaskSpec::new().env("PPID", "1")).contains("reserved"));
    assert!(err(TaskSpec::new().file("a/./b", "x")).contains("components"));
    assert!(err(TaskSpec::new().file("dir/", "x")).contains("components"));
    assert!(err(TaskSpec::new().image("")).contains("image"));
    let mut s = TaskSpec::new();
    s.pids = Some(0);
    assert!(err(s).contains("pids"));
    let big = "x".repeat(MAX_ENV_BYTES);
    assert!(err(TaskSpec::new().env("A", big)).contains("limit"));
    assert!(TaskSpec::new()
        .env("PATH", "/x:/usr/bin")
        .workdir("/testbed")
        .file("a/b.txt", "x")
        .validate()
        .is_ok());
}

#[test]
fn cut_middle_keeps_head_and_tail_within_the_limit() {
    let text: String = (0..100)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let cut = cut_middle(&text, 40);
    assert!(cut.starts_with(&text[..10]), "{cut}");
    assert!(cut.ends_with(&text[70..]), "{cut}");
    assert!(cut.contains("60 characters cut"), "{cut}");
    assert_eq!(cut_middle("short", 40), "short");
    assert_eq!(short("ééé", 2), "éé…");
}
