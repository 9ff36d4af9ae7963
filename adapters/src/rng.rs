//! The CSPRNG for the request path: ChaCha20 keyed from the operating
//! system and re-keyed from it every 64 KiB of output, which is rand's own
//! `ThreadRng` construction (`ReseedingRng<ChaCha20Core, OsRng>`), kept here
//! as a value the driver owns instead of a thread-local.
//!
//! Every data key and every IV/nonce is drawn here; asking the kernel for
//! each (two `getrandom` calls per request) showed up in profiles, one
//! `getrandom` per ~1000 requests does not.

use rand::rngs::adapter::ReseedingRng;
use rand_chacha::ChaCha20Core;
use rand_core::{CryptoRng, OsRng, RngCore, SeedableRng};

/// Output between re-keys from the OS, as rand's `ThreadRng`.
const RESEED_BYTES: u64 = 64 * 1024;

/// ChaCha20-based CSPRNG, seeded (and periodically reseeded) from `OsRng`.
pub struct FastRng(ReseedingRng<ChaCha20Core, OsRng>);

impl FastRng {
    /// A generator keyed from the operating system. Panics only if the OS
    /// has no randomness to give, when nothing could be served safely.
    pub fn new() -> Self {
        let core = ChaCha20Core::from_rng(OsRng).expect("the OS random source failed");
        Self(ReseedingRng::new(core, RESEED_BYTES, OsRng))
    }
}

impl Default for FastRng {
    fn default() -> Self {
        Self::new()
    }
}

impl RngCore for FastRng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.try_fill_bytes(dest)
    }
}

impl CryptoRng for FastRng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_differ_across_reseeds_and_generators() {
        let mut r = FastRng::new();
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        r.fill_bytes(&mut a);
        r.fill_bytes(&mut b);
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
        // Past several re-keys, output keeps changing.
        let mut big = vec![0u8; 4 * RESEED_BYTES as usize];
        r.fill_bytes(&mut big);
        assert!(big.chunks(32).take(1000).collect::<std::collections::HashSet<_>>().len() == 1000);
        assert_ne!(FastRng::new().next_u64(), FastRng::new().next_u64());
    }
}
