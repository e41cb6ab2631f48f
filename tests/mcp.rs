//! `hecate mcp` driven over its stdin and stdout with JSON-RPC lines, the
//! way an MCP client launches it: initialize, list the tools, call
//! `terminal` (a good call, bad arguments, a line that is not JSON, an
//! unknown tool), and on stdin's end every instance is stopped and the
//! process exits 0. Nothing but protocol messages reaches stdout.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

fn send(stdin: &mut impl Write, msg: &Value) {
    writeln!(stdin, "{msg}").expect("write to hecate mcp");
    stdin.flush().expect("flush");
}

/// Reads lines until the answer with `id`; every line must be JSON-RPC.
fn answer(lines: &mut impl Iterator<Item = std::io::Result<String>>, id: u64) -> Value {
    for line in lines.by_ref() {
        let line = line.expect("read stdout");
        let msg: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
        assert_eq!(msg["jsonrpc"], "2.0", "{line}");
        if msg["id"] == json!(id) {
            return msg;
        }
    }
    panic!("stdout ended before the answer to {id}");
}

fn call(id: u64, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "terminal", "arguments": arguments}})
}

/// The tool result JSON inside a `tools/call` answer, and its `isError`.
fn tool_result(msg: &Value) -> (Value, bool) {
    let result = &msg["result"];
    let text = result["content"][0]["text"].as_str().expect("text content");
    (
        serde_json::from_str(text).expect("tool result JSON"),
        result["isError"].as_bool().expect("isError"),
    )
}

#[test]
fn mcp_over_a_pipe_runs_the_tool_and_stops_its_instance_at_eof() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hecate"))
        .arg("mcp")
        .env("HECATE_BACKEND", "local")
        .env("HECATE_LOCAL_ROOT", &root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hecate mcp");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();

    send(
        &mut stdin,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "pipe-test", "version": "0"}}}),
    );
    let init = answer(&mut lines, 1);
    assert_eq!(init["result"]["serverInfo"]["name"], "hecate", "{init}");
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );
    send(
        &mut stdin,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );

    send(
        &mut stdin,
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    );
    let list = answer(&mut lines, 2);
    let tools = list["result"]["tools"].as_array().expect("tools");
    let names: Vec<_> = tools.iter().map(|t| t["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            Some("terminal"),
            Some("job_output"),
            Some("job_kill"),
            Some("job_list")
        ],
        "{list}"
    );
    let props = &tools[0]["inputSchema"]["properties"];
    assert!(props["command"].is_object(), "{list}");
    assert!(props.get("task_id").is_none(), "pinned by default: {list}");

    send(
        &mut stdin,
        &call(
            3,
            json!({"command": "cd /tmp && export MCP_T=kept; echo hi"}),
        ),
    );
    let (result, is_error) = tool_result(&answer(&mut lines, 3));
    assert!(!is_error);
    assert_eq!(result["output"], "hi");
    assert_eq!(result["exit_code"], 0);

    // The persistent shell: the next call starts where this one ended.
    send(
        &mut stdin,
        &call(4, json!({"command": "pwd; echo $MCP_T; exit 3"})),
    );
    let (result, is_error) = tool_result(&answer(&mut lines, 4));
    assert!(!is_error, "a non-zero exit is not an error");
    assert_eq!(result["exit_code"], 3);
    assert_eq!(result["output"], "/tmp\nkept");

    send(&mut stdin, &call(5, json!({"command": "ls", "bogus": 1})));
    let (result, is_error) = tool_result(&answer(&mut lines, 5));
    assert!(is_error, "{result}");
    assert_eq!(result["error_kind"], "invalid_input");

    send(
        &mut stdin,
        &call(6, json!({"command": "ls", "task_id": "other"})),
    );
    let (result, is_error) = tool_result(&answer(&mut lines, 6));
    assert!(is_error, "another task is refused: {result}");

    writeln!(stdin, "this is not JSON").expect("write");
    send(
        &mut stdin,
        &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": "rm_everything", "arguments": {}}}),
    );
    let unknown = answer(&mut lines, 7);
    assert!(unknown["error"]["code"].is_i64(), "{unknown}");

    send(&mut stdin, &call(8, json!({"command": "echo still here"})));
    let (result, _) = tool_result(&answer(&mut lines, 8));
    assert_eq!(result["output"], "still here");

    drop(stdin);
    let rest: Vec<String> = lines.map(|l| l.expect("read")).collect();
    for line in &rest {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(&root)
        .map(|dir| dir.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "instances left after EOF: {left:?}");
}
