//! An actix orchestrator talking to Hecate by message: an `Agent` actor
//! sends `RunCommand` to the task registry and reacts to the outcome,
//! without going through the `Runtime` handle.
//!
//! `cargo run --example actix_orchestrator`

use std::time::Duration;

use actix::prelude::*;
use hecate::runtime::{RunCommand, ShutdownRuntime, TaskRegistry};
use hecate::{Config, ExecRequest, Runtime};

/// A toy agent: runs a short plan of commands in its own task.
struct Agent {
    task_id: String,
    registry: Addr<TaskRegistry>,
    plan: Vec<&'static str>,
}

impl Actor for Agent {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Step;

impl Handler<Step> for Agent {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Step, _: &mut Context<Self>) -> Self::Result {
        let Some(command) = (!self.plan.is_empty()).then(|| self.plan.remove(0)) else {
            // Done: stop every instance (an awaited message), then the system.
            let shutdown = self.registry.send(ShutdownRuntime {
                grace: Duration::from_secs(5),
            });
            return Box::pin(shutdown.into_actor(self).map(|report, _, _| {
                if let Ok(report) = report {
                    println!("stopped {} instance(s)", report.stopped.len());
                }
                System::current().stop();
            }));
        };
        let ask = self.registry.send(RunCommand {
            task_id: self.task_id.clone(),
            request: ExecRequest::new(command),
        });
        Box::pin(ask.into_actor(self).map(move |answer, act, ctx| {
            match answer {
                Ok(Ok(out)) => println!(
                    "[{}] $ {command}\n{}(exit {})",
                    act.task_id,
                    out.stdout.to_text(),
                    out.exit_code
                ),
                Ok(Err(err)) => println!("[{}] infrastructure error: {err}", act.task_id),
                Err(_) => println!("[{}] the runtime is gone", act.task_id),
            }
            ctx.notify(Step);
        }))
    }
}

fn main() -> std::io::Result<()> {
    // First, before any thread: this binary also serves as the local
    // backend's per-instance launcher (`<exe> __launcher ...`).
    hecate::launcher::run_if_requested();
    let system = System::new();
    system.block_on(async {
        let rt = Runtime::start(Config::from_env().expect("configuration")).expect("runtime");
        let registry = rt.registry();
        let agent = Agent {
            task_id: "agent-1".into(),
            registry: registry.clone(),
            plan: vec![
                "mkdir -p src && echo 'fn main() {}' > src/main.rs",
                "ls -R",
                "cat src/main.rs",
            ],
        }
        .start();
        agent.do_send(Step);
        // Stop every instance when the process is asked to end.
        actix_rt::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            let _ = registry
                .send(ShutdownRuntime {
                    grace: Duration::from_secs(5),
                })
                .await;
            System::current().stop();
        });
    });
    system.run()
}
