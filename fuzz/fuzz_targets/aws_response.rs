//! Any status and body as a Secrets Manager answer: every parser returns a
//! result, never panics.
#![no_main]

use kes_adapters::https::HttpResponse;
use kes_adapters::store::aws::proto;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&s, body)) = data.split_first() else { return };
    let status = [200, 400, 403, 404, 429, 500, 503][usize::from(s) % 7];
    let r = HttpResponse { status, location: None, body: zeroize::Zeroizing::new(body.to_vec()) };
    let _ = proto::create_result(&r);
    let _ = proto::get_result(&r);
    let _ = proto::delete_result(&r);
    let _ = proto::list_result(&r);
    let _ = proto::transient(&r);
});
