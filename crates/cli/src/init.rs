//! `choreo init`: provision a broker and a registry for choreo — create every
//! topic and register every schema — then exit. The docker compose `init`
//! job runs this, and so can anyone pointing choreo at a real cluster.

use anyhow::Context;

use crate::Connection;

/// `--brokers` and `--registry` are the global flags ([`Connection`]).
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Keep trying this long while the broker or registry is still starting.
    #[arg(long, default_value = "120")]
    pub wait_secs: u64,
}

pub async fn run(conn: &Connection, args: InitArgs) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.wait_secs);
    let topics = retry(deadline, "creating topics", || {
        choreo_stack::create_topics(&conn.brokers)
    })
    .await?;
    println!("topics: {}", topics.join(", "));
    let ids = retry(deadline, "registering schemas", || {
        choreo_stack::register_schemas(&conn.registry)
    })
    .await?;
    for (subject, id) in ids {
        println!("schema {id:>4}  {subject}");
    }
    Ok(())
}

async fn retry<T, F, Fut>(deadline: std::time::Instant, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = choreo_stack::Result<T>>,
{
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("{what}: {e}; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e).context(what.to_owned()),
        }
    }
}
