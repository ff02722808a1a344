//! The wall clock as hoard stores it: Unix milliseconds (index records, leases in the fleet
//! tier). Reading the clock is the one thing here that is not pure.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds (0 before 1970, `u64::MAX` past the year 584 million).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
