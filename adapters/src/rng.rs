//! A fast CSPRNG for the request path: the ChaCha20 keystream under a key
//! drawn from the OS, re-keyed from the OS every MiB of output.
//!
//! Every data key and every IV/nonce is drawn here; asking the kernel for
//! each (two `getrandom` calls per request) showed up in profiles. This is
//! the construction `rand_chacha` and the Linux kernel's own CRNG use.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use rand_core::{CryptoRng, OsRng, RngCore};
use zeroize::Zeroize;

const RESEED_BYTES: u64 = 1 << 20;

/// Keystream generated at a time: the AVX2 backend makes four blocks at once.
const POOL: usize = 256;

/// ChaCha20-based CSPRNG, seeded (and periodically reseeded) from `OsRng`.
pub struct FastRng {
    cipher: ChaCha20,
    produced: u64,
    /// Unused keystream; bytes are wiped as they are handed out.
    pool: [u8; POOL],
    used: usize,
}

impl FastRng {
    /// A generator keyed from the operating system.
    pub fn new() -> Self {
        Self { cipher: Self::keyed(), produced: 0, pool: [0; POOL], used: POOL }
    }

    fn refill(&mut self) {
        if self.produced >= RESEED_BYTES {
            self.cipher = Self::keyed();
            self.produced = 0;
        }
        self.pool.fill(0);
        self.cipher.apply_keystream(&mut self.pool);
        self.produced += POOL as u64;
        self.used = 0;
    }

    fn keyed() -> ChaCha20 {
        let mut seed = [0u8; 44];
        OsRng.fill_bytes(&mut seed);
        let cipher = ChaCha20::new(seed[..32].into(), seed[32..].into());
        seed.zeroize();
        cipher
    }
}

impl Default for FastRng {
    fn default() -> Self {
        Self::new()
    }
}

impl RngCore for FastRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let mut filled = 0;
        while filled < dest.len() {
            if self.used == POOL {
                self.refill();
            }
            let n = (dest.len() - filled).min(POOL - self.used);
            let src = &mut self.pool[self.used..self.used + n];
            dest[filled..filled + n].copy_from_slice(src);
            src.zeroize(); // handed-out bytes must not stay behind
            self.used += n;
            filled += n;
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for FastRng {}

impl Drop for FastRng {
    fn drop(&mut self) {
        self.pool.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_differ_and_reseed() {
        let mut r = FastRng::new();
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        r.fill_bytes(&mut a);
        r.fill_bytes(&mut b);
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
        let mut big = vec![0u8; (RESEED_BYTES + 10) as usize];
        r.fill_bytes(&mut big);
        r.fill_bytes(&mut a);
        assert!(r.produced <= POOL as u64, "re-keyed after a MiB");
        assert_ne!(FastRng::new().next_u64(), FastRng::new().next_u64());
    }
}
