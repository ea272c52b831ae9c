//! A lock that renews itself, a fencing token on the writes it protects, and stopping work the
//! moment the lock is lost.
//!
//! ```text
//! turnstile server &                      # or TURNSTILE_SERVER=host:port
//! cargo run -p turnstile-client --example lock
//! ```

use std::time::Duration;

use turnstile_client::{Client, Cmd, Error};

#[tokio::main]
async fn main() -> turnstile_client::Result<()> {
    let server = std::env::var("TURNSTILE_SERVER").unwrap_or_else(|_| turnstile_client::DEFAULT_ADDR.into());
    let client = Client::connect(&server).await?;

    // Wait up to 5 s in line; the lease (10 s) is renewed in the background every ~3 s.
    let guard = client
        .lock("report-writer")
        .ttl(Duration::from_secs(10))
        .wait(Duration::from_secs(5))
        .acquire()
        .await?;
    let token = guard.fencing_token();
    println!("holding report-writer with fencing token {token}");

    // Every write the lock protects carries the token: a holder that lost the lock (paused,
    // partitioned) cannot overwrite a newer holder's work.
    let write = Cmd::new("SET").arg("report").arg("v1").arg("FENCE").arg("report-writer").arg(token);
    client.call(write).await?;

    // The work races the lock: if the lease cannot be guaranteed any more, stop at once.
    let work = tokio::time::sleep(Duration::from_secs(12)); // longer than one lease
    tokio::select! {
        () = work => println!("work done, still holding: renewed past the 10 s lease"),
        why = guard.lost() => {
            println!("lost the lock ({why}); stopping");
            return Ok(());
        }
    }
    println!("released: {}", guard.release().await?);

    // A stale token is refused by the server, and nothing changes.
    let stale = Cmd::new("SET").arg("report").arg("v0").arg("FENCE").arg("report-writer").arg(token);
    match client.call(stale).await {
        Err(Error::Fenced(why)) => println!("stale write refused: {why}"),
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
