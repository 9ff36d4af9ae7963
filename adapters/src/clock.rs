//! The one place the clocks are read.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kes_core::{Now, UnixTime};

/// Reads both clocks once.
pub fn now() -> Now {
    let unix = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => UnixTime::from_nanos(d.as_nanos() as i128),
        Err(e) => UnixTime::from_nanos(-(e.duration().as_nanos() as i128)),
    };
    Now { instant: Instant::now(), unix }
}
