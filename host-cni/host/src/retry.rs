//! The one thing about retries the core cannot do itself: wait a random time.
//!
//! After a lost commit the component asks the host, through the WIT import
//! `pause-before-retry(attempt, ceiling-us)`, to wait before its next attempt. The retry budget
//! (100 attempts, Whereabouts' own) and the backoff curve (2 ms doubling up to 200 ms) are the
//! core's (`core-wasm/src/allocator.rs`), so every host and store follows the same ones; the
//! host supplies the randomness of full jitter, which the pure core has no source of, so
//! processes that collided spread out instead of colliding again in step.

use std::time::Duration;

/// Sleeps a random time in [0, `ceiling_us`] microseconds.
pub fn jittered_wait(ceiling_us: u32) {
    if ceiling_us > 0 {
        let micros = jitter() % (u64::from(ceiling_us) + 1);
        std::thread::sleep(Duration::from_micros(micros));
    }
}

/// A cheap per-process random number for jitter: no crate, no syscall beyond the clock.
fn jitter() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}
