//! Any bytes as a chunked request body, fed in two pieces: decoded or
//! refused, never a panic, never more than the limit, never past the input.
#![no_main]

use kes_adapters::chunked::ChunkedDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let split = usize::from(split).min(data.len());
    let limit = 4096;
    let mut d = ChunkedDecoder::new();
    let mut out = Vec::new();
    let mut buf = data[..split].to_vec();
    let Ok(n) = d.decode(&buf, &mut out, limit) else { return };
    assert!(n <= buf.len());
    buf.drain(..n);
    buf.extend_from_slice(&data[split..]);
    if let Ok(n) = d.decode(&buf, &mut out, limit) {
        assert!(n <= buf.len());
        if d.over_limit() {
            // A refused body is skipped to its end without keeping it.
            if let Ok(m) = d.skip(&buf[n..]) {
                assert!(m <= buf.len() - n);
            }
        }
    }
    assert!(out.len() <= limit);
});
