//! Pushing: options (delay, priority, dedup, TTL, group), and a pipelined batch.
//!
//! ```text
//! cargo run -p turnstile-client --example producer
//! ```

use std::time::Duration;

use turnstile_client::{Client, Error};

#[tokio::main]
async fn main() -> turnstile_client::Result<()> {
    let server = std::env::var("TURNSTILE_SERVER").unwrap_or_else(|_| turnstile_client::DEFAULT_ADDR.into());
    let client = Client::connect(&server).await?;

    // A bounded queue whose poison messages end up in a dead-letter queue.
    client
        .create_queue("emails")
        .max_deliveries(5)
        .dead_letter("emails.dead")
        .max_len(100_000)
        .create()
        .await?;

    let urgent = client.push("emails", "password reset for ada").priority(9).send().await?;
    let later = client.push("emails", "weekly digest").delay(Duration::from_secs(60)).send().await?;
    // Retried by an at-least-once producer: the dedup id stores it once.
    let first = client.push("emails", "invoice 42").dedup("invoice-42").send().await?;
    let again = client.push("emails", "invoice 42").dedup("invoice-42").send().await?;
    assert_eq!(first, again);
    // One customer's messages are delivered one at a time, in order.
    client
        .push("emails", "order 7 shipped")
        .group("customer-7")
        .ttl(Duration::from_secs(3600))
        .send()
        .await?;
    println!("pushed {urgent} (urgent), {later} (in a minute), {first} (once)");

    // A thousand in one round trip.
    let ids = client.push_batch("emails", (0..1000).map(|i| format!("newsletter {i}"))).await?;
    let stored = ids.iter().filter(|id| id.is_ok()).count();
    let full = ids.iter().filter(|id| matches!(id, Err(Error::Full(_)))).count();
    println!("batch: {stored} stored, {full} refused (queue full)");
    println!("stats: {:?}", client.queue_stats("emails").await?.fields);
    Ok(())
}
