//! Consuming: a stream of deliveries, four at a time, leases extended while a slow handler
//! runs; ack on success, nack with backoff on failure, dead-letter what can never succeed.
//!
//! ```text
//! cargo run -p turnstile-client --example producer   # something to consume
//! cargo run -p turnstile-client --example consumer
//! ```

use std::time::Duration;

use turnstile_client::Client;

#[tokio::main]
async fn main() -> turnstile_client::Result<()> {
    let server = std::env::var("TURNSTILE_SERVER").unwrap_or_else(|_| turnstile_client::DEFAULT_ADDR.into());
    let client = Client::connect(&server).await?;
    let mut consumer = client
        .consume("emails")
        .concurrency(4)
        .lease(Duration::from_secs(10))
        .auto_extend(true)
        .start()
        .await?;
    let mut handled = 0;
    // Stop after a quiet second (a real worker would run until told to stop).
    while let Ok(Some(delivery)) = tokio::time::timeout(Duration::from_secs(1), consumer.next()).await {
        let delivery = delivery?;
        let text = String::from_utf8_lossy(&delivery.payload).into_owned();
        if text.contains("poison") {
            delivery.dead().await?; // straight to emails.dead, with the reason
        } else if send_email(&text).await {
            delivery.ack().await?;
        } else {
            // Delivered again later; after max deliveries it is dead-lettered.
            let backoff = Duration::from_millis(100) * 2u32.pow(delivery.deliveries.min(10));
            delivery.nack(backoff).await?;
        }
        handled += 1;
    }
    // Deliveries handed out stay valid until finished; then the consumer's session closes.
    consumer.finish().await;
    println!("handled {handled} deliveries");
    Ok(())
}

async fn send_email(_text: &str) -> bool {
    tokio::time::sleep(Duration::from_millis(1)).await;
    true
}
