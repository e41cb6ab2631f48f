//! Loopback HTTP servers for tests: the simulator and small actix-web
//! servers that answer in odd ways, each on 127.0.0.1 port 0.

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use hecate::sim::{SimConfig, SimServer};

/// Serves the routes that `routes` sets up on 127.0.0.1, port 0, with one
/// worker, on the current actix system. Returns the server's MorphCloud
/// base URL (`http://127.0.0.1:PORT/api`) and the handle that stops it.
pub fn spawn_server<F>(routes: F) -> (String, ServerHandle)
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let server = HttpServer::new(move || {
        let routes = routes.clone();
        App::new().configure(move |cfg| routes(cfg))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .expect("bind loopback");
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    (format!("http://{addr}/api"), handle)
}

/// Starts the simulator with `config` (127.0.0.1, port 0 unless the
/// config names one).
pub async fn start_sim(config: SimConfig) -> SimServer {
    SimServer::start(config).await.expect("simulator starts")
}

/// A port on 127.0.0.1 that was free a moment ago, so nothing listens
/// there: a connection to it is refused.
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls the simulator's counters every 10 ms for up to `limit` until
/// `cond` holds; returns the last counters, panicking with `what` if it
/// never held. A poll of a server in another thread, not a synchronisation.
pub async fn wait_for(
    sim: &SimServer,
    what: &str,
    limit: std::time::Duration,
    cond: impl Fn(&hecate::sim::SimStats) -> bool,
) -> hecate::sim::SimStats {
    let until = std::time::Instant::now() + limit;
    loop {
        let stats = sim.stats();
        if cond(&stats) {
            return stats;
        }
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}: {stats:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
