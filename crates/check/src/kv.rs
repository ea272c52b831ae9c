//! Placeholder until the kv checker lands.

use crate::{Call, Verdict};

pub fn check(calls: &[Call<'_>]) -> Verdict {
    Verdict::new("kv", calls.len(), Vec::new())
}
