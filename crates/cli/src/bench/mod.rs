//! `turnstile bench`: the load generator; its RESP workloads are in `resp/`, the AMQP one in
//! `bench_amqp.rs`.

mod resp;

pub use resp::*;
