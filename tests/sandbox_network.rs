//! The sandbox's `outbound` network (`HECATE_SANDBOX_NETWORK=outbound`,
//! slirp4netns): a task reaches the host's network, not the host's
//! loopback, keeps a loopback of its own, and its slirp4netns ends with
//! it. Skips, saying why, where no sandbox can be made, slirp4netns is not
//! installed (`.ci/run` installs it) or the host has no address but
//! loopback.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use hecate::launcher::sandbox::{self, NetworkMode};
use hecate::provider::local::LocalProvider;
use hecate::Instance;

use crate::helper::instances::{run_text as run, start_local as start};
use crate::helper::{eventually, pid_alive, sandbox_config};

/// The host's first IPv4 address that is not loopback.
fn host_address() -> Option<Ipv4Addr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs made.
        let ifa = unsafe { &*cur };
        // SAFETY: ifa_addr is NULL or a sockaddr of the family it says.
        if !ifa.ifa_addr.is_null()
            && i32::from(unsafe { (*ifa.ifa_addr).sa_family }) == libc::AF_INET
        {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            if !ip.is_loopback() && !ip.is_unspecified() {
                found = Some(ip);
                break;
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs made, freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

fn slirp4netns() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("slirp4netns"))
        .find(|p| p.is_file())
}

/// Whether this can run here; prints why not.
fn available() -> Option<Ipv4Addr> {
    if let Err(why) = sandbox::probe() {
        eprintln!("skipping: {why}");
        return None;
    }
    if slirp4netns().is_none() {
        eprintln!("skipping: slirp4netns is not installed (apt-get install slirp4netns)");
        return None;
    }
    let ip = host_address();
    if ip.is_none() {
        eprintln!("skipping: the host has no IPv4 address but loopback");
    }
    ip
}

/// A listener on `ip` that greets the one connection it accepts.
fn greeter(ip: Ipv4Addr) -> u16 {
    let listener = TcpListener::bind((ip, 0)).expect("listen");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let _ = conn.write_all(b"hello from the host\n");
        }
    });
    port
}

/// The pids of the slirp4netns processes whose parent is `parent`.
fn slirps_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            comm.trim() == "slirp4netns" && ppid == Some(parent)
        })
        .collect()
}

#[actix_rt::test]
async fn outbound_reaches_the_host_network_but_not_its_loopback_and_keeps_its_own() {
    let Some(ip) = available() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = sandbox_config(tmp.path().join("root"));
    config.sandbox.network = NetworkMode::Outbound;
    let p = LocalProvider::new_sandbox(&config).expect("provider");
    let inst = start(&p, "out").await;
    assert_eq!(
        inst.sandbox().expect("report").network,
        NetworkMode::Outbound
    );

    // Out to the host's network address, through slirp4netns.
    let port = greeter(ip);
    let (code, text) = run(
        &inst,
        &format!("exec 3<>/dev/tcp/{ip}/{port} && head -n 1 <&3"),
    )
    .await;
    assert_eq!((code, text.as_str()), (0, "hello from the host\n"));

    // Not to the host's loopback, by either name.
    let lo = TcpListener::bind("127.0.0.1:0").expect("listen");
    let lo_port = lo.local_addr().expect("addr").port();
    for host in ["127.0.0.1", "10.0.2.2"] {
        let (_, text) = run(
            &inst,
            &format!(
                "(exec 3<>/dev/tcp/{host}/{lo_port}) 2>/dev/null && echo CONNECTED || echo refused"
            ),
        )
        .await;
        assert_eq!(text, "refused\n", "{host}");
    }

    // Its own loopback works, and the resolver is slirp4netns's.
    let (code, text) = run(
        &inst,
        "python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 &
         for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/8000) 2>/dev/null && break; sleep 0.1; done
         (exec 3<>/dev/tcp/127.0.0.1/8000) && echo own-server; grep nameserver /etc/resolv.conf",
    )
    .await;
    assert_eq!(
        (code, text.as_str()),
        (0, "own-server\nnameserver 10.0.2.3\n")
    );

    // Its slirp4netns (a child of the outer launcher, the process the
    // runtime started) ends with the instance.
    let slirps = slirps_of(inst.launcher_pid());
    assert_eq!(slirps.len(), 1, "{slirps:?}");
    inst.stop().await.expect("stop");
    assert!(eventually(Duration::from_secs(10), || !pid_alive(slirps[0])).await);
    drop(lo);
}

#[test]
fn outbound_without_slirp4netns_is_a_configuration_error_naming_it() {
    if let Err(why) = sandbox::probe() {
        eprintln!("skipping: {why}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = sandbox_config(tmp.path().join("root"));
    config.sandbox.network = NetworkMode::Outbound;
    config.sandbox.slirp4netns = Some(tmp.path().join("no-such-slirp4netns"));
    let err = LocalProvider::new_sandbox(&config).expect_err("no slirp4netns");
    assert_eq!(err.kind(), hecate::ErrorKind::Config);
    assert!(
        err.message().contains("HECATE_SANDBOX_NETWORK=outbound"),
        "{err}"
    );
    assert!(err.message().contains("no-such-slirp4netns"), "{err}");
}
