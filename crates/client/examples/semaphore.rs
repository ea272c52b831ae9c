//! Read/write locks and semaphores: many readers or one writer; at most N holders of a pool.
//!
//! ```text
//! cargo run -p turnstile-client --example semaphore
//! ```

use std::time::Duration;

use turnstile_client::Client;

#[tokio::main]
async fn main() -> turnstile_client::Result<()> {
    let server = std::env::var("TURNSTILE_SERVER").unwrap_or_else(|_| turnstile_client::DEFAULT_ADDR.into());
    let client = Client::connect(&server).await?;

    // Readers share; a writer waits for them (and readers arriving later queue behind it).
    let r1 = client.lock("catalog").shared().acquire().await?;
    let r2 = client.lock("catalog").shared().acquire().await?;
    assert!(client.lock("catalog").try_acquire().await?.is_none());
    println!("two readers: {:?}", client.lock_info("catalog", false).await?.holders);
    drop((r1, r2)); // dropping a guard releases it
    let writer = client.lock("catalog").wait(Duration::from_secs(5)).acquire().await?;
    println!("writer got catalog with token {}", writer.fencing_token());
    writer.release().await?;

    // A pool of 3 connections to a licensed service: take 2, then 1, then none are left.
    let two = client.semaphore("license-pool", 3).permits(2).acquire().await?;
    let one = client.semaphore("license-pool", 3).acquire().await?;
    let none = client.semaphore("license-pool", 3).try_acquire().await?;
    println!("permits taken: 2 + 1; a fourth: {}", if none.is_some() { "granted?!" } else { "refused" });
    two.release().await?;
    one.release().await?;
    Ok(())
}
