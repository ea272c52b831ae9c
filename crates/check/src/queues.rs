//! Placeholder until the queues checker lands.

use crate::{Call, Verdict};

pub fn check(calls: &[Call<'_>]) -> Verdict {
    Verdict::new("queues", calls.len(), Vec::new())
}
